"""`bench study`: methods × seeds as run folders, the comparison report, and the claims' verdicts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.evaluation.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_RUN,
    SHIPPED_CLAIMS,
    SUPPORTED,
    Check,
    Claim,
    difference_interval,
    evaluate_claims,
    load_claims,
    mean_and_stderr,
    t975,
)
from plasticity_bench.reports.study import CLAIM_METRICS, METRICS, matched_level, ood_change_at_gain, roughness
from tests.helpers import cli, rejected

pytestmark = pytest.mark.xdist_group("smoke_study")  # one worker builds the module's shared study/runs once


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 30):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    assert t975(2.7) == t975(2)  # rounded down: conservative


def test_welch_interval_by_hand() -> None:
    a, b = [10.0, 12.0, 14.0], [1.0, 2.0, 3.0]
    mean_a, se_a = mean_and_stderr(a)
    assert (mean_a, se_a) == pytest.approx((12.0, 2 / math.sqrt(3)))
    diff, low, high = difference_interval(a, b)
    se_b = 1 / math.sqrt(3)
    variance = se_a**2 + se_b**2
    df = variance**2 / (se_a**4 / 2 + se_b**4 / 2)  # ≈ 2.94 → 2
    assert math.floor(df) == 2
    assert diff == pytest.approx(10.0)
    assert (low, high) == pytest.approx((10 - 4.303 * math.sqrt(variance), 10 + 4.303 * math.sqrt(variance)))


def claim(
    metric: str = "target_gain", direction: str = "greater", against_zero: bool = False, b: str | None = "b"
) -> Claim:
    return Claim("a beats b", "a", b, (Check(metric, direction, against_zero),))


@pytest.mark.parametrize(
    ("a", "b", "direction", "verdict"),
    [
        ([10.0, 11.0, 12.0], [1.0, 2.0, 3.0], "greater", SUPPORTED),  # clearly higher
        ([10.0, 11.0, 12.0], [1.0, 2.0, 3.0], "less", CONTRADICTED),  # the claim says lower
        ([1.0, 2.0, 3.0], [10.0, 11.0, 12.0], "greater", CONTRADICTED),
        ([1.0, 5.0, 9.0], [2.0, 6.0, 8.0], "greater", INCONCLUSIVE),  # interval straddles 0
        ([10.0], [1.0], "greater", INCONCLUSIVE),  # one seed each: no interval
    ],
)
def test_verdicts_on_constructed_inputs(a: list[float], b: list[float], direction: str, verdict: str) -> None:
    [result] = evaluate_claims([claim(direction=direction)], {"a": {"target_gain": a}, "b": {"target_gain": b}})
    assert result["verdict"] == verdict and result["tests"][0]["verdict"] == verdict


def test_claim_of_several_tests_and_against_zero_and_not_run() -> None:
    metrics = {
        "a": {"target_gain": [5.0, 6.0, 7.0], "ood_change": [-1.0, -1.5, -2.0]},
        "b": {"target_gain": [9.0, 9.5, 10.0], "ood_change": [-9.0, -10.0, -11.0]},
    }
    both = Claim(
        "a gains and forgets less than b",
        "a",
        "b",
        (Check("target_gain", "greater", True), Check("ood_change", "greater")),
    )
    mixed = Claim(
        "a gains more and forgets less", "a", "b", (Check("target_gain", "greater"), Check("ood_change", "greater"))
    )
    missing = Claim("c beats a", "c", "a", (Check("target_gain", "greater"),))
    results = evaluate_claims([both, mixed, missing], metrics)
    assert [r["verdict"] for r in results] == [SUPPORTED, CONTRADICTED, NOT_RUN]
    assert results[0]["tests"][0]["versus"] == "zero" and results[2]["missing"] == ["c"]


def test_shipped_claims_and_bad_claim_files(tmp_path: Path) -> None:
    shipped = load_claims(SHIPPED_CLAIMS, CLAIM_METRICS)
    assert [(c.a, c.b) for c in shipped] == [("rps", "eps"), ("spot", "sft"), ("pcr", "grpo"), ("grpo", "sft")]
    assert shipped[3].tests[0].metric == "ood_change_at_matched_gain"  # RL's Razor
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("- {claim: x, a: rps, b: eps, metric: target_gain, direction: up}", "direction must be one of greater, less"),
        ("- {claim: x, a: rps, b: eps, metric: speed, direction: greater}", "unknown metric 'speed'"),
        ("- {claim: x, a: rps, metric: target_gain, direction: greater}", "needs `b`"),
        ("claim: x", "must be a list of claims"),
        ("- [", "not valid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(BenchError, match=message):
            load_claims(bad, METRICS)


def test_held_out_change_at_a_matched_gain_by_hand() -> None:
    # gains 0, 4, 10 with held-out changes 0, -2, -8: gain 7 is half-way from 4 to 10, so the change is -5
    curve = pd.DataFrame({"gain": [0.0, 4.0, 10.0], "ood_change": [0.0, -2.0, -8.0]})
    assert ood_change_at_gain(curve, 7.0) == pytest.approx(-5.0)
    assert ood_change_at_gain(curve, 4.0) == pytest.approx(-2.0)  # reached at a checkpoint: its own value
    assert math.isnan(ood_change_at_gain(curve, 11.0))  # never reached
    dips = pd.DataFrame({"gain": [0.0, 6.0, 3.0], "ood_change": [0.0, -1.0, -9.0]})
    assert ood_change_at_gain(dips, 5.0) == pytest.approx(-5 / 6)  # the first crossing, not the last checkpoint
    assert matched_level([curve, dips]) == 6.0  # the highest gain both reach
    assert math.isnan(matched_level([curve, pd.DataFrame({"gain": [0.0, -1.0], "ood_change": [0.0, 1.0]})]))


def test_roughness() -> None:
    assert roughness([0.0, 10.0, 20.0, 30.0]) == 0.0  # a straight line
    assert roughness([0.0, 10.0, 0.0]) == pytest.approx(20.0)
    assert math.isnan(roughness([0.0, 1.0]))


def test_study_usage_errors(tmp_path: Path) -> None:
    rejected(
        cli("study", "--methods", "sft,magic", "--seeds", "0", "--preset", "smoke", "--out", str(tmp_path / "s")),
        "unknown method 'magic'",
    )
    rejected(
        cli("study", "--methods", "sft", "--seeds", "0,x", "--preset", "smoke", "--out", str(tmp_path / "s")),
        "--seeds must be comma-separated integers",
    )
    rejected(
        cli("study", "--methods", "sft,sft", "--seeds", "0", "--preset", "smoke", "--out", str(tmp_path / "s")),
        "--methods names one twice",
    )
    rejected(
        cli(
            "study",
            "--methods",
            "sft",
            "--seeds",
            "0",
            "--jobs",
            "0",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "s"),
        ),
        "--jobs must be at least 1",
    )
    rejected(
        cli("study", "--seeds", "0", "--preset", "smoke", "--out", str(tmp_path / "s")),
        "needs --methods, --arms or both",
    )
    arms = tmp_path / "arms.yaml"
    for text, message in [
        ("low: {lr: 1e-4}\n", "arm 'low' must be a mapping that names its method"),
        ("'a b': {method: sft}\n", "arm label 'a b' must be letters"),
        ("sft: {method: sft, lr: 1e-4}\n", "arm 'sft' is both in --methods and in"),
        ("low: {method: sft, lr: -1}\n", "arm 'low': "),
        ("low: {method: sft, stepz: 3}\n", "unknown setting 'stepz'"),
        ("low: {method: magic}\n", "unknown method 'magic'"),
        ("{}\n", "names no arm"),
    ]:
        arms.write_text(text)
        rejected(
            cli(
                "study",
                "--methods",
                "sft",
                "--arms",
                str(arms),
                "--seeds",
                "0",
                "--preset",
                "smoke",
                "--out",
                str(tmp_path / "s"),
            ),
            message,
        )
    assert not (tmp_path / "s").exists()  # nothing written for bad input


SMOKE_ARMS = "rps-half: {method: rps, options: {stage2_lr_ratio: 0.5}}\n"  # an arm: a labelled variant of a method


@dataclass(frozen=True)
class SmokeStudy:
    out: Path
    arms: Path
    command: tuple[str, ...]


MATCHED_CLAIM = "RPS forgets less than SFT at matched gain"


def gain_curve(folder: Path) -> list[tuple[float, float]]:
    """Per checkpoint, from the run's summary file's inputs (aggregates.parquet): the target gain and the mean
    change of the held-out families, each computed here from the scores."""
    meta = json.loads((folder / "run.json").read_text())
    spec = meta["suite_spec"]
    agg = pd.read_parquet(folder / "aggregates.parquet")
    target_slice = spec["target_slice"] if (agg.slice == spec["target_slice"]).any() else "all"
    target = agg[(agg.family == spec["target_family"]) & (agg.slice == target_slice)].set_index("step").score
    held = agg[(agg.family != spec["target_family"]) & (agg.slice == "all")].pivot(
        index="step", columns="family", values="score"
    )
    steps = sorted(target.index)
    return [(target[s] - target[steps[0]], float((held.loc[s] - held.loc[steps[0]]).mean())) for s in steps]


def first_crossing(curve: list[tuple[float, float]], level: float) -> float:
    for i, (gain, change) in enumerate(curve):
        if gain >= level:
            if i == 0:
                return change
            (g0, c0) = curve[i - 1]
            return c0 + (level - g0) / (gain - g0) * (change - c0)
    raise AssertionError("the level is reached by every run")


@pytest.fixture(scope="session")
def smoke_study(bench, tmp_path_factory: pytest.TempPathFactory) -> SmokeStudy:
    """sft and the rps-half arm × seeds 0,1 at smoke size through `bench study`, made once per session:
    a module that imports this fixture finds the folder at its fixed place under the session's
    temporary root instead of running the study again (tests/test_study_figure.py)."""
    root = tmp_path_factory.getbasetemp() / "smoke-study"
    out, mine, arms = root / "study", root / "claims.yaml", root / "arms.yaml"
    command = (
        "study",
        "--methods",
        "sft",
        "--arms",
        str(arms),
        "--seeds",
        "0,1",
        "--preset",
        "smoke",
        "--jobs",
        "2",
        "--out",
        str(out),
        "--claims",
        str(mine),
        "-q",
    )
    if not (out / "study.json").is_file():
        root.mkdir(exist_ok=True)
        mine.write_text(
            "- {claim: RPS forgets less than SFT, a: rps-half, b: sft, metric: ood_change, direction: greater}\n"
            f"- {{claim: {MATCHED_CLAIM}, a: rps-half, b: sft, metric: ood_change_at_matched_gain, "
            "direction: greater}\n"
        )
        arms.write_text(SMOKE_ARMS)
        done = bench(*command)
        assert done.returncode == 0, done.stderr
    return SmokeStudy(out, arms, command)


def test_study_end_to_end(bench, smoke_study: SmokeStudy) -> None:
    out, arms, command = smoke_study.out, smoke_study.arms, smoke_study.command
    for name in ("sft-seed0", "sft-seed1", "rps-half-seed0", "rps-half-seed1"):
        meta = json.loads((out / name / "run.json").read_text())
        assert meta["stages"]["report"]["done"]
        assert (out / "logs" / f"{name}.log").is_file()
        expected = ("sft", {}) if name.startswith("sft") else ("rps", {"stage2_lr_ratio": 0.5})
        assert (meta["config"]["method"], meta["config"]["options"]) == expected
        assert name.startswith("sft") or meta["method_options"]["stage2_lr_ratio"] == 0.5
    data = json.loads((out / "study.json").read_text())
    page = (out / "study.html").read_text()
    assert "<img" in page and "id=claims" in page
    assert (
        "alt='training objectives vs step, one line per method (first seed)'" in page
    )  # each arm's own objective, charted
    for method in ("sft", "rps-half"):
        entry = data["methods"][method]
        assert [r["seed"] for r in entry["runs"]] == [0, 1]
        gains, held_out = [], {}
        for run in entry["runs"]:
            meta = json.loads((Path(run["folder"]) / "run.json").read_text())
            spec = meta["suite_spec"]
            summary = json.loads((Path(run["folder"]) / "summary.json").read_text())
            target_slice = spec["target_slice"] if any(r["slice"] == spec["target_slice"] for r in summary) else "all"
            [target] = [r for r in summary if r["family"] == spec["target_family"] and r["slice"] == target_slice]
            assert run["metrics"]["target_gain"] == pytest.approx(target["change"])
            gains.append(target["change"])
            for row in summary:
                if row["family"] != spec["target_family"] and row["slice"] == "all":
                    assert run["metrics"][f"held_out:{row['family']}"] == pytest.approx(row["change"])
                    held_out.setdefault(row["family"], []).append(row["change"])
            held = [r["change"] for r in summary if r["family"] != spec["target_family"] and r["slice"] == "all"]
            assert run["metrics"]["ood_change"] == pytest.approx(sum(held) / len(data["held_out_families"]))
            assert run["metrics"]["kl_to_start"] == pytest.approx(meta["stages"]["kl"]["final_kl"])
        assert entry["metrics"]["target_gain"]["mean"] == pytest.approx(sum(gains) / 2)
        assert entry["metrics"]["target_gain"]["stderr"] == pytest.approx(
            abs(gains[0] - gains[1]) / 2
        )  # sd/√2 of two values
        for family, values in held_out.items():
            assert entry["metrics"][f"held_out:{family}"]["mean"] == pytest.approx(sum(values) / 2)
    verdicts = {c["claim"]: c["verdict"] for c in data["claims"]}
    assert verdicts["RPS gains more than EPS on the hard target"] == NOT_RUN
    assert verdicts["PCR scores higher than GRPO on the target and trains more smoothly"] == NOT_RUN
    assert verdicts["RPS forgets less than SFT"] in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
    [mine_result] = [c for c in data["claims"] if c["claim"] == "RPS forgets less than SFT"]
    a = data["methods"]["rps-half"]["metrics"]["ood_change"]["mean"]
    b = data["methods"]["sft"]["metrics"]["ood_change"]["mean"]
    assert mine_result["tests"][0]["difference"] == pytest.approx(a - b)

    # RL's Razor's comparison: each run's held-out change where its gain first reaches the level all four reach
    [matched] = [c for c in data["claims"] if c["claim"] == MATCHED_CLAIM]
    curves = {arm: [gain_curve(Path(r["folder"])) for r in data["methods"][arm]["runs"]] for arm in ("rps-half", "sft")}
    level = min(max(gain for gain, _ in curve) for arm in curves for curve in curves[arm])
    test = matched["tests"][0]
    if level <= 0:  # no run learnt: nothing to match, no interval
        assert test["matched_gain"] is None and test["difference"] is None and matched["verdict"] == INCONCLUSIVE
    else:
        at = {arm: [first_crossing(curve, level) for curve in curves[arm]] for arm in curves}
        assert test["matched_gain"] == pytest.approx(level)
        assert test["difference"] == pytest.approx(sum(at["rps-half"]) / 2 - sum(at["sft"]) / 2)
        assert f"at target gain {level:+.1f} points" in page

    # a re-run skips every finished run and re-writes the same numbers
    again = bench(*command)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done, skipped") == 4
    assert json.loads((out / "study.json").read_text()) == data

    # an arm whose settings changed since its runs were made: refused, not silently skipped and mixed in
    arms.write_text("rps-half: {method: rps, options: {stage2_lr_ratio: 0.4}}\n")
    try:
        stale = bench(*command)
    finally:
        arms.write_text(SMOKE_ARMS)  # the shared study's arms as its runs were made
    assert stale.returncode != 0 and "hold runs with other settings than their arm's today" in stale.stderr
    assert json.loads((out / "study.json").read_text()) == data  # nothing re-written
