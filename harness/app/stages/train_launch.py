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
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.app.config import RunConfig
from plasticity_bench.harness.app.sharding import check_sharded_training
from plasticity_bench.harness.app.stages.prepare import PreparedRun
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.interrupt import Interrupted
from plasticity_bench.harness.store import TRAIN_LOG_FILE, RunStore, resumable_checkpoints, write_json_atomic

WORKER = "plasticity_bench.harness.app.stages.train_worker"
SETTINGS_FILE = ".train-settings.json"  # the run's settings, for the training processes
RESULT_FILE = ".train-result.json"  # what the main training process returns (run.json's train stage)
ERROR_FILE = ".train-error"  # a training process's one-line BenchError
LOG_FILE = "train-processes.log"  # the training processes' output

OnLog = Callable[[dict[str, Any]], None]


def launch_training(
    store: RunStore, run: PreparedRun, base_model: Path, quiet: bool, on_log: OnLog | None = None
) -> dict[str, Any]:
    """Train under `num_processes` processes; returns what the main one reports for run.json."""
    config, root = run.config, store.root
    check_sharded_training(config)  # what FSDP cannot train here: refused before any process starts
    for stale in (RESULT_FILE, ERROR_FILE):
        (root / stale).unlink(missing_ok=True)
    write_json_atomic(root / SETTINGS_FILE, config.to_dict())
    command = launch_command(config, root, base_model)
    if not quiet:
        print(
            f"training on {config.num_processes} processes ({config.launcher}); output: {root / LOG_FILE}",
            file=sys.stderr,
        )
    try:
        with (root / LOG_FILE).open("ab") as log:
            status = wait(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent))
    finally:
        (root / SETTINGS_FILE).unlink(missing_ok=True)
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


def wait(process: subprocess.Popen) -> int:
    """The launcher's exit status; a signal to this process stops the training processes cleanly first
    (they finish the checkpoint they are writing), then goes on as `Interrupted`."""
    try:
        return process.wait()
    except Interrupted:
        process.send_signal(signal.SIGTERM)
        process.wait()
        raise


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
