"""SFT's train stage under 1 and 2 training processes (gloo on this CPU), side by side.

Runs `bench run --method sft` through the real CLI (the embedded organism of --preset, one
evaluation item per set so the rest of the run is short) with `--num-processes 1` and `2`,
alternating (so both feel the same load on a shared machine), and reads from each run folder

  * the train stage's seconds (run.json): for 2 processes this includes starting torchrun and two
    Python processes that import torch, transformers and the harness;
  * the training loop's seconds: from checkpoint 0's file (written once the model is loaded, just
    before the method's setup) to the last checkpoint's, so setup + steps + saves, without the
    processes' start. Its ratio is the speed-up a long run tends to.

Both process counts train the same global batches (2 processes = 1 process with grad_accum 2:
tests/test_multiprocess.py), so the comparison is of the same computation. The cores are whatever
the machine has (2 here, shared with other work: say so when quoting the numbers).

Writes benchmarks/results/multiprocess.md.

    OMP_NUM_THREADS=1 python benchmarks/bench_multiprocess.py [--steps 40] [--batch-size 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "multiprocess.md"


def run_once(work: Path, processes: int, steps: int, batch_size: int, preset: str) -> dict:
    """One `bench run`; its train stage's and training loop's seconds and the whole command's wall time."""
    out = work / f"p{processes}-s{steps}-{time.monotonic_ns()}"
    config = work / f"{out.name}.yaml"
    config.write_text(f"steps: {steps}\nbatch_size: {batch_size}\ncheckpoint_every: 0\neval_per_slice: 1\n")
    command = [sys.executable, "-m", "plasticity_bench.harness.app.cli", "run", "-m", "sft", "--preset", preset]
    command += ["-o", str(out), "-q", "-c", str(config), "--num-processes", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench run failed:\n{done.stderr[-3000:]}")
    train = json.loads((out / "run.json").read_text())["stages"]["train"]
    first, last = (out / "checkpoints" / name / "model.safetensors" for name in ("step-000000", f"step-{steps:06d}"))
    loop = last.stat().st_mtime - first.stat().st_mtime
    return {"processes": processes, "train_seconds": train["seconds"], "loop_seconds": loop, "wall_seconds": wall}


def median(rows: list[dict], processes: int, key: str) -> float:
    return statistics.median(r[key] for r in rows if r["processes"] == processes)


def report(rows: list[dict], steps: int, batch_size: int, preset: str) -> str:
    lines = [
        "# SFT under 1 and 2 training processes (benchmarks/bench_multiprocess.py)",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores (shared with other work while measured), torch gloo; "
        f"preset {preset}, {steps} steps of batch {batch_size}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}"
        f"; medians of {len(rows) // 2} run(s) each.",
        "",
        "| processes | train stage (s) | training loop (s) | loop per step (s) | processes' start (s) | whole command (s) |",
        "|---|---|---|---|---|---|",
    ]
    for count in (1, 2):
        train, loop = median(rows, count, "train_seconds"), median(rows, count, "loop_seconds")
        wall = median(rows, count, "wall_seconds")
        lines.append(f"| {count} | {train:.1f} | {loop:.1f} | {loop / steps:.3f} | {train - loop:.1f} | {wall:.1f} |")
    loop_ratio = median(rows, 1, "loop_seconds") / median(rows, 2, "loop_seconds")
    train_ratio = median(rows, 1, "train_seconds") / median(rows, 2, "train_seconds")
    lines += [
        "",
        f"Speed-up of 2 processes: training loop {loop_ratio:.2f}×, whole train stage {train_ratio:.2f}×.",
        "",
        "Runs (in the order made):",
        "",
        *[
            f"- {r['processes']} process(es): train {r['train_seconds']:.1f} s, loop {r['loop_seconds']:.1f} s, "
            f"command {r['wall_seconds']:.1f} s"
            for r in rows
        ],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for processes in (1, 2):  # alternating: both feel the same load on a shared machine
                rows.append(run_once(Path(folder), processes, args.steps, args.batch_size, args.preset))
                print(rows[-1], flush=True)
    text = report(rows, args.steps, args.batch_size, args.preset)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
