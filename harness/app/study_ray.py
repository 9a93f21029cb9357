"""`bench study --ray` / `--ray-address ADDR`: each pending run of a study as a Ray task.

The task runs the very `bench run` command the local path runs (`study.run_command`), with the
same environment (`study.one_thread_env`, taken on the driver) and working directory, its output
in the same OUT/logs/<arm>-seed<seed>.log; so the run folders, study.json, study.html and the
verdicts are those of the local path. Ray only decides where and when each run starts. Which runs
are pending, the stale-settings check and the failure message stay in `study.run_all`.

Resources per run: `--ray-cpus-per-run` CPUs (default 1; the run keeps one torch thread, as
locally, so that its numbers do not depend on where it ran) and `--ray-gpus-per-run` GPUs; by
default 1 GPU when the run's `device` is cuda, or auto on a Ray instance that has GPUs, else 0.
`--ray` starts a local instance with `--jobs` × CPUs-per-run CPUs (as many runs at once as
without Ray); `--ray-address` joins a cluster, whose free resources decide how many run at once.

On a cluster every node must see the driver's Python (the same virtual environment at the same
path), its working directory and the study folder at the same paths: a shared filesystem. A task
that finds them missing fails its run with a line saying so in the run's log.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError

INSTALL = "pip install 'plasticity-bench[ray]'"
# set by Ray in a task's worker for the devices it was given: they win over the driver's values
DEVICE_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
# a local instance's object store: the tasks pass only commands and exit codes (Ray's minimum is 75 MiB)
OBJECT_STORE_BYTES = 128 * 1024**2
REACH_SECONDS = 10.0


@dataclass(frozen=True)
class RayOptions:
    address: str | None  # None: start a local instance
    cpus_per_run: float = 1.0
    gpus_per_run: float | None = None  # None: from the run's device (module docstring)


@dataclass(frozen=True)
class RayJob:
    """One pending run, as the task sees it: everything is a plain value, so nothing of the harness
    is pickled or imported on the worker beyond this module."""

    label: str
    seed: int
    command: list[str]
    log: str
    gpus: float


def ray_options(
    use_ray: bool, address: str | None, cpus_per_run: float, gpus_per_run: float | None
) -> RayOptions | None:
    """The study's Ray settings from the command line, or None to run locally; a BenchError when
    they are wrong or Ray is not installed (before anything is built or written)."""
    if not use_ray and address is None:
        if gpus_per_run is not None or cpus_per_run != 1.0:
            raise BenchError("--ray-cpus-per-run and --ray-gpus-per-run need --ray or --ray-address ADDR")
        return None
    if use_ray and address is not None:
        raise BenchError("give --ray (a local Ray instance) or --ray-address ADDR (a cluster), not both")
    if cpus_per_run <= 0:
        raise BenchError(f"--ray-cpus-per-run must be above 0, got {cpus_per_run}")
    if gpus_per_run is not None and gpus_per_run < 0:
        raise BenchError(f"--ray-gpus-per-run must be 0 or more, got {gpus_per_run}")
    import_ray()
    return RayOptions(address, cpus_per_run, gpus_per_run)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BenchError(f"bench study --ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def run_gpus(options: RayOptions, device: str, cluster_gpus: float) -> float:
    """GPUs one run asks Ray for: the user's number, else 1 for a run that trains on a GPU."""
    if options.gpus_per_run is not None:
        return options.gpus_per_run
    return 1.0 if device == "cuda" or (device == "auto" and cluster_gpus > 0) else 0.0


