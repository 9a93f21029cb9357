"""`bench study`: every method × seed as an ordinary run folder OUT/<method>-seed<seed>, run as
parallel `bench run` processes (one torch thread each), then one comparison report.

Resumable: a run whose run.json says every stage is done is skipped; any other is handed to
`bench run` again, which resumes it in the same folder. Each process's output goes to
OUT/logs/<method>-seed<seed>.log. The organism is built once, before the runs start, so parallel
runs never build it side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.core.errors import BenchError
from harness.store import RUN_FILE, STAGES

LOGS = "logs"


def parse_list(text: str, what: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise BenchError(f"--{what} must name at least one, comma-separated, got {text!r}")
    if len(set(parts)) != len(parts):
        raise BenchError(f"--{what} names one twice: {text!r}")
    return parts


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(p) for p in parse_list(text, "seeds")]
    except ValueError:
        raise BenchError(f"--seeds must be comma-separated integers, got {text!r}") from None


def run_done(folder: Path) -> bool:
    try:
        stages = json.loads((folder / RUN_FILE).read_text()).get("stages", {})
    except (OSError, ValueError):
        return False
    return all(stages.get(stage, {}).get("done") for stage in STAGES)


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def run_command(method: str, seed: int, out: Path, preset: str, suite: str | None, config: Path | None) -> list[str]:
    command = [sys.executable, "-m", "harness.app.cli", "run", "--method", method, "--seed", str(seed), "--preset", preset,
               "--out", str(out / run_name(method, seed)), "-q"]
    if suite:
        command += ["--suite", suite]
    if config:
        command += ["--config", str(config)]
    return command


def one_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_all(methods: Sequence[str], seeds: Sequence[int], out: Path, preset: str, suite: str | None, config: Path | None, jobs: int,
            echo: Callable[[str], None]) -> dict[str, list[tuple[int, Path]]]:
    """Run (or resume, or skip) every method × seed; method → [(seed, folder)]. A failed run is a
    BenchError naming it and its log, after the others have finished."""
    (out / LOGS).mkdir(parents=True, exist_ok=True)
    pending = [(m, s) for m in methods for s in seeds if not run_done(out / run_name(m, s))]
    for m in methods:
        for s in seeds:
            if (m, s) not in pending:
                echo(f"{run_name(m, s)}: done, skipped")

    def work(job: tuple[str, int]) -> tuple[str, int, int]:
        method, seed = job
        log = out / LOGS / f"{run_name(method, seed)}.log"
        with open(log, "w", encoding="utf-8") as handle:
            done = subprocess.run(run_command(method, seed, out, preset, suite, config), stdout=handle, stderr=subprocess.STDOUT,
                                  env=one_thread_env(), check=False)
        return method, seed, done.returncode

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for method, seed, code in pool.map(work, pending):
            echo(f"{run_name(method, seed)}: {'finished' if code == 0 else f'failed (exit {code})'}")
            if code != 0:
                failed.append((method, seed, code))
    if failed:
        method, seed, code = failed[0]
        log = out / LOGS / f"{run_name(method, seed)}.log"
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() if log.is_file() else []
        last = lines[-1] if lines else "no output"
        raise BenchError(f"study: {len(failed)} of {len(methods) * len(seeds)} runs failed, e.g. {run_name(method, seed)} (exit {code}: {last}); "
                         f"see {log}; re-run the same command to resume")
    return {m: [(s, out / run_name(m, s)) for s in seeds] for m in methods}


def study(methods_text: str, seeds_text: str, out: Path, preset: str, suite: str | None, config: Path | None, jobs: int,
          claims_file: Path | None, echo: Callable[[str], None], quiet: bool = True) -> tuple[Path, Path]:
    """Validate everything, build the organism once, run every method × seed, write the report."""
    import trainers
    from harness.app.config import load_config
    from harness.app.organism import ensure_organism
    from harness.evaluation.claims import SHIPPED_CLAIMS, load_claims
    from reports.study import METRICS, write_study
    from tasks.suites import load_suite

    methods, seeds = parse_list(methods_text, "methods"), parse_seeds(seeds_text)
    for method in methods:
        trainers.TRAINERS.get(method)  # unknown: a BenchError naming the known ones
    if jobs < 1:
        raise BenchError(f"--jobs must be at least 1, got {jobs}")
    claims = load_claims(SHIPPED_CLAIMS, METRICS)
    if claims_file is not None:
        claims += load_claims(claims_file, METRICS)
    run_config = load_config(preset, config, {"suite": suite})
    if not run_config.model:
        ensure_organism(run_config.organism, load_suite(run_config.suite), quiet)
    run_dirs = run_all(methods, seeds, out, preset, suite, config, jobs, echo)
    return write_study(out, run_dirs, claims)
