"""Paired comparison of two checkpoints on the same items (`bench compare`) and the regression
gate built on it (`bench gate`), plus baseline files a repository can commit
(`bench export-baseline`).

Either side of a comparison is one checkpoint's per-item results: a scored run folder (final
checkpoint unless a step is chosen) or a baseline file. Both sides must have been evaluated on
the same items (same suite and evaluation-set hash), so every item is paired.

The gate's rule, per family, with D the allowed drop in points (`--max-drop`, default
DEFAULT_MAX_DROP), Δ the observed change of candidate − baseline accuracy and [lo, hi] its 95%
interval (`stats.paired_difference_interval`, which uses the pairing of items):

* **regression** when the drop is significant and beyond the allowed one, hi < 0 and Δ < −D
  (the interval excludes "no change", and the best estimate of the drop exceeds D); and, as
  before, whenever hi < −D (even the most favourable end of the interval is too large a drop);
* **no detectable change** when lo ≥ −D: the interval rules out any drop larger than allowed
  (improvements land here too: the gate only looks for regressions);
* **inconclusive** otherwise: either no drop can be told from noise (the interval reaches 0)
  while one larger than D is not ruled out, or the drop is real but its estimate is within D
  while the interval reaches beyond −D. More items (or a larger D) are needed.

Why not only hi < −D (the rule before): it asks for proof, at 95%, that the drop *exceeds D*,
which with a few hundred items only very large drops give. An 8-point drop on 200 items against
D = 5 (McNemar p = 0.0015) was "inconclusive" and passed, although the data say clearly that the
candidate is worse, most likely by more than allowed. A gate exists to stop such changes, so a
drop that is real (significant) and whose best estimate exceeds D now fails. The price is known
and bounded: a candidate that changed nothing fails with probability below 2.5% (the interval's
one-sided error, and only when the noise also pushes the estimate beyond −D); one whose true
drop is exactly D fails up to about half the time, since D is the largest drop the *measured*
change may show, not a drop the data must disprove. `--strict` also fails on inconclusive.

`bench gate` exits 1 when any family regressed (or, with --strict, is inconclusive), else 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import BenchError
from harness.evaluation.runs import (
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
from harness.evaluation.stats import PairedCounts, mcnemar_exact_p, mcnemar_midp, paired_bootstrap, paired_difference_interval
from harness.store import RunStore, write_atomic

DEFAULT_MAX_DROP = 5.0  # points; small enough to matter, large enough to certify with a few hundred items
CONFIDENCE = 0.95

REGRESSION = "regression"
NO_CHANGE = "no detectable change"
INCONCLUSIVE = "inconclusive"
GATE_RULE = (f"per family, with change the candidate - baseline accuracy, [lo, hi] its {CONFIDENCE:.0%} paired interval "
             f"(Agresti-Min) and D the allowed drop: {REGRESSION} if the drop is significant and beyond D "
             f"(hi < 0 and change < -D) or if hi < -D; {NO_CHANGE} if lo >= -D; {INCONCLUSIVE} otherwise")


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


def compare(a: ItemResults, b: ItemResults) -> list[FamilyComparison]:
    """Per family: the paired change in accuracy (McNemar + Agresti–Min interval) and in graded
    score (paired bootstrap)."""
    check_same_items(a, b)
    rows = []
    for family in families_in_order(a.items.family.unique(), a.families):
        mask = (a.items.family == family).to_numpy()
        first, second = a.items[mask], b.items[mask]
        counts = PairedCounts.from_outcomes(first.correct.to_numpy(), second.correct.to_numpy())
        low, high = paired_difference_interval(counts, CONFIDENCE)
        graded = paired_bootstrap(first.score.to_numpy(), second.score.to_numpy(), CONFIDENCE)
        rows.append(FamilyComparison(
            family=family, n=counts.n,
            accuracy_a=100 * float(first.correct.mean()), accuracy_b=100 * float(second.correct.mean()),
            change=100 * counts.difference, change_low=100 * low, change_high=100 * high,
            lost=counts.lost, gained=counts.gained,
            mcnemar_exact_p=mcnemar_exact_p(counts.lost, counts.gained), mcnemar_midp=mcnemar_midp(counts.lost, counts.gained),
            graded_a=100 * float(np.mean(first.score)), graded_b=100 * float(np.mean(second.score)),
            graded_change=100 * graded.difference, graded_low=100 * graded.low, graded_high=100 * graded.high,
            graded_bootstrap_p=graded.p_value,
        ))
    return rows


def compare_json(a: ItemResults, b: ItemResults, rows: Sequence[FamilyComparison]) -> dict[str, Any]:
    return {"a": a.describe(), "b": b.describe(), "same_start": same_start(a, b), "confidence": CONFIDENCE, "families": [asdict(r) for r in rows]}


def compare_summary(a: ItemResults, b: ItemResults, rows: Sequence[FamilyComparison]) -> str:
    lines = [
        f"A: {a.source} ({a.method or 'baseline'}, step {a.step})   B: {b.source} ({b.method or 'baseline'}, step {b.step})",
        f"{'family':<10} {'n':>5} {'A':>6} {'B':>6}  {'B - A [95% CI]':<22} {'lost':>5} {'gained':>6} {'McNemar p':>10} {'mid-p':>7}  "
        f"{'graded B - A [95% CI]':<22} {'boot p':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r.family:<10} {r.n:>5} {r.accuracy_a:6.1f} {r.accuracy_b:6.1f}  {_interval(r.change, r.change_low, r.change_high):<22} "
            f"{r.lost:>5} {r.gained:>6} {r.mcnemar_exact_p:>10.3g} {r.mcnemar_midp:>7.3g}  "
            f"{_interval(r.graded_change, r.graded_low, r.graded_high):<22} {r.graded_bootstrap_p:>7.3g}"
        )
    lines.append("accuracy in points; lost = right in A and wrong in B; McNemar exact and mid-p tests on the lost/gained items; "
                 "graded = mean partial-credit score, paired bootstrap")
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
            raise BenchError(f"--max-drop {spec!r}: no family {name!r} in these results; families: {', '.join(families)}")
        else:
            per_family[name] = points
    return {family: per_family.get(family, default) for family in families}


def gate(baseline: ItemResults, candidate: ItemResults, max_drop_specs: Sequence[str] = (), strict: bool = False) -> GateResult:
    check_same_items(baseline, candidate)
    max_drops = parse_max_drops(max_drop_specs, families_in_order(baseline.items.family.unique(), baseline.families))
    verdicts = [FamilyVerdict(row, max_drops[row.family], classify(row.change, row.change_low, row.change_high, max_drops[row.family]))
                for row in compare(baseline, candidate)]
    return GateResult(baseline, candidate, verdicts, strict)


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
        "families": [{
            "family": f.comparison.family, "verdict": f.verdict, "max_drop": f.max_drop, "n": f.comparison.n,
            "baseline": f.comparison.accuracy_a, "candidate": f.comparison.accuracy_b, "change": f.comparison.change,
            "interval": [f.comparison.change_low, f.comparison.change_high],
            "lost": f.comparison.lost, "gained": f.comparison.gained,
            "mcnemar_exact_p": f.comparison.mcnemar_exact_p, "mcnemar_midp": f.comparison.mcnemar_midp,
        } for f in result.families],
    }


def gate_summary(result: GateResult) -> str:
    b, c = result.baseline, result.candidate
    lines = [
        f"gate: candidate {c.source} (step {c.step}) vs baseline {b.source} (step {b.step}), suite {b.suite}",
        f"{'family':<10} {'n':>5} {'baseline':>8} {'candidate':>9}  {'change [95% CI]':<22} {'max drop':>8}  verdict",
    ]
    for f in result.families:
        r = f.comparison
        lines.append(f"{r.family:<10} {r.n:>5} {r.accuracy_a:8.1f} {r.accuracy_b:9.1f}  {_interval(r.change, r.change_low, r.change_high):<22} "
                     f"{f.max_drop:8.1f}  {f.verdict.upper() if f.verdict == REGRESSION else f.verdict}")
    if result.verdict == REGRESSION:
        outcome = f"FAIL: regression in {_families_with(result, REGRESSION)}"
    elif result.verdict == INCONCLUSIVE:
        outcome = (f"{'FAIL (--strict)' if result.strict else 'pass'}: inconclusive for {_families_with(result, INCONCLUSIVE)} "
                   "(too few items to rule out a drop beyond the allowed one)")
    else:
        outcome = "pass: no family dropped by more than its allowed drop"
    return "\n".join(lines + [f"{outcome} (exit {result.exit_status})", f"rule: {GATE_RULE}"] + _start_note(b, c))


def _families_with(result: GateResult, verdict: str) -> str:
    return ", ".join(f.comparison.family for f in result.families if f.verdict == verdict)


# ---------------------------------------------------------------- baseline files


def export_baseline(run_dir: Path, out: Path, step: int | None = None) -> Path:
    """Write one checkpoint's per-item results with the suite and eval-set hashes, one item per
    line so that a committed baseline diffs readably."""
    results = run_results(run_dir, step)
    meta = RunStore(run_dir).metadata()
    header = {
        "format": BASELINE_FORMAT, "version": BASELINE_VERSION, "suite": results.suite,
        "eval_set_sha256": results.eval_set_sha256, "eval_sets": meta["eval_sets"], "step": results.step,
        "method": results.method, "seed": meta.get("seed"), "fingerprint": meta.get("fingerprint"),
        "git_commit": meta.get("provenance", {}).get("git", {}).get("commit"), "families": list(results.families),
        "base_model_sha256": results.start_weights, "cpu": cpu_text(meta),
    }
    rows = [{"item_id": r.item_id, "family": r.family, "slice": r.slice, "correct": bool(r.correct), "score": float(r.score)}
            for r in results.items.itertuples()]
    head = json.dumps(header, indent=2)[: -len("\n}")]  # reopened to append the items, one per line
    items = ",\n".join("    " + json.dumps(row) for row in rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda tmp: tmp.write_text(f"{head},\n  \"items\": [\n{items}\n  ]\n}}\n"))
    return out
