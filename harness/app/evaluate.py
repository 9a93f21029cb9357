"""`bench eval`: score a sweep of checkpoints written by any trainer, into the ordinary run folder.

The sweep (transformers/TRL `checkpoint-N` folders, model folders with explicit steps, LoRA
adapters merged onto their base: harness/app/sweep.py) becomes the run's checkpoint manifest,
pointing at the user's folders where they are (merged LoRA models are written inside the run
folder). Then the same generate → score → report stages as `bench run`, with one backend (one
vLLM engine) for the whole sweep, so `bench report`, `compare` and `gate` work on it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.app.pipeline import generation, scoring_and_report, timed
from harness.app.sweep import discover_sweep
from harness.backends import BackendPool
from harness.backends.auto import resolve_backend
from harness.core import provenance
from harness.core.errors import BenchError
from harness.store import CheckpointRecord, RunStore, write_manifest
from tasks.base import content_hash
from tasks.suites import eval_items, load_suite


def evaluate_sweep(paths: Sequence[Path], suite_ref: str, out: Path, steps: list[int] | None, base_model: Path | None, backend: str,
                   seed: int, label: str, per_slice: int | None, quiet: bool, *, identity_extra: dict[str, Any] | None = None,
                   make_models: Callable[[RunStore], None] | None = None) -> RunStore:
    """`identity_extra`: what else defines the sweep (part of its fingerprint, recorded in run.json's
    config); `make_models`: writes the sweep's model folders inside the new run folder (e.g.
    `bench wise-ft`'s interpolations) once it exists, before the sweep is read."""
    suite = load_suite(suite_ref)
    choice = resolve_backend(backend)
    if per_slice is not None and per_slice <= 0:
        raise BenchError(f"--eval-per-slice must be positive, got {per_slice}")
    sources = [str(Path(p).resolve()) for p in paths]
    identity = {"kind": "eval", "suite_sha256": suite.sha256, "checkpoints": sources, "steps": steps, "backend": backend, "seed": seed,
                "base": str(Path(base_model).resolve()) if base_model else None, "label": label, "eval_per_slice": per_slice, **(identity_extra or {})}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    RunStore.check_target(out, fingerprint)
    items = eval_items(suite, per_slice)
    new_folder = not out.exists()
    try:
        by_slice: dict[str, list] = {}
        for item in items:
            by_slice.setdefault(f"{item.task}/{item.level}", []).append(item)
        metadata = {
            "fingerprint": fingerprint, "method": label, "suite": suite.name, "suite_sha256": suite.sha256, "suite_spec": suite.to_summary(),
            "seed": seed, "config": identity, "backend": choice.name, "backend_reason": choice.reason,
            "eval_sets": {name: {"n": len(group), "sha256": content_hash(group)} for name, group in by_slice.items()},
            "eval_set_sha256": content_hash(items), "provenance": provenance.collect(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        store = RunStore.open_or_create(out, metadata, items)
        if make_models is not None:
            make_models(store)
        points = discover_sweep([Path(p) for p in paths], steps, base_model, work_dir=out)  # merged LoRA models go to RUN/merged/
        store.update_metadata(base_model=str(points[0].model_dir), base_model_sha256=provenance.weights_digest(Path(points[0].model_dir)),
                              sweep=[{"step": p.step, "source": str(p.source), "kind": p.kind} for p in points])
        if not store.stage_done("train"):  # no training: the sweep is the run's checkpoint manifest
            def manifest() -> None:
                store.checkpoints.mkdir(parents=True, exist_ok=True)
                write_manifest(store.checkpoints, [CheckpointRecord(p.step, p.kind, 0.0, None, 0, str(Path(p.model_dir).resolve())) for p in points])
            timed(store, "train", manifest)
        with BackendPool() as backends:
            generation(store, suite, choice, backend, backends, seed, quiet)
        scoring_and_report(store)
    except BenchError:
        if new_folder:  # leave no half-made run behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    return store
