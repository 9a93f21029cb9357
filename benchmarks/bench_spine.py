"""Spine benchmark: `bench run` wall time cold (no cached organism) and warm, and what each method
gains and forgets on the embedded default. Runs the real CLI; writes benchmarks/results/spine.md.

    python benchmarks/bench_spine.py [--methods sft rps eps] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "spine.md"


def bench_run(method: str, seed: int, out: Path, cache: Path) -> float:
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(cache)}
    started = time.perf_counter()
    subprocess.run(
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
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    import torch

    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, {platform.system()}"


def summary_rows(run: Path) -> dict[str, dict]:
    return {f"{r['family']}/{r['slice']}": r for r in json.loads((run / "summary.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["rps", "eps", "sft"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-spine-"))
    cache = work / "cache"  # empty: the first run builds the organism (cold)
    lines = [f"Machine: {machine()}", "", "| run | wall time (s) |", "|---|---|"]
    cold = bench_run(args.methods[0], args.seed, work / "cold", cache)
    lines.append(f"| `bench run --method {args.methods[0]}` cold (builds the organism) | {cold:.0f} |")
    results = {}
    for method in args.methods:
        seconds = bench_run(method, args.seed, work / method, cache)
        results[method] = summary_rows(work / method)
        lines.append(f"| `bench run --method {method}` warm (organism cached) | {seconds:.0f} |")
    organism = json.loads(next((cache / "organisms").glob("*/organism.json")).read_text())
    lines += [
        "",
        f"Organism: {organism['parameters']:,} parameters, pre-trained in {organism['pretrain_seconds']} s.",
        "",
    ]
    keys = ["math/chain_sum/hard", "math/chain_sum/easy", "reasoning/all", "code/all"]
    lines += [
        "| method | " + " | ".join(f"{k}: start → final (change ± 95% CI)" for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for method, rows in results.items():
        cells = []
        for key in keys:
            r = rows[key]
            half = (r["change_hi"] - r["change_lo"]) / 2
            cells.append(f"{r['start']:.1f} → {r['final']:.1f} ({r['change']:+.1f} ± {half:.1f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"runs kept in {work}")


if __name__ == "__main__":
    main()
