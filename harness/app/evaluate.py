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

from plasticity_bench.harness.app.pipeline import generation, scoring_and_report, timed
from plasticity_bench.harness.app.refresh import apply as apply_refresh
from plasticity_bench.harness.app.refresh import check_data
from plasticity_bench.harness.app.sweep import SweepPoint, discover_sweep
from plasticity_bench.harness.app.tracking import Tracking, check_report_to, open_tracking
from plasticity_bench.harness.app.trainer_history import trainer_log
from plasticity_bench.harness.backends import BackendPool
from plasticity_bench.harness.backends.auto import resolve_backend
from plasticity_bench.harness.core import provenance
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import TRAIN_LOG_FILE, CheckpointRecord, RunStore, write_manifest
from plasticity_bench.tasks.base import content_hash
from plasticity_bench.tasks.identity import fingerprinted, suite_identity
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.items import load_eval_items


def evaluate_sweep(
    paths: Sequence[Path],
    suite_ref: str,
    out: Path,
    steps: list[int] | None,
    base_model: Path | None,
    backend: str,
    seed: int,
    label: str,
    per_slice: int | None,
    quiet: bool,
    *,
    identity_extra: dict[str, Any] | None = None,
    make_models: Callable[[RunStore], None] | None = None,
    refresh: bool = False,
    report_to: Sequence[str] = (),
) -> RunStore:
    """`identity_extra`: what else defines the sweep (part of its fingerprint, recorded in run.json's
    config); `make_models`: writes the sweep's model folders inside the new run folder (e.g.
    `bench wise-ft`'s interpolations) once it exists, before the sweep is read; `refresh`: a folder
    holding this sweep scored on other data is brought up to date, not refused (harness/app/refresh.py);
    `report_to`: experiment trackers (harness/app/tracking.py) that get the Trainer's log and the scores."""
    report_to = check_report_to(report_to)
    suite = load_suite(suite_ref)
    choice = resolve_backend(backend)
    if per_slice is not None and per_slice <= 0:
        raise BenchError(f"--limit must be a positive number of items per evaluation set, got {per_slice}")
    paths, base_model, hub_models = resolve_hub_ids(paths, base_model)
    sources = [str(Path(p).resolve()) for p in paths]
    identity = {
        "kind": "eval",
        "suite_sha256": suite.sha256,
        "checkpoints": sources,
        "steps": steps,
        "backend": backend,
        "seed": seed,
        "base": str(Path(base_model).resolve()) if base_model else None,
        "label": label,
        "eval_per_slice": per_slice,
        **(identity_extra or {}),
    }
    if hub_models:  # only then: the identity of sweeps of local folders stays what it was
        identity["hub_models"] = hub_models
    data = suite_identity(
        suite, training=False
    )  # the data files' bytes and the scorers' versions: part of the identity

    def fingerprint_of(data_identity: dict[str, Any]) -> str:
        return hashlib.sha256(
            json.dumps({**identity, **fingerprinted(data_identity)}, sort_keys=True).encode()
        ).hexdigest()[:16]

    fingerprint = fingerprint_of(data)
    plan = check_data(out, fingerprint, data, fingerprint_of, refresh)
    if plan is None:
        RunStore.check_target(out, fingerprint)
    evaluation = load_eval_items(suite, per_slice)
    items = evaluation.items
    new_folder = not out.exists()
    tracking: Tracking | None = None
    try:
        by_slice: dict[str, list] = {}
        for item in items:
            by_slice.setdefault(item.slice, []).append(item)
        metadata = {
            "fingerprint": fingerprint,
            "method": label,
            "suite": suite.name,
            "suite_sha256": suite.sha256,
            "suite_spec": evaluation.summary(),
            "seed": seed,
            "config": identity,
            "backend": choice.name,
            "backend_reason": choice.reason,
            "eval_sets": {name: {"n": len(group), "sha256": content_hash(group)} for name, group in by_slice.items()},
            "eval_set_sha256": content_hash(items),
            "provenance": provenance.collect(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "data_identity": data,
        }
        if plan is not None:
            metadata = apply_refresh(out, plan, metadata, items, content_hash(items))
        store = RunStore.open_or_create(out, metadata, items)
        if make_models is not None:
            make_models(store)
        points = discover_sweep(
            [Path(p) for p in paths], steps, base_model, work_dir=out
        )  # merged LoRA models go to RUN/merged/
        store.update_metadata(
            base_model=str(points[0].model_dir),
            base_model_sha256=provenance.weights_digest(Path(points[0].model_dir)),
            sweep=[{"step": p.step, "source": str(p.source), "kind": p.kind} for p in points],
        )
        if not store.stage_done("train"):  # no training: the sweep is the run's checkpoint manifest

            def manifest() -> dict[str, Any]:
                store.checkpoints.mkdir(parents=True, exist_ok=True)
                write_manifest(
                    store.checkpoints,
                    [CheckpointRecord(p.step, p.kind, 0.0, None, 0, str(Path(p.model_dir).resolve())) for p in points],
                )
                return import_trainer_log(store, points)

            timed(store, "train", manifest)
        tracking = open_tracking(report_to, store, identity, work_left=not store.stage_done("score"))
        tracking.log_train_log()
        with BackendPool() as backends:
            generation(store, suite, choice, backend, backends, seed, quiet)
        scoring_and_report(store, tracking.log_scores)
    except BenchError:
        if tracking is not None:
            tracking.close(failed=True)  # before the folder it writes in may go
        if new_folder:  # leave no half-made run behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if tracking is not None:
            tracking.close()
    return store


def import_trainer_log(store: RunStore, points: Sequence[SweepPoint]) -> dict[str, Any]:
    """The Trainer's own log_history (from the sweep's trainer_state.json) as the run's train_log.parquet,
    for the report's training chart; returns what run.json records about it."""
    found = trainer_log(points)
    if found is None:
        return {}
    log, source = found
    store.write_table(TRAIN_LOG_FILE, log)
    return {"train_log_from": str(source), "train_log_rows": len(log)}


def resolve_hub_ids(
    paths: Sequence[Path], base_model: Path | None
) -> tuple[list[Path], Path | None, list[dict[str, Any]]]:
    """Checkpoints and base given as hub ids (`Qwen/Qwen3-0.6B`) become their cached snapshot folders
    (harness/app/hub.py); local paths stay. Also returns what run.json records of each hub model."""
    from plasticity_bench.harness.app.hub import resolve_model

    hub_models: list[dict[str, Any]] = []
    folders = []
    for path in paths:
        folder, hub = resolve_model(path, "checkpoint")
        folders.append(folder)
        if hub is not None:
            hub_models.append({"role": "checkpoint", **hub.to_dict()})
    if base_model is not None:
        base_model, hub = resolve_model(base_model, "base model")
        if hub is not None:
            hub_models.append({"role": "base", **hub.to_dict()})
    return folders, base_model, hub_models
