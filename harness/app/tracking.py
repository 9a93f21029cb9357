"""Experiment tracking: a run's training steps and checkpoint scores, logged to TensorBoard, W&B
and MLflow as they are made (`report_to: [tensorboard, wandb, mlflow]`, `--report-to`).

What is logged (docs/tracking.md):

* every training step's row of `train_log.parquet` as `train/<column>` (loss, lr and the method's
  own metrics), x-axis the training step (W&B: `train_step`);
* every checkpoint's scores when the score stage has written them, as `eval/<family>/all` (the
  family) and `eval/<family>/<task>/<level>` (each slice), in points, x-axis the checkpoint's step
  (W&B: `checkpoint_step`). A family's own score is `.../all`, not `eval/<family>`: MLflow's file
  store keeps each metric in a file named after it, so no name may also be a folder of others.

Everything stays in the run folder unless the user points a tracker elsewhere: TensorBoard event
files in RUN/tensorboard/; W&B in offline mode in RUN/wandb/ (`WANDB_MODE=online` streams
instead; `wandb sync` uploads an offline run later); MLflow's file store RUN/mlruns/ unless
`MLFLOW_TRACKING_URI` names another store. Where each tracker wrote is recorded in run.json
(`tracking`). Tracking never changes results, so it is not part of the run's identity.

A tracker that cannot start is a BenchError before any work; one that fails later while logging
is dropped with a one-line warning: a run is never lost for the sake of its logs.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from plasticity_bench.harness.core.errors import BenchError, warn

if TYPE_CHECKING:  # the settings' checks run before pandas and torch load (a usage error answers at once)
    import pandas as pd

    from plasticity_bench.harness.store import RunStore

# name → (module that must import, the PyPI package that provides it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}
INSTALL_ALL = "pip install -e '.[tracking]'"
# the W&B project and the MLflow experiment, unless WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME say otherwise
PROJECT = "plasticity-bench"
TRAIN_STEP = "train_step"  # W&B's x-axis for train/* (its own step must only grow; scores come back to step 0)
CHECKPOINT_STEP = "checkpoint_step"  # W&B's x-axis for eval/*
TENSORBOARD_FOLDER = "tensorboard"
MLFLOW_FOLDER = "mlruns"
NOT_METRICS = frozenset({"step", "stage"})  # train_log columns that are the axis or a label


# ---------------------------------------------------------------- settings


def parse_report_to(text: str | None) -> list[str] | None:
    """`--report-to a,b` as a list of names; `none` (or an empty value) turns tracking off."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    return [] if names in ([], ["none"]) else names


