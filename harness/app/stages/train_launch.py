"""The train stage under N processes (`num_processes: N`, `bench run --num-processes N`): the run's
own process starts N training processes with torchrun or `accelerate launch`, waits for them, and
goes on with the run (kl, generate, score, report) itself.

Each training process is `python -m plasticity_bench.harness.app.stages.train_worker` (train_worker.py):
it reads the settings this process hands it and the run folder the prepare stage made, trains its
share of every batch (trainers/distributed.py; sharded by FSDP2 for strategy fsdp/zero3/zero2,
trainers/fsdp.py), and the main process among them writes the
checkpoints, the training state and train_log.parquet in the ordinary run-folder format. Their
output goes to `train-processes.log` in the run folder, removed when training succeeds; a failure is
one line here, naming it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.app.config import RunConfig
from plasticity_bench.harness.app.sharding import check_sharded_training
from plasticity_bench.harness.app.stages.prepare import PreparedRun
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.interrupt import Interrupted
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.store import TRAIN_LOG_FILE, RunStore, resumable_checkpoints, write_json_atomic

WORKER = "plasticity_bench.harness.app.stages.train_worker"
SETTINGS_FILE = ".train-settings.json"  # the run's settings, for the training processes
RESULT_FILE = ".train-result.json"  # what the main training process returns (run.json's train stage)
ERROR_FILE = ".train-error"  # a training process's one-line BenchError
LOG_FILE = "train-processes.log"  # the training processes' output
PROGRESS_FILE = ".train-progress"  # the main training process's latest step and loss, for this process's bar
PROGRESS_EVERY_S = 0.5

OnLog = Callable[[dict[str, Any]], None]


def launch_training(
    store: RunStore, run: PreparedRun, base_model: Path, quiet: bool, on_log: OnLog | None = None
) -> dict[str, Any]:
    """Train under `num_processes` processes; returns what the main one reports for run.json."""
    config, root = run.config, store.root
    check_sharded_training(config)  # what FSDP cannot train here: refused before any process starts
    for stale in (RESULT_FILE, ERROR_FILE, PROGRESS_FILE):
        (root / stale).unlink(missing_ok=True)
    write_json_atomic(root / SETTINGS_FILE, config.to_dict())
    command = launch_command(config, root, base_model)
    assert config.steps is not None, "prepare() resolves the method's default steps"
    if not quiet:
        print(
            f"training on {config.num_processes} processes ({config.launcher}); their output: {root / LOG_FILE}",
            file=sys.stderr,
        )
    try:
        with (
            (root / LOG_FILE).open("ab") as log,
            progress_bar(config.steps, f"training ({config.method})", quiet) as advance,
        ):
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            tick = read_progress(root / PROGRESS_FILE, advance)
            status = wait(process, tick)
            if status == 0:  # every step done: the bar ends full, whatever the last report said
                tick(reached=(config.steps, float("nan")))
    finally:
        for done_with in (SETTINGS_FILE, PROGRESS_FILE, PROGRESS_FILE + ".tmp"):
            (root / done_with).unlink(missing_ok=True)
    if status != 0:
        raise failure(store, status)
    result = json.loads((root / RESULT_FILE).read_text())
    (root / RESULT_FILE).unlink()
    (root / LOG_FILE).unlink()  # kept only when training failed: the run folder is an ordinary one
    if on_log:  # the experiment trackers get the steps once training is done
        for row in pd.read_parquet(root / TRAIN_LOG_FILE).to_dict("records"):
            on_log({key: value for key, value in row.items() if not (isinstance(value, float) and value != value)})
    return dict(result)


def launch_command(config: RunConfig, root: Path, base_model: Path) -> list[str]:
    """torchrun (standalone: it finds a free port itself) or `accelerate launch` with the user's config file."""
    worker = ["-m", WORKER, str(root), str(base_model)]
    processes = str(config.num_processes)
    if config.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", processes, *worker]
    # accelerate: its config file says DDP, FSDP or DeepSpeed; without one, plain multi-process (DDP), which
    # also starts N processes on a CPU (its MULTI_CPU type needs mpirun)
    kind = ["--config_file", config.accelerate_config] if config.accelerate_config else ["--multi_gpu"]
    port = ["--main_process_port", str(free_port()), "--num_machines", "1"]
    return [sys.executable, "-m", "accelerate.commands.launch", *kind, "--num_processes", processes, *port, *worker]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait(process: subprocess.Popen, tick: Callable[[], None]) -> int:
    """The launcher's exit status, calling `tick` every PROGRESS_EVERY_S meanwhile; a signal to this process
    stops the training processes cleanly first (they finish the checkpoint they are writing), then goes on
    as `Interrupted`."""
    try:
        while True:
            try:
                return process.wait(timeout=PROGRESS_EVERY_S)
            except subprocess.TimeoutExpired:
                tick()
    except Interrupted:
        process.send_signal(signal.SIGTERM)
        process.wait()
        raise


def report_progress(path: Path) -> OnLog:
    """For the main training process: each step's row of the training log, as `STEP LOSS` in `path` (replaced
    whole, at most every PROGRESS_EVERY_S), which the launching process shows as its progress bar."""
    last = [0.0]

    def on_log(row: dict[str, Any]) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            partial = path.with_name(path.name + ".tmp")
            partial.write_text(f"{row['step']} {row['loss']}")
            os.replace(partial, path)

    return on_log


def read_progress(path: Path, advance: Callable[..., None]) -> Callable[..., None]:
    """For the launching process: a tick that moves its bar to the step the main training process last
    reported in `path` (or to `reached`, a (step, loss) pair, when training has ended)."""
    shown = [0]

    def tick(reached: tuple[int, float] | None = None) -> None:
        if reached is None:
            try:
                step, loss = path.read_text().split()
                reached = int(step), float(loss)
            except (OSError, ValueError):  # not written yet
                return
        if reached[0] > shown[0]:
            advance(None if reached[1] != reached[1] else reached[1], n=reached[0] - shown[0])  # NaN: no loss to show
            shown[0] = reached[0]

    return tick


class TrainingProcessFailed(BenchError):
    """A training process was killed or crashed: its checkpoints stay, and a re-run resumes from them
    (harness/app/run.py keeps a new run's folder for this error, as it would after `kill -9` of one process)."""

    resumable = True


def failure(store: RunStore, status: int) -> BenchError:
    """One line: a training process's own error, else the exit status, the log and where a re-run resumes."""
    error = store.root / ERROR_FILE
    if error.is_file():
        message = error.read_text().strip()
        error.unlink()
        return BenchError(message)
    records = resumable_checkpoints(store)
    step = records[-1].step if records else 0
    return TrainingProcessFailed(
        f"a training process failed (launcher exit status {status}; its output: {store.root / LOG_FILE}); "
        f"re-run the same command to resume training from step {step}"
    )


def die_with_parent() -> None:
    """Linux: the launcher (and through it the training processes) is killed when this process dies,
    `kill -9` included, so no orphan goes on writing the run folder."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
