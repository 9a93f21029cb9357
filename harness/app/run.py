"""`bench run`: the run, stage by stage — prepare → train → kl → generate → score → report
(harness/app/stages/, one module each).

Each stage reads what the previous ones wrote in the run folder (harness/store) and records
itself as done in run.json, so a re-run of the same command skips finished stages and resumes
an interrupted one (training from its last checkpoint); `bench score` redoes scoring alone. All
input is checked in `prepare` before anything is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from plasticity_bench.harness.app.config import backend_settings
from plasticity_bench.harness.app.stages.few_shot import few_shot
from plasticity_bench.harness.app.stages.generate import generate
from plasticity_bench.harness.app.stages.kl import kl
from plasticity_bench.harness.app.stages.prepare import PreparedRun, open_run
from plasticity_bench.harness.app.stages.report import report
from plasticity_bench.harness.app.stages.score import score
from plasticity_bench.harness.app.stages.train import train
from plasticity_bench.harness.app.tracking import open_tracking
from plasticity_bench.harness.backends import BackendPool
from plasticity_bench.harness.core.errors import BenchError, writing
from plasticity_bench.harness.core.interrupt import Interrupted
from plasticity_bench.harness.store import (
    RUN_FILE,
    RunStore,
    prune_model_folders,
    prune_training_state,
    resumable_checkpoints,
)


def execute(run: PreparedRun, quiet: bool = False) -> RunStore:
    """Every stage not yet done. A foreseeable failure to write the run folder (no permission, a
    full disk) becomes a BenchError naming it. A new run that fails with a BenchError before its
    training is complete (e.g. a method found nothing to train on) is removed, so no half-made run
    folder is left; once training is done, its checkpoints stay (complete and recorded as such) and
    re-running the command after fixing the cause (e.g. a model context too short to generate)
    resumes at the stage that failed."""
    existed, new_run = run.out.exists(), not (run.out / RUN_FILE).is_file()
    try:
        with writing(run.out):
            return execute_stages(run, quiet)
    except BenchError as error:
        # a training process killed or crashed leaves checkpoints a re-run resumes from (train_launch.py)
        if new_run and not trained(run.out) and not getattr(error, "resumable", False):
            remove_unfinished(run.out, keep_folder=existed)
        raise


def execute_stages(run: PreparedRun, quiet: bool) -> RunStore:
    store, base_model = open_run(run, quiet)
    config = run.config
    tracking = open_tracking(config.report_to, store, config.to_dict(), work_left=not store.stage_done("score"))
    try:
        with BackendPool(backend_settings(config)) as backends:  # a vLLM engine started for rollouts also generates
            train(store, run, base_model, backends, quiet, tracking.log_step)
            prune_training_state(store, config.keep_checkpoints)
            kl(store, run, base_model)
            generate(store, run.suite, run.backend, config.backend, backends, config.seed, quiet, config.engines)
            few_shot(store, run.suite, run.evaluation.probes, backends, config.seed, quiet)  # before any pruning
        prune_model_folders(store, config.keep_checkpoints)
        score(store, tracking.log_scores)
        report(store)
    except Interrupted as stop:
        raise Interrupted(stop.signum, f"interrupted: {resume_hint(store)}") from None
    finally:
        tracking.close()
    return store


def trained(folder: Path) -> bool:
    try:
        return RunStore(folder).stage_done("train")
    except (OSError, ValueError, KeyError):
        return False


def remove_unfinished(folder: Path, keep_folder: bool) -> None:
    """Delete a failed new run; an (empty) folder the user made beforehand stays, emptied."""
    if not keep_folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def resume_hint(store: RunStore) -> str:
    """How a re-run of the same command goes on, from what the run folder holds now."""
    if store.stage_done("train"):
        return "training is done; re-run the same command to finish generating, scoring and reporting"
    records = resumable_checkpoints(store)
    step = records[-1].step if records else 0
    return f"re-run the same command to resume training from step {step}"
