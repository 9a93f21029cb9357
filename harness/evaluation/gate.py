"""Paired comparison of two checkpoints on the same items (`bench compare`) and the regression
gate built on it (`bench gate`), plus baseline files a repository can commit
(`bench export-baseline`).

Either side of a comparison is one checkpoint's per-item results: a scored run folder (final
checkpoint unless a step is chosen) or a baseline file. Both sides must have been evaluated on
the same items (same suite and evaluation-set hash), so every item is paired.

The gate's rule, per family, with D the allowed drop in points (`--max-drop`, default
DEFAULT_MAX_DROP), Δ the observed change of candidate − baseline accuracy and [lo, hi] its 95%
interval (`change.paired_change`, which uses the pairing of items):

* **regression** when the drop is significant and beyond the allowed one, hi < 0 and Δ < −D
  (the interval excludes "no change", and the best estimate of the drop exceeds D); and
  whenever hi < −D (even the most favourable end of the interval is too large a drop);
* **no detectable change** when lo ≥ −D: the interval rules out any drop larger than allowed
  (improvements land here too: the gate only looks for regressions);
* **inconclusive** otherwise: either no drop can be told from noise (the interval reaches 0)
  while one larger than D is not ruled out, or the drop is real but its estimate is within D
  while the interval reaches beyond −D. More items (or a larger D) are needed.

Why not only hi < −D: it asks for proof, at 95%, that the drop *exceeds D*, which with a few
hundred items only very large drops give. An 8-point drop on 200 items against D = 5 (McNemar
p = 0.0015) would be "inconclusive" and pass, although the data say clearly that the candidate is
worse, most likely by more than allowed. A gate exists to stop such changes, so a drop that is
real (significant) and whose best estimate exceeds D fails. The price is known
and bounded: a candidate that changed nothing fails with probability below 2.5% (the interval's
one-sided error, and only when the noise also pushes the estimate beyond −D); one whose true
drop is exactly D fails up to about half the time, since D is the largest drop the *measured*
change may show, not a drop the data must disprove. `--strict` also fails on inconclusive.

`bench gate` exits 1 when any family regressed (or, with --strict, is inconclusive), else 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.evaluation.change import CONFIDENCE, paired_change
from plasticity_bench.harness.evaluation.roles import HELD_OUT, HELD_OUT_SUFFIX, held_out_label, held_out_part
from plasticity_bench.harness.evaluation.runs import (
    BASELINE_FORMAT,
    BASELINE_VERSION,
    ItemResults,
    check_same_items,
    cpu_text,
    different_starts,
    families_in_order,
    run_results,
    same_start,
)
from plasticity_bench.harness.evaluation.stats import mcnemar_exact_p, mcnemar_midp, paired_bootstrap
from plasticity_bench.harness.store import RunStore, write_atomic

# the slice name of a whole family, as in harness/evaluation/scoring.py (not imported: it pulls in every scorer)
ALL = "all"
DEFAULT_MAX_DROP = 5.0  # points; small enough to matter, large enough to certify with a few hundred items

REGRESSION = "regression"
NO_CHANGE = "no detectable change"
INCONCLUSIVE = "inconclusive"
GATE_RULE = (
    f"per family, with change the candidate - baseline accuracy, [lo, hi] its {CONFIDENCE:.0%} paired interval "
    f"(Agresti-Min) and D the allowed drop: {REGRESSION} if the drop is significant and beyond D "
    f"(hi < 0 and change < -D) or if hi < -D; {NO_CHANGE} if lo >= -D; {INCONCLUSIVE} otherwise"
)


# ---------------------------------------------------------------- comparison


@dataclass(frozen=True)
class FamilyComparison:
    """B − A on one family's items; accuracies and changes in points."""

    family: str
    n: int
    accuracy_a: float
    accuracy_b: float
    change: float
    change_low: float
    change_high: float
    lost: int  # right in A, wrong in B
    gained: int  # wrong in A, right in B
    mcnemar_exact_p: float
    mcnemar_midp: float
    graded_a: float  # mean graded score (partial credit), points
    graded_b: float
    graded_change: float
    graded_low: float
    graded_high: float
    graded_bootstrap_p: float
    slice: str = ALL  # ALL: the whole family; else one evaluation set of it (compare_slices)


def compare(a: ItemResults, b: ItemResults) -> list[FamilyComparison]:
    """Per family: the paired change in accuracy (McNemar + Agresti–Min interval) and in graded
    score (paired bootstrap)."""
    check_same_items(a, b)
    rows = []
    roles = a.roles or b.roles  # a baseline exported before roles were recorded: the run's
    for family in families_in_order(a.items.family.unique(), a.families):
        mask = (a.items.family == family).to_numpy()
        rows.append(_paired(family, ALL, a.items[mask], b.items[mask]))
        held_out = held_out_part(a.items, family, roles)
        if held_out is not None:  # the whole mixes the target's gain with its held-out sets' forgetting: a unit too
            rows.append(_paired(held_out_label(family), ALL, a.items[held_out], b.items[held_out]))
    return rows


