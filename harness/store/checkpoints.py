"""Checkpoints in the run folder: the manifest, model folders, training states, and what resuming
and `keep_checkpoints` keep of them.

Every checkpoint is a model folder plus a training-state file beside it
(`checkpoints/step-N.trainer_state.pt`), both written before the manifest names the checkpoint,
so the manifest lists only complete checkpoints and training resumes from its last one.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.interrupt import uninterruptible
from plasticity_bench.harness.store.atomic import write_atomic, write_folder_atomic
from plasticity_bench.harness.store.folder import MANIFEST, TRAINER_STATE_SUFFIX, RunStore


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    stage: str
    lr: float
    loss: float | None  # mean training loss since the previous checkpoint (None for step 0)
    examples_seen: int
    path: str  # relative to the run folder, or absolute (`bench eval`: the user's own model folders)

    def to_dict(self) -> dict:
        return asdict(self)


def write_manifest(checkpoint_dir: Path, records: Sequence[CheckpointRecord]) -> None:
    write_atomic(
        checkpoint_dir / MANIFEST, lambda tmp: tmp.write_text(json.dumps([r.to_dict() for r in records], indent=2))
    )


def read_manifest(checkpoint_dir: Path) -> list[CheckpointRecord]:
    return [CheckpointRecord(**r) for r in json.loads((checkpoint_dir / MANIFEST).read_text())]


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_dir(store: RunStore, record: CheckpointRecord) -> Path:
    """A checkpoint's model folder: inside the run folder, or anywhere (`bench eval` of another trainer's sweep)."""
    return Path(record.path) if Path(record.path).is_absolute() else store.root / record.path


def trainer_state_path(checkpoint_dir: Path, step: int) -> Path:
    """The training state saved with checkpoint `step`: a file next to its model folder."""
    return checkpoint_dir / (checkpoint_name(step) + TRAINER_STATE_SUFFIX)


def save_trainer_state(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary name, then rename (a kill never leaves half a state file)."""
    import torch

    def write(tmp: Path) -> None:
        # through a Python file object, so a full disk is an OSError (ENOSPC) that the CLI reports
        # in one line; torch's zip writer then adds a RuntimeError on top of it while closing
        with open(tmp, "wb") as handle:
            try:
                torch.save(state, handle)
            except RuntimeError as error:
                if isinstance(error.__context__, OSError):
                    raise error.__context__ from None
                raise

    write_atomic(path, write)


def load_trainer_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, weights_only=True)  # tensors and plain Python values only: no code runs on load


def save_checkpoint(model: Any, tokenizer: Any, folder: Path, weights: dict[str, Any] | None = None) -> None:
    """Write a Hugging Face model folder atomically (a crash never leaves half a checkpoint).
    A peft (LoRA) model is written merged, as the full model W + ΔW: a copy is merged, so the
    model being trained keeps its adapters and its weights bit for bit. `weights`: the whole
    weights of a model held sharded (FSDP), written in the model's own format instead of its state dict."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()

    def write(partial: Path) -> None:
        model.save_pretrained(partial, state_dict=weights)  # None: the model's own state dict
        tokenizer.save_pretrained(partial)

    with uninterruptible():  # a checkpoint is written whole before a signal stops the run
        write_folder_atomic(folder, write)


def resumable_checkpoints(store: RunStore, clean: bool = False) -> list[CheckpointRecord]:
    """The manifest up to the last checkpoint training can resume from: one the manifest names
    whose model folder and training state both exist. [] when there is none after the start.

    clean: also delete what an interrupted attempt wrote after that checkpoint (model folders,
    state files, *.partial and *.tmp that the manifest does not name) and shorten the manifest.
    """
    try:
        records = read_manifest(store.checkpoints)
    except (OSError, ValueError, TypeError):  # no manifest yet, or an unreadable one: nothing to resume
        return []
    usable = [
        r
        for r in records
        if r.step > 0 and (store.root / r.path).is_dir() and trainer_state_path(store.checkpoints, r.step).is_file()
    ]
    if not usable or not (store.root / records[0].path).is_dir():
        return []
    kept = [r for r in records if r.step <= usable[-1].step]
    if clean:
        remove_unnamed(store, kept)
        if len(kept) < len(records):
            write_manifest(store.checkpoints, kept)
    return kept


def remove_unnamed(store: RunStore, kept: Sequence[CheckpointRecord]) -> None:
    """Delete every file and folder in RUN/checkpoints/ that is not the manifest or one of `kept`'s."""
    names = (
        {MANIFEST}
        | {checkpoint_name(r.step) for r in kept}
        | {checkpoint_name(r.step) + TRAINER_STATE_SUFFIX for r in kept}
    )
    for path in store.checkpoints.iterdir():
        if path.name not in names:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def prune_training_state(store: RunStore, keep: str) -> None:
    """After training: `evaluated` and `last` keep no training state (only `all` does)."""
    if keep != "all" and store.checkpoints.is_dir():
        for path in store.checkpoints.glob("*" + TRAINER_STATE_SUFFIX):
            path.unlink()


def prune_model_folders(store: RunStore, keep: str) -> None:
    """After generation: `last` keeps the start and the final model folders only (every
    checkpoint's generations and scores stay; the manifest still lists every checkpoint)."""
    if keep != "last" or not store.stage_done("generate"):
        return
    records = read_manifest(store.checkpoints)
    for record in records[1:-1]:
        shutil.rmtree(store.root / record.path, ignore_errors=True)