def check_report_to(names: Sequence[str]) -> tuple[str, ...]:
    """The trackers, validated: BenchError (one line) for an unknown name or a tracker whose
    package is not installed (with the command that installs it). Imports nothing heavy."""
    for name in names:
        if name not in TRACKERS:
            raise BenchError(f"report_to: unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
    for name in names:
        module, package = TRACKERS[name]
        if not installed(module):
            raise BenchError(
                f"report_to: {name} is not installed; install it with `pip install {package}` "
                f"(or all three trackers with `{INSTALL_ALL}`)"
            )
    return tuple(dict.fromkeys(names))


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None, Python's mark of "cannot import"
        return False


def metric_name(*parts: str) -> str:
    """A name every tracker accepts (MLflow allows only letters, digits, _ - . / and spaces)."""
    return "/".join(re.sub(r"[^\w.\- ]", "_", part).strip("/") or "_" for part in parts)


def flat_settings(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as `a.b` → text (MLflow's parameters are flat strings)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]
    return out


# ---------------------------------------------------------------- the trackers


class Sink(Protocol):
    def log(self, metrics: dict[str, float], step: int, axis: str) -> None: ...

    def close(self, failed: bool) -> Any: ...


class TensorBoardSink:
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_FOLDER))

    def log(self, metrics: dict[str, float], step: int, axis: str) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # as they land: a TensorBoard open on the run folder shows each step

    def close(self, failed: bool) -> Any:
        self.writer.close()
        return TENSORBOARD_FOLDER


class WandbSink:
    def __init__(self, run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        # Offline unless the user asks otherwise: nothing waits for a network that may not be there.
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run_dir = run_dir
        settings = wandb.Settings(
            console="off",
            silent=True,
            x_disable_stats=True,
            disable_git=True,
            save_code=False,
            disable_job_creation=True,
        )
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            name=name,
            dir=str(run_dir),
            config=dict(config),
            settings=settings,
            reinit="create_new",
        )
        self.run.define_metric(TRAIN_STEP)
        self.run.define_metric("train/*", step_metric=TRAIN_STEP)
        self.run.define_metric(CHECKPOINT_STEP)
        self.run.define_metric("eval/*", step_metric=CHECKPOINT_STEP)

    def log(self, metrics: dict[str, float], step: int, axis: str) -> None:
        self.run.log({axis: step, **metrics})

    def close(self, failed: bool) -> Any:
        folder = Path(self.run.settings.sync_dir)
        self.run.finish(exit_code=1 if failed else 0)
        return str(folder.relative_to(self.run_dir)) if folder.is_relative_to(self.run_dir) else str(folder)


class MlflowSink:
    def __init__(self, run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / MLFLOW_FOLDER).resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless this is set;
            # a local folder in the run is what works offline with mlflow-skinny (no database driver).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
        tags = {"plasticity_bench.run_dir": str(run_dir.resolve())}
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        self.where = {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run.info.run_id}
        params = [Param(key, value) for key, value in flat_settings(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(run.info.run_id, params=params[start : start + 100])

    def log(self, metrics: dict[str, float], step: int, axis: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(name, value, now, step) for name, value in metrics.items()]
        for start in range(0, len(rows), 1000):  # and at most 1000 metrics
            self.client.log_batch(self.where["run_id"], metrics=rows[start : start + 1000])

    def close(self, failed: bool) -> Any:
        self.client.set_terminated(self.where["run_id"], "FAILED" if failed else "FINISHED")
        return self.where


# ---------------------------------------------------------------- a run's trackers


class Tracking:
    """The run's trackers (none: every call does nothing). `start` opens them; a failure to open
    one is a BenchError naming it."""

    def __init__(self, names: Sequence[str], store: RunStore, config: Mapping[str, Any]) -> None:
        self.names = check_report_to(names)
        self.store = store
        self.config = config
        self.sinks: dict[str, Sink] = {}

    def start(self) -> Tracking:
        run_dir, name = self.store.root, self.store.root.name
        makers: dict[str, Callable[[], Sink]] = {
            "tensorboard": lambda: TensorBoardSink(run_dir),
            "wandb": lambda: WandbSink(run_dir, name, self.config),
            "mlflow": lambda: MlflowSink(run_dir, name, self.config),
        }
        for tracker in self.names:
            try:
                self.sinks[tracker] = makers[tracker]()
            except Exception as error:
                self.close(failed=True)
                raise BenchError(f"report_to: {tracker} could not start: {first_line(error)}") from None
        return self

    def log_step(self, row: Mapping[str, Any]) -> None:
        """One row of the training log: its numbers as train/<column> at its step."""
        metrics = {
            metric_name("train", key): float(value)
            for key, value in row.items()
            if key not in NOT_METRICS and is_number(value)
        }
        self.log(metrics, int(row["step"]), TRAIN_STEP)

    def log_train_log(self) -> None:
        """Every row of the run's train_log.parquet, if it has one (`bench eval`: a Trainer's own log)."""
        from plasticity_bench.harness.store import TRAIN_LOG_FILE

        if self.sinks and (self.store.root / TRAIN_LOG_FILE).is_file():
            for row in self.store.read_table(TRAIN_LOG_FILE).to_dict("records"):
                self.log_step(row)

    def log_scores(self, aggregates: pd.DataFrame | None = None) -> None:
        """Each checkpoint's family and slice scores (aggregates.parquet, read from the run folder
        unless given), at the checkpoint's step."""
        if not self.sinks:
            return
        if aggregates is None:
            from plasticity_bench.harness.store import AGGREGATES_FILE

            aggregates = self.store.read_table(AGGREGATES_FILE)
        for step, group in aggregates.groupby("step", sort=True):
            metrics = {
                metric_name("eval", row.family, *str(row.slice).split("/")): float(row.score)
                for row in group.itertuples()
                if is_number(row.score)
            }
            self.log(metrics, int(step), CHECKPOINT_STEP)

    def log(self, metrics: dict[str, float], step: int, axis: str) -> None:
        if not metrics:
            return
        for tracker, sink in list(self.sinks.items()):
            try:
                sink.log(metrics, step, axis)
            except Exception as error:  # the run goes on; its logs in this tracker end here
                warn(f"report_to: {tracker} stopped logging at step {step}: {first_line(error)}")
                self.sinks.pop(tracker)

    def close(self, failed: bool | None = None) -> None:
        """Finish every tracker and record in run.json where each wrote. `failed`: whether the run
        is ending with an error (default: whether an exception is on its way out)."""
        if failed is None:
            failed = sys.exc_info()[0] is not None
        where: dict[str, Any] = {}
        for tracker, sink in list(self.sinks.items()):
            try:
                where[tracker] = sink.close(failed)
            except Exception as error:
                warn(f"report_to: {tracker} did not close cleanly: {first_line(error)}")
        self.sinks = {}
        if where and (self.store.root / "run.json").is_file():
            self.store.update_metadata(tracking=where)


def open_tracking(names: Sequence[str], store: RunStore, config: Mapping[str, Any], work_left: bool = True) -> Tracking:
    """The run's trackers, started when there is something to log (`work_left`): a re-run of a
    finished run opens none, so no empty runs appear in W&B or MLflow."""
    tracking = Tracking(names if work_left else (), store, config)
    return tracking.start()


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