def check_reachable(address: str) -> None:
    """Ray retries an address that answers nothing for minutes, printing as it goes: try it once first."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return  # Ray's own forms (auto: the cluster this machine belongs to) and its own errors
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except OSError as error:
        raise BenchError(
            f"study: nothing answers at --ray-address {address} ({error}); is the Ray head running?"
        ) from None


def start(ray: Any, options: RayOptions, jobs: int) -> None:
    """Start a local instance or join the cluster; Ray's own logs stay in its temporary folder
    (RAY_TMPDIR, or Ray's default temporary folder), not in the study folder, and off the terminal."""
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if options.address is None:
            cpus = max(1, math.ceil(jobs * options.cpus_per_run))
            ray.init(address="local", num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES, **quiet)
        else:
            check_reachable(options.address)
            ray.init(address=options.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = "start a local Ray instance" if options.address is None else f"reach Ray at {options.address}"
        raise BenchError(f"study: could not {where}: {first_line(error)}") from None


def check_fits(ray: Any, options: RayOptions, jobs: Sequence[RayJob]) -> None:
    """A run that asks for more than the whole instance has would wait for ever: refuse it now."""
    have = ray.cluster_resources()
    for job in jobs:
        for name, need in (("CPU", options.cpus_per_run), ("GPU", job.gpus)):
            if need > have.get(name, 0.0):
                flag = f"--ray-{name.lower()}s-per-run"
                raise BenchError(
                    f"study: each run asks Ray for {need:g} {name}(s) but the Ray instance has "
                    f"{have.get(name, 0.0):g}; lower {flag} or add nodes with {name}s"
                )


def run_logged(job: RayJob, cwd: str, env: dict[str, str]) -> int:
    """The task: `bench run` with its output in its log, the driver's environment and working folder,
    and the devices Ray gave this task; its exit code."""
    env = {k: v for k, v in env.items() if k not in DEVICE_VARS}
    env.update({k: os.environ[k] for k in DEVICE_VARS if k in os.environ})
    with open(job.log, "w", encoding="utf-8") as handle:
        missing = [p for p in (job.command[0], cwd) if not os.path.exists(p)]
        if missing:  # a node that does not share the driver's files
            handle.write(f"ray: {missing[0]} does not exist on {os.uname().nodename}; every node must see it\n")
            return 2
        return subprocess.run(job.command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def results(ray: Any, jobs: Sequence[RayJob], cpus: float, env: dict[str, str]) -> Iterator[tuple[str, int, int]]:
    """Submit every job, then (arm, seed, exit code) in the order given, as the local path reports
    them. A task that Ray itself could not run (its worker died, say) counts as a failed run
    whose log ends with Ray's error."""
    task = ray.remote(run_logged)
    refs = [task.options(num_cpus=cpus, num_gpus=job.gpus, max_retries=0).remote(job, os.getcwd(), env) for job in jobs]
    for job, ref in zip(jobs, refs):
        try:
            code = ray.get(ref)
        except ray.exceptions.RayError as error:
            with open(job.log, "a", encoding="utf-8") as handle:
                handle.write(f"ray: the task failed: {first_line(error)}\n")
            code = -1
        yield job.label, job.seed, code


def study_jobs(
    pending: Sequence[tuple[str, int]],
    arms: dict[str, dict[str, Any]],
    out: Path,
    preset: str,
    suite: str | None,
    configs: dict[str, Path | None],
) -> list[tuple[RayJob, str]]:
    """Each pending run as a job (its GPUs still to be decided) and its configured device."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.study import LOGS, run_command, run_name

    jobs = []
    for label, seed in pending:
        method = arms[label]["method"]
        config = load_config(preset, configs[label], {"method": method, "seed": seed, "suite": suite})
        command = run_command(label, method, seed, out, preset, suite, configs[label])
        log = (out / LOGS / f"{run_name(label, seed)}.log").resolve()
        jobs.append((RayJob(label, seed, command, str(log), 0.0), config.device))
    return jobs


@contextmanager
def connected(options: RayOptions | None, jobs: int) -> Iterator[dict[str, str]]:
    """Start a local instance or join the cluster before the study builds or writes anything (a wrong
    address costs nothing, not the organisms' pre-training), and stop or leave it at the end. Yields
    the environment every run gets (`study.one_thread_env`), taken before Ray adds its own variables
    to this process; without Ray, that environment alone."""
    from plasticity_bench.harness.app.study import one_thread_env

    env = one_thread_env()
    if options is None:
        yield env
        return
    ray = import_ray()
    start(ray, options, jobs)
    try:
        yield env
    finally:
        ray.shutdown()


def run_on_ray(
    options: RayOptions,
    pending: Sequence[tuple[str, int]],
    arms: dict[str, dict[str, Any]],
    out: Path,
    preset: str,
    suite: str | None,
    configs: dict[str, Path | None],
    env: dict[str, str],
) -> Iterator[tuple[str, int, int]]:
    """(arm, seed, exit code) of every pending run of `study.run_all`, each a Ray task, on the
    instance `connected` started or joined."""
    if not pending:
        return
    jobs = study_jobs(pending, arms, out, preset, suite, configs)
    ray = import_ray()
    gpus = ray.cluster_resources().get("GPU", 0.0)
    tasks = [replace(job, gpus=run_gpus(options, device, gpus)) for job, device in jobs]
    check_fits(ray, options, tasks)
    yield from results(ray, tasks, options.cpus_per_run, env)
