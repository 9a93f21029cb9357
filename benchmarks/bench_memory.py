"""The memory estimate (harness/app/memory.py) against the measured peak of a real training run.

For each method, a fresh process prepares `bench run --method M` (the embedded organism, the
default preset unless --preset, `--steps` steps), opens its run folder, and then runs the train
stage (loading the starting model, the method's setup, every step, the checkpoints) while the
kernel tracks its peak resident memory: the peak is reset (`/proc/self/clear_refs` ← 5) just
before the stage and read (`VmHWM`) just after it. Measured = that peak minus the resident memory
just before the stage (the libraries, the tokenizer and the evaluation items are already loaded
then, and none of them is part of the estimate). On a CPU the "device" is this machine's RAM, so
this is the CPU analogue of a GPU's peak allocation; torch keeps no allocator statistics on a CPU.

Writes benchmarks/results/memory.md.

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py [--methods sft grpo] [--steps 10] [--preset default]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "memory.md"


def status_kb(field: str) -> int:
    """A `/proc/self/status` field (VmRSS, VmHWM) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_one(method: str, preset: str, steps: int, work: Path) -> dict:
    """In this process: the estimate and the train stage's peak growth, in bytes."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.memory import memory_plan
    from plasticity_bench.harness.app.stages.prepare import open_run, prepare
    from plasticity_bench.harness.app.stages.train import train_stage
    from plasticity_bench.harness.backends import BackendPool

    config = load_config(preset, overrides={"method": method, "steps": steps})
    run = prepare(config, work / method)
    found = memory_plan(run.config, run.trainer).estimate()
    store, base = open_run(run, quiet=True)
    with BackendPool() as backends:
        before = status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
        train_stage(store, run, base, backends, quiet=True)
        peak = status_kb("VmHWM")
    return {
        "method": method,
        "steps": steps,
        "batch_size": run.config.batch_size,
        "measured": (peak - before) * 1024,
        "estimate": found.total,
        "parts": {name: size for name, size in found.rows()},
    }


def row(result: dict) -> str:
    ratio = result["estimate"] / result["measured"]
    parts = ", ".join(
        f"{name} {size / 2**20:.1f}" for name, size in result["parts"].items() if name != "total per process"
    )
    return (
        f"| {result['method']} | {result['steps']} | {result['batch_size']} | {result['measured'] / 2**20:.1f} | "
        f"{result['estimate'] / 2**20:.1f} | {ratio:.2f} | {parts} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["sft"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one method, JSON on stdout
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(measure_one(args.one, args.preset, args.steps, Path(work))))
        return
    results = []
    for method in args.methods:  # one process each: a clean peak, no memory kept from the method before
        command = [sys.executable, __file__, "--one", method, "--steps", str(args.steps), "--preset", args.preset]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    lines = [
        f"# Memory estimate vs measured peak ({platform.processor() or platform.machine()}, preset {args.preset})",
        "",
        "| method | steps | batch | measured peak growth (MiB) | estimate (MiB) | estimate / measured | "
        "estimate's parts (MiB) |",
        "|---|---|---|---|---|---|---|",
        *map(row, results),
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
