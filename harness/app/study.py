"""`bench study`: every arm × seed as an ordinary run folder OUT/<arm>-seed<seed>, run as
parallel `bench run` processes (one torch thread each), then one comparison report.

An arm is a method (`--methods sft,rps`) or a labelled variant from an arms file (`--arms FILE`):
a YAML mapping of label → settings that name the method and override any run setting for that
arm, e.g. `sft-low-lr: {method: sft, lr: 1e-4}` or `sft-lora: {method: sft, lora: {r: 8}}`. Each
arm's settings are written to OUT/arms/<arm>.yaml (on top of --config) and handed to `bench run`.

Resumable: a run whose run.json says every stage is done is skipped; any other is handed to
`bench run` again, which resumes it in the same folder. Each process's output goes to
OUT/logs/<arm>-seed<seed>.log. The organism is built once, before the runs start, so parallel
runs never build it side by side.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from plasticity_bench.harness.app.study_family import build_organisms, cross_arms, parse_organism_seeds, regroup
from plasticity_bench.harness.app.study_ray import RayOptions, connected, run_on_ray
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import STAGES, RunStore

LOGS, ARMS = "logs", "arms"
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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


def read_arms(path: Path) -> dict[str, dict[str, Any]]:
    """An arms file: label → run settings naming the method (see the module docstring)."""
    from plasticity_bench.harness.app.config import read_config_file

    arms = read_config_file(path)
    if not arms:
        raise BenchError(f"arms file {path} names no arm; write label: {{method: sft, lr: 1e-4}}")
    for label, settings in arms.items():
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise BenchError(f"arms file {path}: arm label {label!r} must be letters, digits, '.', '_' or '-'")
        if not isinstance(settings, dict) or not isinstance(settings.get("method"), str):
            raise BenchError(
                f"arms file {path}: arm {label!r} must be a mapping that names its method, "
                "e.g. {method: sft, lr: 1e-4}"
            )
    return arms


def study_arms(methods_text: str | None, arms_file: Path | None) -> dict[str, dict[str, Any]]:
    """Every arm: the --methods (each its own label, no overrides) then the arms file's."""
    if methods_text is None and arms_file is None:
        raise BenchError("bench study needs --methods, --arms or both")
    arms: dict[str, dict[str, Any]] = (
        {m: {"method": m} for m in parse_list(methods_text, "methods")} if methods_text is not None else {}
    )
    for label, settings in (read_arms(arms_file) if arms_file is not None else {}).items():
        if label in arms:
            raise BenchError(f"arm {label!r} is both in --methods and in {arms_file}")
        arms[label] = settings
    return arms


def arm_config(label: str, settings: dict[str, Any], folder: Path, config: Path | None) -> Path:
    """FOLDER/<label>.yaml: --config's settings, then the arm's (the method goes on the command line)."""
    from plasticity_bench.harness.app.config import merge_settings, read_config_file

    values = read_config_file(config) if config is not None else {}
    merge_settings(values, {k: v for k, v in settings.items() if k != "method"})
    path = folder / f"{label}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(values, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def run_done(folder: Path) -> bool:
    """Whether the run folder holds a run with every stage done (anything else is handed to `bench run`)."""
    store = RunStore(folder)
    try:
        return all(store.stage_done(stage) for stage in STAGES)
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def run_name(label: str, seed: int) -> str:
    return f"{label}-seed{seed}"


def run_command(
    label: str, method: str, seed: int, out: Path, preset: str, suite: str | None, config: Path | None
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "plasticity_bench.harness.app.cli",
        "run",
        "--method",
        method,
        "--seed",
        str(seed),
        "--preset",
        preset,
        "--out",
        str(out / run_name(label, seed)),
        "-q",
    ]
    if suite:
        command += ["--suite", suite]
    if config:
        command += ["--config", str(config)]
    return command


