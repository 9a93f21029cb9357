"""`bench compare`, `bench gate` and `bench export-baseline` on constructed result sets: small
run folders written by `write_run` in exactly the layout `bench run` leaves (run.json,
eval_items, records, aggregates, manifest), with the outcomes the test needs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from plasticity_bench.harness.evaluation.gate import classify
from plasticity_bench.harness.evaluation.scoring import aggregate
from plasticity_bench.harness.store import RUN_FORMAT
from plasticity_bench.tasks.base import content_hash, get_task
from plasticity_bench.tasks.suites import load_suite
from tests.helpers import cli, rejected

# One slice per family; the in-domain one is the suite's hard data, as in a real run.
SLICES = (("math", "chain_sum", "hard"), ("reasoning", "reverse", "easy"), ("code", "affine", "easy"))


def eval_items(n_per_slice: int) -> list:
    return [
        item
        for _family, task, level in SLICES
        for item in get_task(task).items(level, n_per_slice, load_suite("micro").eval_seed)
    ]


def write_run(
    root: Path,
    correct: Mapping[int, np.ndarray],
    n_per_slice: int,
    method: str = "sft",
    suite: str = "micro",
    stage_of_step: Mapping[int, str] | None = None,
) -> Path:
    """A scored run whose item i is right at checkpoint `step` iff correct[step][i] (items ordered
    as `eval_items`). Graded score = correctness, outputs say which."""
    items = eval_items(n_per_slice)
    root.mkdir(parents=True)
    frame = pd.DataFrame([{**item.to_dict(), "meta": json.dumps(item.meta)} for item in items])
    frame.to_parquet(root / "eval_items.parquet", index=False)
    records = pd.concat(
        [
            pd.DataFrame(
                {
                    "item_id": [i.id for i in items],
                    "step": step,
                    "family": [i.family for i in items],
                    "task": [i.task for i in items],
                    "level": [i.level for i in items],
                    "output": [i.answer if ok else "?" for i, ok in zip(items, right)],
                    "score": right.astype(float),
                    "correct": right.astype(bool),
                    "outcome": "",
                }
            )
            for step, right in sorted(correct.items())
        ],
        ignore_index=True,
    )
    records.to_parquet(root / "records.parquet", index=False)
    aggregate(records).to_parquet(root / "aggregates.parquet", index=False)
    steps = sorted(correct)
    stages = stage_of_step or {}
    manifest = [
        {
            "step": s,
            "stage": "start" if s == 0 else stages.get(s, "hard"),
            "lr": 0.0,
            "loss": None,
            "examples_seen": 32 * s,
            "path": f"checkpoints/step-{s:06d}",
        }
        for s in steps
    ]
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "manifest.json").write_text(json.dumps(manifest))
    by_slice = {
        f"{task}/{level}": [i for i in items if i.task == task and i.level == level] for _f, task, level in SLICES
    }
    meta = {
        "format": RUN_FORMAT,
        "fingerprint": f"{method}-{n_per_slice}",
        "method": method,
        "suite": suite,
        "seed": 0,
        "backend": "hf",
        "config": {"method": method, "steps": steps[-1]},
        "base_model": "/organisms/synthetic",
        "eval_sets": {name: {"n": len(group), "sha256": content_hash(group)} for name, group in by_slice.items()},
        "eval_set_sha256": content_hash(items),
        "suite_spec": load_suite("micro").to_summary(skipped={}),  # the micro suite's sets, whatever `suite` is called
        "created": "2026-01-01T00:00:00+0000",
        "provenance": {"python": "3.11", "packages": {"torch": "2.13.0"}, "git": {"commit": "0" * 40, "dirty": False}},
        "stages": {
            name: {"done": True, "seconds": seconds}
            for name, seconds in (("train", 30.5), ("generate", 9.8), ("score", 4.1), ("report", 1.0))
        },
    }
    (root / "run.json").write_text(json.dumps(meta))
    return root


def flipped(outcomes: np.ndarray, family_index: int, n_per_slice: int, count: int) -> np.ndarray:
    """`outcomes` with the first `count` right items of one family turned wrong."""
    changed = outcomes.copy()
    block = slice(family_index * n_per_slice, (family_index + 1) * n_per_slice)
    right = np.flatnonzero(changed[block])[:count] + family_index * n_per_slice
    assert len(right) == count
    changed[right] = False
    return changed


def baseline_outcomes(n_per_slice: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(len(SLICES) * n_per_slice) < 0.6


@pytest.fixture(scope="module")
def pair_400(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """400 items per family; the candidate lost 40 right answers (10 points) in reasoning."""
    root = tmp_path_factory.mktemp("gate400")
    start = baseline_outcomes(400, seed=9)
    base = baseline_outcomes(400)
    worse = flipped(base, 1, 400, 40)
    return (
        write_run(root / "base", {0: start, 100: base}, 400),
        write_run(root / "same", {0: start, 100: base}, 400, method="rps"),
        write_run(root / "worse", {0: start, 100: worse}, 400, method="eps"),
    )


def _verdicts(report: dict) -> dict[str, str]:
    return {f["family"]: f["verdict"] for f in report["families"]}


def test_a_ten_point_drop_on_400_items_is_a_regression(bench, pair_400, tmp_path: Path) -> None:
    base, _same, worse = pair_400
    done = bench(
        "gate", "--baseline", str(base), "--candidate", str(worse), "--json", str(tmp_path / "verdict.json")
    )  # end to end
    assert done.returncode == 1, done.stderr
    report = json.loads((tmp_path / "verdict.json").read_text())
    assert report["verdict"] == "regression" and report["exit_status"] == 1
    assert _verdicts(report) == {
        "math": "no detectable change",
        "reasoning": "regression",
        "code": "no detectable change",
    }
    reasoning = next(f for f in report["families"] if f["family"] == "reasoning")
    assert reasoning["change"] == pytest.approx(-10.0) and (reasoning["lost"], reasoning["gained"]) == (40, 0)
    assert reasoning["interval"][1] < -5.0
    assert "FAIL: regression in reasoning" in done.stdout and "REGRESSION" in done.stdout


def test_identical_runs_pass(pair_400) -> None:
    base, same, _worse = pair_400
    done = cli("gate", "-b", str(base), "-c", str(same), "--json", "-")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "pass" and set(_verdicts(report).values()) == {"no detectable change"}
    assert all(f["change"] == 0 and f["interval"][0] > -1 for f in report["families"])


def test_a_drop_within_the_allowed_one_passes(pair_400) -> None:
    base, _same, worse = pair_400
    done = cli("gate", "-b", str(base), "-c", str(worse), "--max-drop", "reasoning=15", "--json", "-")
    assert done.returncode == 0, done.stderr
    assert _verdicts(json.loads(done.stdout))["reasoning"] == "no detectable change"
    # -10 [-13, -7] straddles -11 and the estimate is within it: cannot be told
    within = cli(
        "gate", "-b", str(base), "-c", str(worse), "--max-drop", "2", "--max-drop", "reasoning=11", "--json", "-"
    )
    assert within.returncode == 0 and _verdicts(json.loads(within.stdout))["reasoning"] == "inconclusive"
    # against 8, the same interval straddles -8 too, but the drop is significant and its estimate beyond 8: a regression
    beyond = cli(
        "gate", "-b", str(base), "-c", str(worse), "--max-drop", "2", "--max-drop", "reasoning=8", "--json", "-"
    )
    assert beyond.returncode == 1 and _verdicts(json.loads(beyond.stdout))["reasoning"] == "regression"


@pytest.mark.slow
def test_a_significant_drop_beyond_the_allowed_one_fails(tmp_path: Path) -> None:
    """200 math items, 20 lost and 4 gained: -8 points, McNemar p = 0.0015, interval [-12.7, -3.2].
    The interval straddles -5, so the old rule (regression only if hi < -D) said inconclusive and passed."""
    start, base = baseline_outcomes(200, seed=9), baseline_outcomes(200)
    worse = base.copy()  # math is the first 200 items
    worse[np.flatnonzero(base[:200])[:20]] = False
    worse[np.flatnonzero(~base[:200])[:4]] = True
    write_run(tmp_path / "base", {0: start, 10: base}, 200)
    write_run(tmp_path / "cand", {0: start, 10: worse}, 200)
    done = cli("gate", "-b", str(tmp_path / "base"), "-c", str(tmp_path / "cand"), "--json", str(tmp_path / "v.json"))
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    math = report["families"][0]
    assert (
        math["family"] == "math" and (math["lost"], math["gained"]) == (20, 4) and math["change"] == pytest.approx(-8.0)
    )
    assert math["mcnemar_exact_p"] == pytest.approx(0.0015, abs=1e-4)
    assert math["interval"][0] < -5 < math["interval"][1] < 0
    assert report["verdict"] == "regression"
    assert _verdicts(report) == {
        "math": "regression",
        "reasoning": "no detectable change",
        "code": "no detectable change",
    }
    assert "FAIL: regression in math" in done.stdout and "hi < 0 and change < -D" in done.stdout


@pytest.mark.parametrize(
    ("change", "low", "high", "verdict"),
    [
        (-8.0, -12.7, -3.2, "regression"),  # significant, estimate beyond D = 5
        (-12.0, -16.0, -6.0, "regression"),  # the whole interval beyond D
        (-5.0, -9.0, -1.0, "inconclusive"),  # significant, but the estimate is not beyond D
        (-8.0, -14.0, 1.0, "inconclusive"),  # estimate beyond D, but no drop told from noise
        (-2.0, -4.0, 0.5, "no detectable change"),
        (3.0, -1.0, 7.0, "no detectable change"),
        (-6.0, -6.5, -5.5, "regression"),
    ],
)
def test_the_gate_rule(change: float, low: float, high: float, verdict: str) -> None:
    assert classify(change, low, high, 5.0) == verdict


def test_twenty_items_with_a_five_point_difference_are_inconclusive(tmp_path: Path) -> None:
    start = baseline_outcomes(20, seed=9)
    base = baseline_outcomes(20)
    write_run(tmp_path / "base", {0: start, 10: base}, 20)
    write_run(tmp_path / "cand", {0: start, 10: flipped(base, 0, 20, 1)}, 20)
    done = cli("gate", "-b", str(tmp_path / "base"), "-c", str(tmp_path / "cand"), "--json", str(tmp_path / "v.json"))
    assert done.returncode == 0, done.stderr  # inconclusive is not a detected regression...
    report = json.loads((tmp_path / "v.json").read_text())
    math = report["families"][0]
    assert math["family"] == "math" and math["change"] == pytest.approx(-5.0) and math["verdict"] == "inconclusive"
    assert math["interval"][0] < -5 < math["interval"][1]
    assert report["verdict"] == "inconclusive" and "inconclusive for math" in done.stdout
    strict = cli("gate", "-b", str(tmp_path / "base"), "-c", str(tmp_path / "cand"), "--strict")
    assert strict.returncode == 1 and "FAIL (--strict)" in strict.stdout  # ...unless asked to be strict


def test_compare_paired_test_matches_statsmodels(pair_400, tmp_path: Path) -> None:
    base, _same, worse = pair_400
    done = cli("compare", str(base), str(worse), "--json", str(tmp_path / "c.json"))
    assert done.returncode == 0, done.stderr
    rows = {r["family"]: r for r in json.loads((tmp_path / "c.json").read_text())["families"]}
    before, after = baseline_outcomes(400), flipped(baseline_outcomes(400), 1, 400, 40)
    for index, (family, *_slice) in enumerate(SLICES):
        a, b = before[index * 400 : (index + 1) * 400], after[index * 400 : (index + 1) * 400]
        table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
        assert rows[family]["mcnemar_exact_p"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9, abs=1e-300)
        assert rows[family]["change"] == pytest.approx(100 * (b.mean() - a.mean()))
    assert rows["reasoning"]["mcnemar_exact_p"] < 1e-10 and rows["math"]["mcnemar_exact_p"] == 1.0
    assert rows["reasoning"]["graded_change"] == pytest.approx(-10.0) and rows["reasoning"]["graded_high"] < 0
    assert "reasoning" in done.stdout and "McNemar" in done.stdout


def test_compare_picks_steps(pair_400) -> None:
    base, _same, worse = pair_400
    done = cli("compare", str(base), str(worse), "--step-a", "0", "--step-b", "0")
    assert done.returncode == 0, done.stderr
    assert "step 0" in done.stdout and "+0.0 [" in done.stdout


def test_exported_baseline_gates_like_the_run(pair_400, tmp_path: Path) -> None:
    base, _same, worse = pair_400
    baseline = tmp_path / "ci" / "baseline.json"
    done = cli("export-baseline", str(base), "-o", str(baseline))
    assert done.returncode == 0, done.stderr
    data = json.loads(baseline.read_text())
    assert data["format"] == "plasticity-bench/baseline" and data["suite"] == "micro" and data["step"] == 100
    assert data["eval_set_sha256"] == json.loads((base / "run.json").read_text())["eval_set_sha256"]
    assert len(data["items"]) == 1200 and len(baseline.read_text().splitlines()) > 1200  # one item per line
    assert cli("gate", "-b", str(baseline), "-c", str(base)).returncode == 0
    from_file = json.loads(cli("gate", "-b", str(baseline), "-c", str(worse), "--json", "-").stdout)
    from_run = json.loads(cli("gate", "-b", str(base), "-c", str(worse), "--json", "-").stdout)
    assert from_file["families"] == from_run["families"] and from_file["verdict"] == "regression"


# ---------------------------------------------------------------- bad input: one line, exit 2


def test_a_run_without_records(bench, pair_400, tmp_path: Path) -> None:
    base, same, _worse = pair_400
    unscored = tmp_path / "unscored"
    shutil.copytree(same, unscored)
    (unscored / "records.parquet").unlink()
    rejected(bench("gate", "-b", str(base), "-c", str(unscored)), "has no records.parquet", "bench score")  # end to end
    rejected(cli("export-baseline", str(unscored), "-o", str(tmp_path / "b.json")), "has no records.parquet")
    assert not (tmp_path / "b.json").exists()


def test_a_run_missing_records_at_its_final_step(pair_400, tmp_path: Path) -> None:
    base, same, _worse = pair_400
    partial = tmp_path / "partial"
    shutil.copytree(same, partial)
    records = pd.read_parquet(partial / "records.parquet")
    records.iloc[:-10].to_parquet(partial / "records.parquet", index=False)
    rejected(
        cli("compare", str(base), str(partial)),
        "1190 records for 1190 of its 1200 evaluation items at step 100",
        "re-score",
    )


def test_runs_on_different_item_sets_or_suites(pair_400, tmp_path: Path) -> None:
    base, _same, _worse = pair_400
    smaller = write_run(tmp_path / "small", {0: baseline_outcomes(20), 10: baseline_outcomes(20)}, 20)
    rejected(cli("gate", "-b", str(base), "-c", str(smaller)), "different item sets", "eval-set sha256")
    rejected(cli("compare", str(base), str(smaller)), "different item sets")
    other_suite = write_run(
        tmp_path / "other", {0: baseline_outcomes(400), 10: baseline_outcomes(400)}, 400, suite="mega"
    )
    rejected(cli("compare", str(base), str(other_suite)), "different suites (micro vs mega)")
    baseline = tmp_path / "small.json"
    assert cli("export-baseline", str(smaller), "-o", str(baseline)).returncode == 0
    rejected(cli("gate", "-b", str(baseline), "-c", str(base)), "different item sets")


def test_bad_baseline_files_and_options(pair_400, tmp_path: Path) -> None:
    base, same, _worse = pair_400
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "broken.json").write_text("{not json")
    rejected(
        cli("gate", "-b", str(tmp_path / "notes.json"), "-c", str(same)), "is not a baseline file", "export-baseline"
    )
    rejected(cli("gate", "-b", str(tmp_path / "broken.json"), "-c", str(same)), "is not a baseline file (not JSON")
    rejected(cli("gate", "-b", str(tmp_path / "missing"), "-c", str(same)), "does not exist")
    rejected(cli("gate", "-b", str(tmp_path), "-c", str(same)), "is not a run folder")
    rejected(
        cli("gate", "-b", str(base), "-c", str(same), "--max-drop", "maths=2"),
        "no family 'maths'",
        "math, reasoning, code",
    )
    rejected(cli("gate", "-b", str(base), "-c", str(same), "--max-drop", "math=lots"), "is not POINTS or FAMILY=POINTS")
    rejected(cli("gate", "-b", str(base), "-c", str(same), "--max-drop", "-1"), "must be a number of points >= 0")
    rejected(cli("compare", str(base), str(same), "--step-b", "7"), "has no scored step 7", "0, 100")
    missing_option = cli("gate", "-c", str(same))
    assert missing_option.returncode == 2 and "--baseline" in missing_option.stderr
