"""What running a study's runs as Ray tasks costs: the same `bench study` locally and with `--ray`.

Measures, on this machine:

  * Ray's own fixed cost, in this process: starting a local instance as `bench study --ray` does
    (`ray.init(address="local", num_cpus=JOBS, ...)`), the first task (a worker process starts),
    a task that runs `true` as a subprocess (what each run adds once the workers are up), and
    `ray.shutdown()`;
  * the same study (METHODS × SEEDS at PRESET, `--jobs JOBS`) without and with `--ray`, in fresh
    folders, alternating which goes first on each repeat: wall time of the whole study and per
    run, and whether every run's records, aggregates, train log and summary are byte-identical.

The organism is built before anything is timed. On a shared machine the study times carry the
other users' load: compare the difference per run with Ray's fixed cost, which is what it should be.

    python benchmarks/bench_study_ray.py [--methods sft,rps] [--seeds 0,1] [--preset smoke]
                                         [--jobs 2] [--repeat 1] [--work DIR]

Writes WORK/study_ray.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULT_FILES = ("records.parquet", "aggregates.parquet", "train_log.parquet", "summary.json")
NOOP_TASKS = 20


def run_true() -> int:
    return subprocess.run(["true"], check=False).returncode


def ray_fixed_cost(jobs: int) -> dict[str, float]:
    """Seconds to start a local instance, run a first and then NOOP_TASKS subprocess tasks, stop it."""
    import ray

    from plasticity_bench.harness.app.study_ray import OBJECT_STORE_BYTES

    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=jobs,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    up = time.perf_counter()
    task = ray.remote(run_true).options(num_cpus=1, max_retries=0)
    ray.get(task.remote())
    first = time.perf_counter()
    ray.get([task.remote() for _ in range(NOOP_TASKS)])
    tasks = time.perf_counter()
    ray.shutdown()
    down = time.perf_counter()
    return {
        "init_s": up - started,
        "first_task_s": first - up,
        "task_ms": 1000 * (tasks - first) / NOOP_TASKS * min(jobs, NOOP_TASKS),  # per task, on one slot
        "shutdown_s": down - tasks,
    }


def study(out: Path, args: argparse.Namespace, env: dict[str, str], *more: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "plasticity_bench.harness.app.cli", "study", "--methods", args.methods]
    command += ["--seeds", args.seeds, "--preset", args.preset, "--jobs", str(args.jobs), "--out", str(out), "-q"]
    started = time.perf_counter()
    done = subprocess.run([*command, *more], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command + list(more))} failed:\n{done.stderr}")
    return time.perf_counter() - started


def identical(a: Path, b: Path, runs: list[str]) -> bool:
    return all((a / run / f).read_bytes() == (b / run / f).read_bytes() for run in runs for f in RESULT_FILES)


def build_organism(preset: str) -> None:
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.organism import ensure_organism
    from plasticity_bench.tasks.suites import load_suite

    config = load_config(preset, None, {})
    ensure_organism(config.organism, load_suite(config.suite), True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="sft,rps")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-study-ray"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(args.work / "cache"), "OMP_NUM_THREADS": "1"}
    os.environ.update(env)
    build_organism(args.preset)
    runs = [f"{m}-seed{s}" for m in args.methods.split(",") for s in args.seeds.split(",")]
    fixed = ray_fixed_cost(args.jobs)
    times: dict[str, list[float]] = {"local": [], "ray": []}
    same = True
    for repeat in range(args.repeat):
        order = ("local", "ray") if repeat % 2 == 0 else ("ray", "local")
        for name in order:
            times[name].append(study(args.work / name, args, env, *(("--ray",) if name == "ray" else ())))
        same = same and identical(args.work / "local", args.work / "ray", runs)
    result: dict[str, Any] = {"runs": len(runs), "jobs": args.jobs, "preset": args.preset, "ray": fixed}
    result.update({f"{k}_study_s": v for k, v in times.items()}, identical=same)
    (args.work / "study_ray.json").write_text(json.dumps(result, indent=2))
    print_table(result)


def print_table(result: dict[str, Any]) -> None:
    runs, fixed = result["runs"], result["ray"]
    local, ray = (min(result[f"{k}_study_s"]) for k in ("local", "ray"))
    print(f"| | seconds |\n|---|---|\n| Ray local instance start (`ray.init`) | {fixed['init_s']:.1f} |")
    print(f"| first task (a worker starts) | {fixed['first_task_s']:.2f} |")
    print(f"| each further task (runs `true`), per slot | {fixed['task_ms'] / 1000:.3f} |")
    print(f"| `ray.shutdown()` | {fixed['shutdown_s']:.1f} |")
    print(f"| study of {runs} runs, local (best of {len(result['local_study_s'])}) | {local:.1f} |")
    print(f"| the same with `--ray` | {ray:.1f} |")
    print(f"| difference per run | {(ray - local) / runs:+.1f} |")
    print(f"\nrecords, aggregates, train logs, summaries byte-identical: {result['identical']}")


if __name__ == "__main__":
    main()
