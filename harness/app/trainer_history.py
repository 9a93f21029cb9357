"""The training log of a transformers `Trainer` (or TRL) sweep, for `bench eval`.

Every `checkpoint-N` folder such a trainer writes holds a `trainer_state.json` whose `log_history`
is every entry logged up to step N, so the sweep's last one holds the whole run. `bench eval`
turns it into the run's `train_log.parquet`, one row per logged step, the same table `bench run`
writes (step, stage, lr, loss and the trainer's other numbers: grad_norm, epoch, eval_* at the
steps it evaluated, TRL's rewards and KL), so the report's training chart, `--report-to` and any
reader of the run folder see the trainer's own losses beside the checkpoints' scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.app.sweep import CHECKPOINT_DIR, TRAINER_STATE, SweepPoint
from plasticity_bench.harness.app.tracking import is_number

STAGE = "trainer"  # the `stage` of every imported row: the trainer's own run, not one of bench's stages
RENAMED = {"learning_rate": "lr"}  # the Trainer's names → train_log.parquet's


def trainer_states(points: Sequence[SweepPoint]) -> list[Path]:
    """Every trainer_state.json the sweep's folders hold (a training output folder's checkpoints, a
    checkpoint folder, a model folder the Trainer saved)."""
    found: dict[Path, None] = {}
    for point in points:
        for folder in (point.source, point.model_dir):
            folder = Path(folder)
            candidates = [folder / TRAINER_STATE]
            if folder.is_dir():
                candidates += [
                    child / TRAINER_STATE
                    for child in folder.iterdir()
                    if child.is_dir() and CHECKPOINT_DIR.fullmatch(child.name)
                ]
            found.update((path.resolve(), None) for path in candidates if path.is_file())
    return list(found)


def read_history(path: Path) -> tuple[int, list[dict[str, Any]]] | None:
    """(global_step, log_history) of a trainer_state.json; None where it is not one."""
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    history = state.get("log_history") if isinstance(state, dict) else None
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(history, list) or not isinstance(step, int):
        return None
    return step, [entry for entry in history if isinstance(entry, dict)]


def history_rows(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per logged step: the training entries (with `loss`) and the evaluations at that step
    merged; the end-of-training summary (`train_runtime`, `train_loss`) is not a step."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in history:
        step = entry.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or "train_runtime" in entry:
            continue
        if "loss" not in entry and not any(key.startswith("eval_") for key in entry):
            continue
        row = rows.setdefault(step, {"step": step, "stage": STAGE})
        for key, value in entry.items():
            if key != "step" and is_number(value):
                row[RENAMED.get(key, key)] = float(value)
    return [rows[step] for step in sorted(rows)]


def trainer_log(points: Sequence[SweepPoint]) -> tuple[pd.DataFrame, Path] | None:
    """The sweep's training log and the trainer_state.json it came from (the one furthest along);
    None when the sweep holds no Trainer state with logged steps."""
    histories = [(read_history(path), path) for path in trainer_states(points)]
    usable = [(found[0], len(found[1]), path, found[1]) for found, path in histories if found is not None]
    if not usable:
        return None
    _, _, path, history = max(usable, key=lambda entry: (entry[0], entry[1]))
    rows = history_rows(history)
    return (pd.DataFrame(rows), path) if rows else None
