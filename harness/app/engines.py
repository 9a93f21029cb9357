"""Several generation engines over one sweep: `bench eval --engines N` and a run's `engines: N`.

The checkpoints still to generate are shared out over N independent engines, each one a backend
(for vLLM, one engine started once and swapped from checkpoint to checkpoint) in a process of its
own, taking the next checkpoint as it finishes one. Every engine generates exactly what one engine
would: the prompts, the sampling settings and the seeds come from the run (`SamplingParams.seed`
is the run's seed at every checkpoint, never the engine's), and each engine computes with the
torch thread count the main process has. The engines send their rows back; only the main process
writes the run folder, one `generations/step-N.parquet` per checkpoint as it arrives, so the files
are those of one engine and an interrupted sweep resumes like any other.

Where the engines run:
- on a CUDA machine with Ray installed (the `ray` extra): one Ray actor per engine, holding one GPU
  (vLLM's `tensor_parallel_size` GPUs);
- otherwise one spawned process per engine, on a CUDA machine each with its own
  `CUDA_VISIBLE_DEVICES` share of the GPUs, on a CPU plain processes sharing the cores.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasticity_bench.harness.app.stages.generate import checkpoint_rows, generate_all, generation_groups
from plasticity_bench.harness.app.stages.prompts import write_prompts
from plasticity_bench.harness.backends import BACKENDS, BackendPool, GenerationBackend
from plasticity_bench.harness.backends.auto import BackendChoice
from plasticity_bench.harness.backends.checkpoint import TensorShapes, check_same_tensors, read_tensor_shapes
from plasticity_bench.harness.core.errors import BenchError, warn
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.store import RunStore, checkpoint_dir, read_manifest
from plasticity_bench.tasks.base import Item
from plasticity_bench.tasks.suites import Suite

POLL_SECONDS = 1.0  # how often the main process checks that every engine process is still alive


def check_engines(engines: int, what: str = "--engines") -> int:
    """N generation engines: a positive whole number."""
    if isinstance(engines, bool) or not isinstance(engines, int) or engines < 1:
        raise BenchError(f"{what} must be a positive number of generation engines, got {engines!r}")
    return engines


@dataclass(frozen=True)
class EngineJob:
    """Everything an engine needs, sent to it once (pickled): it reads nothing of the run folder."""

    backend: str
    settings: dict[str, Any]  # the backend's constructor arguments (a run's `vllm:` settings)
    suite: Suite
    items: list[Item]
    prompts: dict[str, str]
    seed: int
    threads: int  # torch threads: the main process's, so the arithmetic is that of one engine
    first: str  # the sweep's first checkpoint: every other must store the same tensors
    reference: TensorShapes = field(repr=False)


@dataclass(frozen=True)
class Generated:
    """One checkpoint's rows from one engine, with what that engine reports about itself."""

    engine: int
    step: int
    rows: list[dict[str, Any]]
    engines_started: int
    engine_settings: dict[str, Any]
    timing: dict[str, float]  # this engine's seconds so far: start, load (weights swapped in), generate; checkpoints


@dataclass(frozen=True)
class Failed:
    engine: int
    step: int
    error: BaseException


@dataclass(frozen=True)
class Closed:
    engine: int


class Engine:
    """One backend generating the job's items at the checkpoints it is given (in a process or a Ray actor)."""

    def __init__(self, job: EngineJob, index: int = 0, launched: float | None = None) -> None:
        """`launched`: when the main process started this engine's process (its start time counts from there)."""
        import torch

        torch.set_num_threads(job.threads)
        self.job, self.index = job, index
        self.groups = generation_groups(job.suite, job.items)
        self.backend: GenerationBackend = BACKENDS.get(job.backend)(**job.settings)
        start = max(0.0, time.time() - launched) if launched is not None else 0.0
        self.timing = {"start": start, "load": 0.0, "generate": 0.0, "checkpoints": 0}

    def generate_at(self, step: int, model_dir: str) -> Generated:
        folder = Path(model_dir)
        check_same_tensors(folder, self.job.reference, Path(self.job.first))
        began, engines_before = time.time(), self.backend.engines_started
        self.backend.load(folder)
        loaded = time.time()
        # a vLLM engine starts at its first checkpoint: that load is the engine's start, the later ones swaps
        self.timing["start" if self.backend.engines_started > engines_before else "load"] += loaded - began
        rows = checkpoint_rows(self.backend, folder, self.job.suite, self.groups, self.job.prompts, self.job.seed)
        self.timing["generate"] += time.time() - loaded
        self.timing["checkpoints"] += 1
        started, settings = self.backend.engines_started, self.backend.engine_settings()
        return Generated(self.index, step, rows, started, settings, {k: round(v, 2) for k, v in self.timing.items()})

    def close(self) -> None:
        self.backend.close()


