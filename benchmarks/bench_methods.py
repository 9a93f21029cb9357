"""All methods on the embedded default, several seeds: gain, forgetting, cost, PCR's conflict stats.

    python benchmarks/bench_methods.py [--methods sft rps ...] [--seeds 0 1 2] [--jobs 2] [--work runs/bench-methods]

Each run is the real CLI (`bench run --method M --seed S`), so a finished run folder is reused
when the script is started again. Two runs at a time with one torch thread each (a tiny model
gets more from two single-threaded processes than from one two-threaded one). Writes
benchmarks/results/methods.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "methods.md"
METHODS = ["sft", "rps", "eps", "spot", "dpo", "grpo", "pcr"]
TARGET = ("math", "chain_sum/hard")  # what post-training aims at
OUT_OF_DOMAIN = ("reasoning", "code")


def run(method: str, seed: int, work: Path) -> Path:
    out = work / f"{method}-seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "plasticity_bench.harness.app.cli",
            "run",
            "--method",
            method,
            "--seed",
            str(seed),
            "--out",
            str(out),
            "-q",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed: {done.stderr.strip()[-500:]}")
    print(f"{method} seed {seed}: {time.time() - started:.0f} s", flush=True)
    return out


def score_at(aggregates: pd.DataFrame, family: str, slice_: str = "all") -> pd.Series:
    rows = aggregates[(aggregates.family == family) & (aggregates.slice == slice_)].sort_values("step")
    return rows.set_index("step").score


def roughness(curve: pd.Series) -> float:
    """Σ|Δ| − |ΣΔ| between consecutive checkpoints: points of back-and-forth (0 for a monotone curve)."""
    steps = curve.diff().dropna()
    return float(steps.abs().sum() - abs(steps.sum()))


def run_summary(folder: Path) -> dict[str, float]:
    aggregates = pd.read_parquet(folder / "aggregates.parquet")
    meta = json.loads((folder / "run.json").read_text())
    target = score_at(aggregates, *TARGET)
    ood = sum(score_at(aggregates, family) for family in OUT_OF_DOMAIN) / len(OUT_OF_DOMAIN)
    summary = {
        "gain": target.iloc[-1] - target.iloc[0],
        "ood_change": ood.iloc[-1] - ood.iloc[0],
        "easy_change": (lambda s: s.iloc[-1] - s.iloc[0])(score_at(aggregates, "math", "chain_sum/easy")),
        "roughness_gain": roughness(target),
        "roughness_ood": roughness(ood),
        "seconds": sum(stage.get("seconds", 0) for stage in meta["stages"].values()),
    }
    log = pd.read_parquet(folder / "train_log.parquet")
    if "conflict_rate" in log:
        quarter = max(1, len(log) // 4)
        summary |= {
            "conflict_rate": log.conflict_rate.mean(),
            "alpha": log.alpha[log.conflict_rate > 0].mean(),
            "conflict_first_q": log.conflict_rate[:quarter].mean(),
            "conflict_last_q": log.conflict_rate[-quarter:].mean(),
        }
    if "reward_mean" in log:
        summary["reward_step_sd"] = float(log.reward_mean.diff().std())
    return summary


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return mean, se


def claim(name: str, a: str, b: str, key: str, table: dict, lower_is_better: bool = False) -> str:
    """'A beats B on key' with the difference of means and its standard error across seeds."""
    (ma, sa), (mb, sb) = table[a][key], table[b][key]
    diff = ma - mb if not lower_is_better else mb - ma
    se = math.sqrt(sa**2 + sb**2)
    verdict = (
        "reproduced"
        if diff > 2 * se
        else ("not reproduced (opposite, beyond 2 SE)" if diff < -2 * se else "not resolved (within 2 SE)")
    )
    return f"- **{name}**: {a} {key} {ma:+.1f} ± {sa:.1f} vs {b} {mb:+.1f} ± {sb:.1f} → {verdict}"


def mean_table(per_run: dict[tuple[str, int], dict], methods: list[str], seeds: list[int]) -> dict[str, dict]:
    """method → measure → (mean, standard error) over the seeds."""
    keys = sorted({k for summary in per_run.values() for k in summary})
    return {
        m: {
            k: mean_se([per_run[(m, s)][k] for s in seeds if k in per_run[(m, s)]])
            for k in keys
            if k in per_run[(m, seeds[0])]
        }
        for m in methods
    }


def cell(table: dict[str, dict], method: str, key: str, digits: int = 1) -> str:
    if key not in table[method]:
        return "–"
    mean, se = table[method][key]
    return f"{mean:+.{digits}f} ± {se:.{digits}f}" if not math.isnan(se) else f"{mean:+.{digits}f}"


def table_lines(args: argparse.Namespace, table: dict[str, dict], elapsed: float) -> list[str]:
    """The methods' table, then PCR's conflict statistics where PCR ran."""
    lines = [
        f"Seeds {args.seeds}; {args.jobs} runs at a time, one torch thread each; whole sweep {elapsed:.0f} s of wall time.",
        "Mean ± standard error over seeds. Gain: hard in-domain accuracy change (points) from start to the final checkpoint;",
        "OOD change: mean over the out-of-domain families (reasoning, code); roughness: Σ|Δ| − |ΣΔ| over checkpoints (0 = monotone).",
        "",
        "| method | in-domain gain | OOD change | easy in-domain change | roughness (gain curve) | roughness (OOD curve) | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in args.methods:
        seconds = table[m]["seconds"][0]
        lines.append(
            f"| {m} | {cell(table, m, 'gain')} | {cell(table, m, 'ood_change')} | {cell(table, m, 'easy_change')} | {cell(table, m, 'roughness_gain')} | {cell(table, m, 'roughness_ood')} | {seconds:.0f} |"
        )
    if "pcr" in table:
        lines += [
            "",
            "PCR over training: conflict rate (share of MLP blocks whose two gradients conflict), mean; first and last quarter of steps; α where in conflict.",
            "",
            f"- conflict rate {cell(table, 'pcr', 'conflict_rate', 3)} (first quarter {cell(table, 'pcr', 'conflict_first_q', 3)}, last quarter {cell(table, 'pcr', 'conflict_last_q', 3)}); α {cell(table, 'pcr', 'alpha', 3)}",
        ]
    return lines


def claim_lines(table: dict[str, dict]) -> list[str]:
    """The claims whose two methods both ran."""
    lines = ["", "Claims:"]
    if {"rps", "eps"} <= set(table):
        lines.append(claim("RPS forgets less than EPS", "rps", "eps", "ood_change", table))
    if {"spot", "sft"} <= set(table):
        lines.append(claim("SPoT forgets less than SFT", "spot", "sft", "ood_change", table))
    if {"pcr", "grpo"} <= set(table):
        lines.append(
            claim(
                "PCR trains more smoothly than GRPO (gain curve)",
                "pcr",
                "grpo",
                "roughness_gain",
                table,
                lower_is_better=True,
            )
        )
        lines.append(
            claim(
                "PCR trains more smoothly than GRPO (OOD curve)",
                "pcr",
                "grpo",
                "roughness_ood",
                table,
                lower_is_better=True,
            )
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-methods")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # The organism is built once, before the pool, so parallel runs do not race to build it.
    subprocess.run(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", "base", "-q"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    with ThreadPoolExecutor(args.jobs) as pool:
        folders = list(pool.map(lambda job: run(*job, args.work), jobs))
    per_run = {job: run_summary(folder) for job, folder in zip(jobs, folders)}
    table = mean_table(per_run, args.methods, args.seeds)
    lines = table_lines(args, table, time.time() - started) + claim_lines(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
