"""The disk a run's checkpoints need, from plain numbers (the app knows the model and the config)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from plasticity_bench.harness.core.errors import BenchError


def check_disk_space(
    out: Path, model_bytes: int, steps: int, checkpoint_every: int | None, keep: str, engine_copy: bool
) -> None:
    """BenchError (one line) when the output folder's disk cannot hold the run's checkpoints.

    Estimate: each checkpoint is a model folder (`model_bytes` of weights), and each training state
    kept beside one is about twice that (AdamW's two moments); keep `all` keeps a state per
    checkpoint, `evaluated` and `last` at most two at a time. `engine_copy`: a rollout engine that
    does not sample the policy in memory (vLLM) holds one more copy of the weights. What an earlier
    attempt already wrote there counts as written.
    """
    checkpoints = 1 + (steps // checkpoint_every if checkpoint_every else 0) + 2  # start, periodic, 2 stage ends
    states = checkpoints if keep == "all" else 2
    need = model_bytes * (checkpoints + 2 * states + (1 if engine_copy else 0))
    need = math.ceil(need * 1.1) + 2**20  # tokenizer files, generations, tables
    written = (
        sum(f.stat().st_size for f in (out / "checkpoints").rglob("*") if f.is_file())
        if (out / "checkpoints").is_dir()
        else 0
    )
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if need - written > free:
        raise BenchError(
            f"not enough disk space for this run in {parent}: it needs about {mb(need - written)} ({checkpoints} "
            f"checkpoints of a {mb(model_bytes)} model, with optimizer state ~3x per checkpoint kept) and {mb(free)} "
            "is free; free some space, choose another --out, checkpoint less often (checkpoint_every) or keep less "
            "(keep_checkpoints: evaluated)"
        )


def mb(size: float) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 2**10:,.0f} KB"