def compare_slices(a: ItemResults, b: ItemResults) -> list[FamilyComparison]:
    """The same paired comparison for every slice (evaluation set) of every family, family by family
    in compare()'s order, slices by name: where a family's change comes from."""
    check_same_items(a, b)
    rows = []
    for family in families_in_order(a.items.family.unique(), a.families):
        in_family = a.items.family == family
        for slice_ in sorted(a.items.slice[in_family].unique()):
            mask = (in_family & (a.items.slice == slice_)).to_numpy()
            rows.append(_paired(family, str(slice_), a.items[mask], b.items[mask]))
    return rows


def _paired(family: str, slice_: str, first: pd.DataFrame, second: pd.DataFrame) -> FamilyComparison:
    """B − A on paired items (rows in the same order on both sides)."""
    change = paired_change(first.correct.to_numpy(), second.correct.to_numpy(), CONFIDENCE)
    graded = paired_bootstrap(first.score.to_numpy(), second.score.to_numpy(), CONFIDENCE)
    return FamilyComparison(
        family=family,
        n=change.n,
        accuracy_a=100 * float(first.correct.mean()),
        accuracy_b=100 * float(second.correct.mean()),
        change=change.change,
        change_low=change.low,
        change_high=change.high,
        lost=change.lost,
        gained=change.gained,
        mcnemar_exact_p=mcnemar_exact_p(change.lost, change.gained),
        mcnemar_midp=mcnemar_midp(change.lost, change.gained),
        graded_a=100 * float(np.mean(first.score)),
        graded_b=100 * float(np.mean(second.score)),
        graded_change=100 * graded.difference,
        graded_low=100 * graded.low,
        graded_high=100 * graded.high,
        graded_bootstrap_p=graded.p_value,
        slice=slice_,
    )


def slices_of(
    family: str, slices: Sequence[FamilyComparison], roles: Mapping[str, str] | None = None
) -> list[FamilyComparison]:
    """A family's slice rows; for a family's held-out unit (`FAMILY (held-out)`), its held-out slices."""
    base = family.removesuffix(HELD_OUT_SUFFIX)
    rows = [row for row in slices if row.family == base]
    return rows if base == family else [row for row in rows if (roles or {}).get(row.slice) == HELD_OUT]


def _name_width(names: Sequence[str]) -> int:
    """The first column's width: 10, or the longest family or `  · slice` name."""
    return max([10, *(len(name) for name in names)])


def split_families(slices: Sequence[FamilyComparison]) -> set[str]:
    """Families with more than one slice: the text output breaks only these down (one slice is the whole)."""
    counts: dict[str, int] = {}
    for row in slices:
        counts[row.family] = counts.get(row.family, 0) + 1
    return {family for family, count in counts.items() if count > 1}


def compare_json(a: ItemResults, b: ItemResults, rows: Sequence[FamilyComparison]) -> dict[str, Any]:
    """Each family's comparison with its slices' (`slices`: one entry per evaluation set, always)."""
    slices = compare_slices(a, b)
    roles = a.roles or b.roles
    families = [{**asdict(r), "slices": [asdict(s) for s in slices_of(r.family, slices, roles)]} for r in rows]
    return {
        "a": a.describe(),
        "b": b.describe(),
        "same_start": same_start(a, b),
        "confidence": CONFIDENCE,
        "families": families,
    }


def compare_summary(a: ItemResults, b: ItemResults, rows: Sequence[FamilyComparison]) -> str:
    slices = compare_slices(a, b)
    split = split_families(slices)
    shown = [[r, *(slices_of(r.family, slices) if r.family in split else [])] for r in rows]
    width = _name_width([row.family if row.slice == ALL else f"  · {row.slice}" for group in shown for row in group])
    lines = [
        f"A: {a.source} ({a.method or 'baseline'}, step {a.step})   "
        f"B: {b.source} ({b.method or 'baseline'}, step {b.step})",
        f"{'family':<{width}} {'n':>5} {'A':>6} {'B':>6}  {'B - A [95% CI]':<22} {'lost':>5} {'gained':>6} "
        f"{'McNemar p':>10} {'mid-p':>7}  "
        f"{'graded B - A [95% CI]':<22} {'boot p':>7}",
    ]
    for group in shown:
        for row in group:
            name = row.family if row.slice == ALL else f"  · {row.slice}"
            lines.append(
                f"{name:<{width}} {row.n:>5} {row.accuracy_a:6.1f} {row.accuracy_b:6.1f}  "
                f"{_interval(row.change, row.change_low, row.change_high):<22} "
                f"{row.lost:>5} {row.gained:>6} {row.mcnemar_exact_p:>10.3g} {row.mcnemar_midp:>7.3g}  "
                f"{_interval(row.graded_change, row.graded_low, row.graded_high):<22} {row.graded_bootstrap_p:>7.3g}"
            )
    lines.append(
        "accuracy in points; lost = right in A and wrong in B; McNemar exact and mid-p tests on the lost/gained items; "
        "graded = mean partial-credit score, paired bootstrap; · rows: the family's slices (evaluation sets)"
    )
    return "\n".join(lines + _start_note(a, b))


