"""`bench study --organism-seeds 0,1,2`: every arm × organism × post-training seed (docs/studies.md).

Each arm is crossed with the organisms as arms of its own, `<arm>-o<S>` with `organism_seed: S` on top of the
arm's settings, so the runs are ordinary `bench run`s in OUT/<arm>-o<S>-seed<seed> (each records its organism
and seed in run.json) and the study's runner, resuming and Ray included, needs nothing new. The organisms are
pre-trained before the runs, `--jobs` at a time (each single-threaded: harness/app/organism_family.py), so
parallel runs never build one side by side. The report regroups the runs by arm and reads each run's organism
from its run.json: the claims' intervals then treat organisms as the sampling unit (reports/study.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError

ORGANISM_SETTING = "organism_seed"


def parse_organism_seeds(text: str | None) -> list[int] | None:
    """--organism-seeds 0,1,2: distinct integers >= 0; None when not given (the preset's organism)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise BenchError(f"--organism-seeds must be comma-separated integers >= 0, e.g. 0,1,2; got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"--organism-seeds names one twice: {text!r}")
    return seeds


def member_label(label: str, organism: int) -> str:
    return f"{label}-o{organism}"


def cross_arms(arms: Mapping[str, dict[str, Any]], organisms: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Every arm × organism as an arm `<arm>-o<S>` of its own, its settings plus `organism_seed: S`; arm-major,
    so a study stopped early has every organism of its first arms rather than one organism of every arm."""
    crossed = {}
    for label, settings in arms.items():
        if ORGANISM_SETTING in settings:
            raise BenchError(f"arm {label!r} sets organism_seed itself; --organism-seeds gives every arm each organism")
        for organism in organisms:
            crossed[member_label(label, organism)] = {**settings, ORGANISM_SETTING: organism}
    return crossed


def regroup(
    run_dirs: Mapping[str, Sequence[tuple[int, Path]]], arms: Sequence[str], organisms: Sequence[int]
) -> dict[str, list[tuple[int, Path]]]:
    """The crossed arms' runs back under their arm: arm → [(seed, folder)], organism by organism."""
    return {label: [run for o in organisms for run in run_dirs[member_label(label, o)]] for label in arms}


def build_member(preset: str, config: Path | None, suite: str | None, organism: int) -> str:
    """In a worker process: organism `organism` of the study's preset, pre-trained here unless cached."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.organism_family import starting_organism
    from plasticity_bench.tasks.suites import load_suite

    run_config = load_config(preset, config, {"suite": suite, ORGANISM_SETTING: organism})
    return str(starting_organism(run_config.organism, load_suite(run_config.suite), organism, quiet=True))


def build_organisms(
    organisms: Sequence[int],
    preset: str,
    config: Path | None,
    suite: str | None,
    jobs: int,
    echo: Callable[[str], None],
) -> None:
    """Pre-train every organism of the family this CPU has not cached yet, `jobs` at a time."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.organism_family import family_path
    from plasticity_bench.tasks.suites import load_suite

    missing = []
    for organism in organisms:
        run_config = load_config(preset, config, {"suite": suite, ORGANISM_SETTING: organism})
        if not (family_path(run_config.organism, load_suite(run_config.suite)) / "config.json").exists():
            missing.append(organism)
    if not missing:
        return
    echo(f"pre-training organism(s) {', '.join(map(str, missing))} on this CPU, {min(jobs, len(missing))} at a time")
    with ProcessPoolExecutor(max_workers=min(jobs, len(missing)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(build_member, preset, config, suite, organism) for organism in missing]
        for organism, future in zip(missing, futures):
            echo(f"organism {organism}: {future.result()}")