def generate_spread(
    store: RunStore, suite: Suite, choice: BackendChoice, backends: BackendPool, seed: int, quiet: bool, engines: int
) -> None:
    """The generate stage's work (as stages/generate.py's `generate_all`) shared over `engines` engines."""
    checkpoints = read_manifest(store.checkpoints)
    pending = [(r.step, str(checkpoint_dir(store, r))) for r in checkpoints]
    pending = [(step, folder) for step, folder in pending if not store.generation_file(step).exists()]
    count = engine_count(engines, len(pending))
    if count == 1:  # one checkpoint left: the ordinary stage, in this process
        generate_all(store, suite, choice, backends.get(choice.name), seed, quiet)
        return
    job = engine_job(store, suite, choice, backends, seed)
    store.update_metadata(backend=choice.name, backend_reason=choice.reason)
    backends.close()  # an engine training's rollouts started would hold the memory the N engines need
    free_cached_gpu_memory()
    reports: dict[int, Generated] = {}
    with progress_bar(len(checkpoints), f"generating ({choice.name}, {count} engines)", quiet) as advance:
        advance(n=len(checkpoints) - len(pending))

        def done(result: Generated) -> None:
            store.write_generations(result.step, result.rows)
            reports[result.engine] = result  # its latest: what the engine reports about itself so far
            advance()

        run_engines(job, pending, count, gpus_per_engine(job.backend, job.settings), done)
    started = sum(report.engines_started for report in reports.values())
    timings = [{"engine": i, **reports[i].timing} for i in sorted(reports)]  # where the time went, engine by engine
    store.update_metadata(generation_engines=count, engines_started=started, engine_timings=timings)
    settings_seen = [report.engine_settings for report in reports.values() if report.engine_settings]
    if settings_seen:  # what the engines report they ran with (the same settings for each)
        store.update_metadata(engine_settings=settings_seen[0])


def free_cached_gpu_memory() -> None:
    """Give back the GPU memory torch keeps cached in this process (training's), for the engines."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def engine_job(store: RunStore, suite: Suite, choice: BackendChoice, backends: BackendPool, seed: int) -> EngineJob:
    """What every engine is sent: the backend and its settings, the items, their prompts (written to the
    run folder here, as one engine does) and the first checkpoint's tensors to check the others against."""
    import torch

    items = store.items()
    first = checkpoint_dir(store, read_manifest(store.checkpoints)[0])
    prompts = write_prompts(store, suite, items, first, seed)
    settings = dict(backends.settings.get(choice.name, {}))
    threads = torch.get_num_threads()
    return EngineJob(choice.name, settings, suite, items, prompts, seed, threads, str(first), read_tensor_shapes(first))


def engine_count(engines: int, pending: int) -> int:
    """Engines to start: never more than checkpoints left to generate (said on stderr when capped)."""
    if 0 < pending < engines:
        warn(f"{engines} engines asked for, {pending} checkpoint(s) to generate: {pending} engine(s) start")
    return max(1, min(engines, pending))


def gpus_per_engine(backend: str, settings: dict[str, Any]) -> int:
    """GPUs one engine holds: vLLM's tensor parallel size, else one."""
    return int(settings.get("tensor_parallel_size", 1)) if backend == "vllm" else 1


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them ([] on a CPU)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named[:count] if named else [str(i) for i in range(count)]


def run_engines(
    job: EngineJob, pending: Sequence[tuple[int, str]], count: int, per_engine: int, done: Callable[[Generated], None]
) -> None:
    """Generate at every pending checkpoint over `count` engines, calling `done` in this process for each."""
    if not pending:
        return
    gpus = visible_gpus()
    if gpus and len(gpus) < count * per_engine:
        raise BenchError(
            f"--engines {count} needs {count * per_engine} GPUs ({per_engine} per engine), "
            f"this machine shows {len(gpus)}: use --engines {max(1, len(gpus) // per_engine)}"
        )
    if engine_runner(gpus) == "ray":
        run_ray_actors(job, pending, count, per_engine if gpus else 0, done)
        return
    shares = [",".join(gpus[i * per_engine : (i + 1) * per_engine]) for i in range(count)] if gpus else [None] * count
    run_processes(job, pending, shares, done)