def _start_note(a: ItemResults, b: ItemResults) -> list[str]:
    note = different_starts(a, b)
    return [note] if note else []


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:+.1f} [{low:+.1f}, {high:+.1f}]"


# ---------------------------------------------------------------- the gate


@dataclass(frozen=True)
class FamilyVerdict:
    comparison: FamilyComparison
    max_drop: float
    verdict: str


@dataclass(frozen=True)
class GateResult:
    baseline: ItemResults
    candidate: ItemResults
    families: list[FamilyVerdict]
    strict: bool
    slices: tuple[FamilyComparison, ...] = ()  # every family's slices: shown, not gated (the verdict is per family)

    @property
    def verdict(self) -> str:
        """regression if any family regressed, else inconclusive if any is, else pass."""
        found = {f.verdict for f in self.families}
        return REGRESSION if REGRESSION in found else INCONCLUSIVE if INCONCLUSIVE in found else "pass"

    @property
    def exit_status(self) -> int:
        return 1 if self.verdict == REGRESSION or (self.strict and self.verdict == INCONCLUSIVE) else 0


def classify(change: float, change_low: float, change_high: float, max_drop: float) -> str:
    """The gate's three-way rule (see the module docstring); all values in points."""
    if change_high < -max_drop or (change_high < 0 and change < -max_drop):
        return REGRESSION
    if change_low >= -max_drop:
        return NO_CHANGE
    return INCONCLUSIVE


def parse_max_drops(specs: Sequence[str], families: Sequence[str]) -> dict[str, float]:
    """`POINTS` sets every family's allowed drop, `FAMILY=POINTS` one family's (it wins)."""
    default, per_family = DEFAULT_MAX_DROP, {}
    for spec in specs:
        name, _, value = spec.rpartition("=")
        try:
            points = float(value)
        except ValueError:
            raise BenchError(f"--max-drop {spec!r} is not POINTS or FAMILY=POINTS (e.g. --max-drop math=2)") from None
        if not points >= 0:  # also rejects nan
            raise BenchError(f"--max-drop {spec!r}: the allowed drop must be a number of points >= 0")
        if not name:
            default = points
        elif name not in families:
            raise BenchError(
                f"--max-drop {spec!r}: no family {name!r} in these results; families: {', '.join(families)}"
            )
        else:
            per_family[name] = points
    return {family: per_family.get(family, default) for family in families}


def gate(
    baseline: ItemResults, candidate: ItemResults, max_drop_specs: Sequence[str] = (), strict: bool = False
) -> GateResult:
    check_same_items(baseline, candidate)
    rows = compare(baseline, candidate)
    max_drops = parse_max_drops(max_drop_specs, [row.family for row in rows])
    named = {spec.rpartition("=")[0] for spec in max_drop_specs}
    for row in rows:  # a family's held-out unit allows the family's drop unless it is named itself
        family = row.family.removesuffix(HELD_OUT_SUFFIX)
        if family != row.family and row.family not in named:
            max_drops[row.family] = max_drops[family]
    verdicts = [
        FamilyVerdict(
            row, max_drops[row.family], classify(row.change, row.change_low, row.change_high, max_drops[row.family])
        )
        for row in rows
    ]
    return GateResult(baseline, candidate, verdicts, strict, tuple(compare_slices(baseline, candidate)))


def gate_json(result: GateResult) -> dict[str, Any]:
    return {
        "verdict": result.verdict,
        "exit_status": result.exit_status,
        "strict": result.strict,
        "rule": GATE_RULE,
        "confidence": CONFIDENCE,
        "baseline": result.baseline.describe(),
        "candidate": result.candidate.describe(),
        "same_start": same_start(result.baseline, result.candidate),
        "families": [
            {
                "family": f.comparison.family,
                "verdict": f.verdict,
                "max_drop": f.max_drop,
                "n": f.comparison.n,
                "baseline": f.comparison.accuracy_a,
                "candidate": f.comparison.accuracy_b,
                "change": f.comparison.change,
                "interval": [f.comparison.change_low, f.comparison.change_high],
                "lost": f.comparison.lost,
                "gained": f.comparison.gained,
                "mcnemar_exact_p": f.comparison.mcnemar_exact_p,
                "mcnemar_midp": f.comparison.mcnemar_midp,
                "slices": [
                    _slice_json(s)
                    for s in slices_of(
                        f.comparison.family, result.slices, result.baseline.roles or result.candidate.roles
                    )
                ],
            }
            for f in result.families
        ],
    }


