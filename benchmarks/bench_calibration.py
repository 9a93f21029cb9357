"""Calibration of the organism against published findings (issue 12, item 6), and every method ×
seeds on the embedded default; writes benchmarks/results/calibration.md (+ .json).

One `bench study` through the real CLI runs every method and the calibration arms
(benchmarks/calibration_arms.yaml: lower learning rates, LoRA) on three seeds, and checks the
seed papers' claims plus the calibration claims (benchmarks/calibration_claims.yaml), each with a
95% Welch interval across seeds. Two findings need more than one metric per run, so this script
computes them from the run folders:

(b) at matched target gain, GRPO forgets less than SFT: per seed, SFT's held-out change is read
    off its checkpoint curve (linear interpolation in gain) at GRPO's final gain; the per-seed
    differences get a t interval. And forgetting grows with KL(π₀‖π): the Spearman correlation of
    KL with the held-out change over every checkpoint of every run, with a 95% bootstrap interval
    that resamples whole runs (checkpoints of one run are not independent).

    python benchmarks/bench_calibration.py [--out FOLDER] [--seeds 0,1,2] [--jobs 2]

Re-running resumes: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "calibration.md"
METHODS = "sft,rps,eps,dpo,spot,grpo,pcr,replay,l2sp"
ARMS = ROOT / "benchmarks" / "calibration_arms.yaml"
CLAIMS = ROOT / "benchmarks" / "calibration_claims.yaml"
BOOTSTRAP = 4000


def run_study(out: Path, seeds: str, jobs: int, methods: str) -> float:
    started = time.time()
    command = [
        sys.executable,
        "-m",
        "plasticity_bench.harness.app.cli",
        "study",
        "--methods",
        methods,
        "--arms",
        str(ARMS),
        "--claims",
        str(CLAIMS),
        "--seeds",
        seeds,
        "--jobs",
        str(jobs),
        "--out",
        str(out),
        "-q",
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    return time.time() - started


@functools.cache  # (b) and the resolution table read each run more than once
def load_run(folder: Path):  # -> reports.data.RunData
    from plasticity_bench.reports.data import load_runs

    [run] = load_runs([folder])
    return run


@functools.cache
def curves(folder: Path) -> pd.DataFrame:
    """Per checkpoint of one run: gain, held-out change and KL(π₀‖π)."""
    from plasticity_bench.reports.tables import gain_and_forgetting

    run = load_run(folder)
    frame = gain_and_forgetting(run)
    if run.kl is not None:
        frame = frame.merge(run.kl[["step", "kl"]], on="step", how="left")
    return frame


def t_interval(values: list[float]) -> tuple[float, float, float]:
    from plasticity_bench.harness.evaluation.claims import t975

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = t975(len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def verdict(low: float, high: float, claimed_positive: bool) -> str:
    if math.isnan(low):
        return "inconclusive"
    if (low > 0) == claimed_positive and (low > 0 or high < 0):
        return "supported"
    return "contradicted" if low > 0 or high < 0 else "inconclusive"


def matched_gain(study: dict, a: str = "grpo", b: str = "sft") -> dict:
    """a's final held-out change minus b's at the same target gain (interpolated on b's curve), per seed."""
    differences, detail = [], []
    runs_b = {r["seed"]: Path(r["folder"]) for r in study["methods"][b]["runs"]}
    for run in study["methods"][a]["runs"]:
        if run["seed"] not in runs_b:
            continue
        mine, theirs = curves(Path(run["folder"])), curves(runs_b[run["seed"]]).sort_values("gain")
        gain, change = float(mine.gain.iloc[-1]), float(mine.ood_change.iloc[-1])
        reachable = theirs.gain.min() <= gain <= theirs.gain.max()
        at_gain = float(np.interp(gain, theirs.gain, theirs.ood_change))
        differences.append(change - at_gain)
        detail.append(
            {
                "seed": run["seed"],
                "gain": gain,
                f"{a}_change": change,
                f"{b}_change_at_gain": at_gain,
                "within_curve": bool(reachable),
            }
        )
    mean, low, high = t_interval(differences)
    _, gain_low, _ = t_interval([d["gain"] for d in detail])
    if not gain_low > 0:  # no gain to match: the comparison says nothing about forgetting at a gain
        return {
            "difference": mean,
            "low": low,
            "high": high,
            "verdict": f"not meaningful ({a} does not gain on the target)",
            "seeds": detail,
        }
    return {"difference": mean, "low": low, "high": high, "verdict": verdict(low, high, True), "seeds": detail}


def target_change_on_first(folder: Path, n: int) -> tuple[float, float, float]:
    """The target slice's final − start change on its first n items (in evaluation-set order),
    with the paired 95% interval the run's report gives: (change, low, high) in points."""
    from plasticity_bench.harness.evaluation.change import paired_change

    run = load_run(folder)
    task, level = run.target_slice.split("/")
    ids = run.items[(run.items.task == task) & (run.items.level == level)].id.iloc[:n]
    records = run.records[run.records.item_id.isin(ids)].set_index("item_id")
    start = records[records.step == run.start_step].correct.loc[ids]
    final = records[records.step == run.final_step].correct.loc[ids]
    change = paired_change(start.tolist(), final.tolist())
    return change.change, change.low, change.high


def resolution_rows(study: dict, sizes: tuple[int, ...] = (200, 600)) -> list[str]:
    """Per arm: how many seeds gain beyond their own paired 95% interval when the target set is
    its first 200 items (the set of sessions 1–6) and when it is all 600, same runs."""
    lines = [
        "| arm | "
        + " | ".join(
            f"seeds gaining, {'all' if n == max(sizes) else 'first'} {n} items (per-seed change [95%])" for n in sizes
        )
        + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for arm, entry in study["methods"].items():
        cells = []
        for n in sizes:
            changes = [target_change_on_first(Path(run["folder"]), n) for run in entry["runs"]]
            per_seed = ", ".join(f"{c:+.1f} [{lo:+.1f}, {hi:+.1f}]" for c, lo, hi in changes)
            cells.append(f"{sum(lo > 0 for _, lo, _ in changes)}/{len(changes)}: {per_seed}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def kl_forgetting(study: dict) -> dict:
    """Spearman ρ(KL, −held-out change) over all checkpoints after the start, bootstrapped by run."""
    frames = []
    for arm in study["methods"].values():
        for run in arm["runs"]:
            frame = curves(Path(run["folder"]))
            if "kl" in frame:
                frames.append(frame[frame.step > frame.step.min()].dropna(subset=["kl"]))
    if len(frames) < 3:
        return {"rho": float("nan"), "low": float("nan"), "high": float("nan"), "verdict": "inconclusive", "points": 0}

    def rho(parts: list[pd.DataFrame]) -> float:
        both = pd.concat(parts)
        return float(both.kl.rank().corr((-both.ood_change).rank()))

    rng = np.random.default_rng(0)
    draws = [rho([frames[i] for i in rng.integers(0, len(frames), len(frames))]) for _ in range(BOOTSTRAP)]
    low, high = (float(v) for v in np.nanpercentile(draws, [2.5, 97.5]))
    return {
        "rho": rho(frames),
        "low": low,
        "high": high,
        "verdict": verdict(low, high, True),
        "points": int(sum(len(f) for f in frames)),
        "runs": len(frames),
    }


# Each method's own training objective (train_log.parquet column) and whether higher is better.
OBJECTIVES = {
    "grpo": ("reward_mean", True),
    "pcr": ("reward_mean", True),
    "dpo": ("heldout_margin", True),
    "spot": ("heldout_margin", True),
}


def objective_rows(study: dict) -> list[str]:
    """Per arm: its objective over the first and last tenth of training, mean ± SE across seeds."""
    lines = [
        "| arm | objective (train log) | first tenth of steps | last tenth of steps | change |",
        "|---|---|---|---|---|",
    ]
    for arm, entry in study["methods"].items():
        method = json.loads((Path(entry["runs"][0]["folder"]) / "run.json").read_text())["config"]["method"]
        column, _ = OBJECTIVES.get(method, ("loss", False))
        firsts, lasts = [], []
        for run in entry["runs"]:
            log = pd.read_parquet(Path(run["folder"]) / "train_log.parquet")
            if method in ("rps", "eps"):
                log = log[log.stage == log.stage.iloc[-1]]  # the hard stage
            tenth = max(1, len(log) // 10)
            firsts.append(float(log[column].iloc[:tenth].mean()))
            lasts.append(float(log[column].iloc[-tenth:].mean()))
        changes = [b - a for a, b in zip(firsts, lasts)]
        mean, low, high = t_interval(changes)
        lines.append(
            f"| {arm} | {column}{' (hard stage)' if method in ('rps', 'eps') else ''} | {np.mean(firsts):.3f} | {np.mean(lasts):.3f} | "
            f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] |"
        )
    return lines


def fmt_test(test: dict) -> str:
    if test["difference"] is None:
        return "–"
    interval = "" if test["low"] is None else f" [{test['low']:+.1f}, {test['high']:+.1f}]"
    return f"{test['metric']} {test['difference']:+.1f}{interval}"


def method_table(study: dict) -> list[str]:
    families = study["held_out_families"]
    lines = [
        "| arm | seeds gaining (95%) | target start → final | target gain | easy-target change | "
        + " | ".join(f"{f} change" for f in families)
        + " | KL to start |",
        "|---|---|---|---|---|" + "---|" * len(families) + "---|",
    ]

    def pm(entry: dict | None, digits: int = 1) -> str:
        if not entry or entry.get("mean") is None:
            return "–"
        se = entry.get("stderr")
        return f"{entry['mean']:+.{digits}f} ± {se:.{digits}f}" if se is not None else f"{entry['mean']:+.{digits}f}"

    for arm, entry in study["methods"].items():
        m = entry["metrics"]
        gaining = sum(1 for r in entry["runs"] if r["metrics"].get("target_significant"))
        final = m["target_final"]["mean"]
        start = final - m["target_gain"]["mean"]
        lines.append(
            f"| {arm} | {gaining}/{len(entry['runs'])} | {start:.1f} → {final:.1f} | {pm(m['target_gain'])} | {pm(m.get('same_skill_change'))} | "
            + " | ".join(pm(m.get(f"held_out:{f}")) for f in families)
            + f" | {pm(m.get('kl_to_start'), 2)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/plasticity-calibration"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--methods", default=METHODS)
    args = parser.parse_args()

    seconds = run_study(args.out, args.seeds, args.jobs, args.methods)
    study = json.loads((args.out / "study.json").read_text())
    matched, kl = matched_gain(study), kl_forgetting(study)
    claims = {c["claim"]: c for c in study["claims"]}
    from plasticity_bench.harness.core.provenance import cpu_description

    cpu = cpu_description()
    result = {
        "study": str(args.out),
        "seconds": round(seconds),
        "matched_gain": matched,
        "kl_forgetting": kl,
        "claims": study["claims"],
        "machine": f"{platform.machine()}, {cpu['model'] or 'cpu'} (torch kernels: {cpu['torch_capability']}), {os.cpu_count()} cores",
    }
    RESULTS.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float))
    lines = report_lines(args, seconds, result["machine"], study) + claim_lines(claims, matched, kl)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def report_lines(args: argparse.Namespace, seconds: float, machine: str, study: dict) -> list[str]:
    """The report up to the claims: every arm's table, the resolution rows and each arm's own objective."""
    return [
        "# Calibration and every method × seeds on the embedded default",
        "",
        f"`python benchmarks/bench_calibration.py` (study folder {args.out}, seeds {args.seeds}, {args.jobs} jobs, "
        f"{seconds / 60:.0f} min for the runs this invocation had to do; finished runs are skipped), {machine}.",
        "",
        "## Every arm: mean ± standard error across seeds (points)",
        "",
        *method_table(study),
        "",
        "## Resolution: the same runs scored on the first 200 target items and on all 600",
        "",
        "Each seed's target change with its own paired 95% interval; a seed gains when the interval lies above 0.",
        "",
        *resolution_rows(study),
        "",
        "## Each arm's own objective: first vs last tenth of its steps (mean over seeds; change with a 95% t interval)",
        "",
        *objective_rows(study),
        "",
    ]


def claim_lines(claims: dict[str, dict], matched: dict, kl: dict) -> list[str]:
    """The claims' verdicts, then the two computed here from pairs of runs."""
    lines = [
        "## Claims (95% Welch interval of the difference of the means across seeds)",
        "",
        "| claim | verdict | tests |",
        "|---|---|---|",
    ]
    for text, claim in claims.items():
        lines.append(
            f"| {text} | **{claim['verdict']}** | " + "; ".join(fmt_test(t) for t in claim.get("tests", [])) + " |"
        )
    lines += [
        "",
        "## (b) needs two runs per comparison: computed here",
        "",
        f"- GRPO's held-out change minus SFT's at GRPO's final target gain: {matched['difference']:+.1f} "
        f"[{matched['low']:+.1f}, {matched['high']:+.1f}] points → **{matched['verdict']}** (positive: GRPO forgets less). Per seed: "
        + "; ".join(
            f"seed {s['seed']}: gain {s['gain']:+.1f}, GRPO {s['grpo_change']:+.1f} vs SFT {s['sft_change_at_gain']:+.1f}"
            + ("" if s["within_curve"] else " (beyond SFT's curve: clamped)")
            for s in matched["seeds"]
        ),
        f"- Spearman ρ(KL(π₀‖π), forgetting) over {kl.get('points', 0)} checkpoints of {kl.get('runs', 0)} runs: {kl['rho']:+.2f} "
        f"[{kl['low']:+.2f}, {kl['high']:+.2f}] (bootstrap over runs) → **{kl['verdict']}**",
    ]
    return lines


if __name__ == "__main__":
    main()