def engine_runner(gpus: Sequence[str]) -> str:
    """`ray` (actors) on GPUs where Ray is installed, else `processes`; PLASTICITY_BENCH_ENGINE_RUNNER
    (ray or processes) chooses by hand, e.g. Ray actors on a CPU cluster."""
    import importlib.util

    chosen = os.environ.get("PLASTICITY_BENCH_ENGINE_RUNNER", "")
    if chosen not in ("", "ray", "processes"):
        raise BenchError(f"PLASTICITY_BENCH_ENGINE_RUNNER must be ray or processes, got {chosen!r}")
    installed = importlib.util.find_spec("ray") is not None
    if chosen == "ray" and not installed:
        raise BenchError("PLASTICITY_BENCH_ENGINE_RUNNER=ray needs Ray: pip install 'plasticity-bench[ray]'")
    return chosen or ("ray" if gpus and installed else "processes")


# ------------------------------------------------------------------ engines as spawned processes


def engine_process(job: EngineJob, index: int, launched: float, tasks: Any, results: Any, stop: Any) -> None:
    """An engine process: takes checkpoints until the queue's end marker (or a stop), sends each one's rows."""
    engine: Engine | None = None
    try:
        engine = Engine(job, index, launched)
        while not stop.is_set() and (task := tasks.get()) is not None:
            step, model_dir = task
            try:
                results.put(engine.generate_at(step, model_dir))
            except BaseException as error:  # sent to the main process, which raises it
                results.put(Failed(index, step, picklable(error)))
                return
    except BaseException as error:  # the engine did not start (e.g. vLLM missing or out of memory)
        results.put(Failed(index, -1, picklable(error)))
    finally:
        if engine is not None:
            engine.close()
        results.put(Closed(index))


def picklable(error: BaseException) -> BaseException:
    """The error itself where it can travel between processes, else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def run_processes(
    job: EngineJob, pending: Sequence[tuple[int, str]], shares: Sequence[str | None], done: Callable[[Generated], None]
) -> None:
    """One spawned process per engine (spawn: vLLM and CUDA cannot be forked), each given its GPU share."""
    context = multiprocessing.get_context("spawn")
    tasks, results, stop = context.Queue(), context.Queue(), context.Event()
    for task in pending:
        tasks.put(task)
    for _ in shares:
        tasks.put(None)
    processes: list[Any] = []
    with engine_processes(processes):
        for index, share in enumerate(shares):
            with gpu_share(share):
                arguments = (job, index, time.time(), tasks, results, stop)
                process = context.Process(target=engine_process, args=arguments)
                process.start()
            processes.append(process)
        collect(results, processes, stop, done)


@contextmanager
def gpu_share(share: str | None) -> Iterator[None]:
    """CUDA_VISIBLE_DEVICES for a process started inside (a spawned process copies the environment)."""
    if share is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = share
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


@contextmanager
def engine_processes(processes: list[Any]) -> Iterator[None]:
    """End every engine process on the way out, whatever happened (an error, Ctrl-C)."""
    try:
        yield
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()


def collect(results: Any, processes: Sequence[Any], stop: Any, done: Callable[[Generated], None]) -> None:
    """Every engine's messages until all have closed; the first failure stops the others and is raised."""
    open_engines, failure = set(range(len(processes))), None
    while open_engines:
        try:
            message = results.get(timeout=POLL_SECONDS)
        except queue.Empty:
            dead = [i for i in open_engines if not processes[i].is_alive() and processes[i].exitcode != 0]
            if dead:
                stop.set()
                code = processes[dead[0]].exitcode
                raise BenchError(f"generation engine {dead[0]} stopped unexpectedly (exit status {code})") from None
            continue
        if isinstance(message, Generated):  # kept even after a failure elsewhere: a re-run resumes after it
            done(message)
        elif isinstance(message, Failed) and failure is None:
            failure = message
            stop.set()
        elif isinstance(message, Closed):
            open_engines.discard(message.engine)
    if failure is not None:
        raise failure.error


# ------------------------------------------------------------------ engines as Ray actors (GPUs)


def run_ray_actors(
    job: EngineJob, pending: Sequence[tuple[int, str]], count: int, per_engine: int, done: Callable[[Generated], None]
) -> None:
    """One Ray actor per engine holding `per_engine` GPUs (Ray sets each actor's CUDA_VISIBLE_DEVICES);
    a running Ray instance is used (RAY_ADDRESS), else a local one is started for the sweep."""
    import ray
    from ray.util import ActorPool

    started_here = not ray.is_initialized()
    if started_here:  # "local": a new instance, never one some other program left running on this machine
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False)
    actor_class: Any = ray.remote(num_gpus=per_engine)(Engine)
    actors: list[Any] = [actor_class.remote(job, index, time.time()) for index in range(count)]
    try:
        pool = ActorPool(actors)
        for result in pool.map_unordered(lambda actor, task: actor.generate_at.remote(*task), list(pending)):
            done(result)
    except ray.exceptions.RayTaskError as error:
        raise error.cause if isinstance(error.cause, BenchError) else error from None
    finally:
        ray.get([actor.close.remote() for actor in actors], timeout=60)
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