def _slice_json(row: FamilyComparison) -> dict[str, Any]:
    """One slice's paired change in the gate's JSON: shown beside its family's verdict, not gated."""
    return {
        "slice": row.slice,
        "n": row.n,
        "baseline": row.accuracy_a,
        "candidate": row.accuracy_b,
        "change": row.change,
        "interval": [row.change_low, row.change_high],
        "lost": row.lost,
        "gained": row.gained,
        "mcnemar_exact_p": row.mcnemar_exact_p,
        "mcnemar_midp": row.mcnemar_midp,
    }


def gate_summary(result: GateResult) -> str:
    b, c = result.baseline, result.candidate
    split = split_families(result.slices)
    width = _name_width(
        [f.comparison.family for f in result.families] + [f"  · {s.slice}" for s in result.slices if s.family in split]
    )
    lines = [
        f"gate: candidate {c.source} (step {c.step}) vs baseline {b.source} (step {b.step}), suite {b.suite}",
        f"{'family':<{width}} {'n':>5} {'baseline':>8} {'candidate':>9}  {'change [95% CI]':<22} "
        f"{'max drop':>8}  verdict",
    ]
    for f in result.families:
        r = f.comparison
        lines.append(
            f"{r.family:<{width}} {r.n:>5} {r.accuracy_a:8.1f} {r.accuracy_b:9.1f}  "
            f"{_interval(r.change, r.change_low, r.change_high):<22} "
            f"{f.max_drop:8.1f}  {f.verdict.upper() if f.verdict == REGRESSION else f.verdict}"
        )
        for s in slices_of(r.family, result.slices) if r.family in split else []:
            lines.append(
                f"{'  · ' + s.slice:<{width}} {s.n:>5} {s.accuracy_a:8.1f} {s.accuracy_b:9.1f}  "
                f"{_interval(s.change, s.change_low, s.change_high):<22} {'':>8}  (slice: shown, not gated)"
            )
    if result.verdict == REGRESSION:
        outcome = f"FAIL: regression in {_families_with(result, REGRESSION)}"
    elif result.verdict == INCONCLUSIVE:
        outcome = (
            f"{'FAIL (--strict)' if result.strict else 'pass'}: "
            f"inconclusive for {_families_with(result, INCONCLUSIVE)} "
            "(too few items to rule out a drop beyond the allowed one)"
        )
    else:
        outcome = "pass: no family dropped by more than its allowed drop"
    slice_note = (
        ["· rows: each family's slices (evaluation sets), paired the same way; the verdict is per family"]
        if split
        else []
    )
    return "\n".join(
        lines + [f"{outcome} (exit {result.exit_status})", f"rule: {GATE_RULE}"] + slice_note + _start_note(b, c)
    )


def _families_with(result: GateResult, verdict: str) -> str:
    return ", ".join(f.comparison.family for f in result.families if f.verdict == verdict)


# ---------------------------------------------------------------- baseline files


def export_baseline(run_dir: Path, out: Path, step: int | None = None) -> Path:
    """Write one checkpoint's per-item results with the suite and eval-set hashes, one item per
    line so that a committed baseline diffs readably."""
    results = run_results(run_dir, step)
    meta = RunStore(run_dir).metadata()
    header = {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "suite": results.suite,
        "eval_set_sha256": results.eval_set_sha256,
        "eval_sets": meta["eval_sets"],
        "step": results.step,
        "method": results.method,
        "seed": meta.get("seed"),
        "fingerprint": meta.get("fingerprint"),
        "git_commit": meta.get("provenance", {}).get("git", {}).get("commit"),
        "families": list(results.families),
        "roles": results.roles,
        "base_model_sha256": results.start_weights,
        "cpu": cpu_text(meta),
    }
    rows = [
        {
            "item_id": r.item_id,
            "family": r.family,
            "slice": r.slice,
            "correct": bool(r.correct),
            "score": float(r.score),
        }
        for r in results.items.itertuples()
    ]
    head = json.dumps(header, indent=2)[: -len("\n}")]  # reopened to append the items, one per line
    items = ",\n".join("    " + json.dumps(row) for row in rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda tmp: tmp.write_text(f'{head},\n  "items": [\n{items}\n  ]\n}}\n'))
    return out