def one_thread_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def check_not_stale(
    finished: Sequence[tuple[str, int]],
    arms: dict[str, dict[str, Any]],
    out: Path,
    preset: str,
    suite: str | None,
    configs: dict[str, Path | None],
) -> None:
    """BenchError when a finished run folder holds a run with other settings than its arm asks for
    today (say, a method's default changed since): it would be skipped and silently mixed in."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.stages.prepare import run_fingerprint, with_method_defaults
    from plasticity_bench.tasks.suites import load_suite

    stale = []
    for label, seed in finished:
        config = with_method_defaults(
            load_config(preset, configs[label], {"method": arms[label]["method"], "seed": seed, "suite": suite})
        )
        recorded = RunStore.open(out / run_name(label, seed)).metadata().get("fingerprint")
        if recorded != run_fingerprint(config, load_suite(config.suite)):
            stale.append(run_name(label, seed))
    if stale:
        raise BenchError(
            f"study: {len(stale)} finished run folder(s) hold runs with other settings than their arm's today, e.g. "
            f"{out / stale[0]}; delete them to re-run, or choose another --out"
        )


def checked_arm_configs(
    arms: dict[str, dict[str, Any]],
    finished: Sequence[tuple[str, int]],
    out: Path,
    preset: str,
    suite: str | None,
    config: Path | None,
) -> dict[str, Path | None]:
    """Each arm's settings file in OUT/arms, written only once the finished runs are found to match
    them: a refused study leaves the files its runs were made with (they are written to a staging
    folder first, checked, then moved into place)."""
    staging = out / ARMS / ".checking"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        staged = {
            label: arm_config(label, settings, staging, config) if set(settings) - {"method"} else config
            for label, settings in arms.items()
        }
        check_not_stale(finished, arms, out, preset, suite, staged)
        return {
            label: settle(path, out / ARMS) if path is not None and path.parent == staging else path
            for label, path in staged.items()
        }
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def settle(path: Path, folder: Path) -> Path:
    """`path` moved into `folder`, leaving a file with the same text untouched (its time stays)."""
    target = folder / path.name
    if target.is_file() and target.read_text() == path.read_text():
        return target
    os.replace(path, target)
    return target


def run_all(
    arms: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    out: Path,
    preset: str,
    suite: str | None,
    config: Path | None,
    jobs: int,
    echo: Callable[[str], None],
    env: dict[str, str],
    ray: RayOptions | None = None,
) -> dict[str, list[tuple[int, Path]]]:
    """Run (or resume, or skip) every arm × seed, on local processes with environment `env` or as Ray
    tasks (`ray`, on the instance `study_ray.connected` started); arm → [(seed, folder)]. A failed run
    is a BenchError naming it and its log, after the others have finished."""
    (out / LOGS).mkdir(parents=True, exist_ok=True)
    pending = [(a, s) for a in arms for s in seeds if not run_done(out / run_name(a, s))]
    finished = [(a, s) for a in arms for s in seeds if (a, s) not in pending]
    configs = checked_arm_configs(arms, finished, out, preset, suite, config)
    for a in arms:
        for s in seeds:
            if (a, s) not in pending:
                echo(f"{run_name(a, s)}: done, skipped")

    def work(job: tuple[str, int]) -> tuple[str, int, int]:
        label, seed = job
        log = out / LOGS / f"{run_name(label, seed)}.log"
        with open(log, "w", encoding="utf-8") as handle:
            command = run_command(label, arms[label]["method"], seed, out, preset, suite, configs[label])
            done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
        return label, seed, done.returncode

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = run_on_ray(ray, pending, arms, out, preset, suite, configs, env) if ray else pool.map(work, pending)
        for method, seed, code in runs:
            echo(f"{run_name(method, seed)}: {'finished' if code == 0 else f'failed (exit {code})'}")
            if code != 0:
                failed.append((method, seed, code))
    if failed:
        method, seed, code = failed[0]
        log = out / LOGS / f"{run_name(method, seed)}.log"
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() if log.is_file() else []
        last = lines[-1] if lines else "no output"
        raise BenchError(
            f"study: {len(failed)} of {len(arms) * len(seeds)} runs failed, e.g. {run_name(method, seed)} "
            f"(exit {code}: {last}); "
            f"see {log}; re-run the same command to resume"
        )
    return {a: [(s, out / run_name(a, s)) for s in seeds] for a in arms}


def study(
    methods_text: str | None,
    seeds_text: str,
    out: Path,
    preset: str,
    suite: str | None,
    config: Path | None,
    jobs: int,
    claims_file: Path | None,
    echo: Callable[[str], None],
    quiet: bool = True,
    arms_file: Path | None = None,
    ray: RayOptions | None = None,
    organisms_text: str | None = None,
) -> tuple[Path, Path]:
    """Validate everything, build the organism once (or each organism of --organism-seeds), run every
    arm × seed (× organism), write the report."""
    import plasticity_bench.trainers
    from plasticity_bench.harness.app.config import load_config, method_options
    from plasticity_bench.harness.app.organism import ensure_organism
    from plasticity_bench.harness.evaluation.claims import SHIPPED_CLAIMS, load_claims
    from plasticity_bench.reports.study import CLAIM_METRICS, write_study
    from plasticity_bench.tasks.suites import load_suite

    arms, seeds = study_arms(methods_text, arms_file), parse_seeds(seeds_text)
    organisms, labels = parse_organism_seeds(organisms_text), list(arms)
    if organisms is not None:  # arm × organism as arms <arm>-o<S>: harness/app/study_family.py
        arms = cross_arms(arms, organisms)
    for label, settings in arms.items():
        trainer = plasticity_bench.trainers.TRAINERS.get(settings["method"])  # unknown: a BenchError naming them
        where = f"arm {label!r}: " if label != settings["method"] else ""
        try:  # the method's options too: a bad one must not wait for the organism and the arm's run
            arm = load_config(preset, config, {**{k: v for k, v in settings.items() if k != "method"}, "suite": suite})
            method_options(trainer.Options, arm.options, settings["method"])
        except BenchError as error:
            raise BenchError(f"{where}{error}") from None
    if jobs < 1:
        raise BenchError(f"--jobs must be at least 1, got {jobs}")
    claims = load_claims(SHIPPED_CLAIMS, CLAIM_METRICS)
    if claims_file is not None:
        claims += load_claims(claims_file, CLAIM_METRICS)
    run_config = load_config(preset, config, {"suite": suite})
    with connected(ray, jobs) as env:
        if not run_config.model and organisms is not None:
            build_organisms(organisms, preset, config, suite, jobs, echo)
        elif not run_config.model:
            ensure_organism(run_config.organism, load_suite(run_config.suite), quiet)
        run_dirs = run_all(arms, seeds, out, preset, suite, config, jobs, echo, env, ray)
    if organisms is not None:
        run_dirs = regroup(run_dirs, labels, organisms)
    return write_study(out, run_dirs, claims)
