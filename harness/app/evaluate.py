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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticity_bench.harness.app.config import VllmSettings
from plasticity_bench.harness.app.eval_vllm import check_on_this_machine, pool_settings, vllm_identity
from plasticity_bench.harness.app.refresh import Refresh, check_data
from plasticity_bench.harness.app.refresh import apply as apply_refresh
from plasticity_bench.harness.app.stages import timed
from plasticity_bench.harness.app.stages.few_shot import few_shot
from plasticity_bench.harness.app.stages.generate import generate
from plasticity_bench.harness.app.stages.prepare import run_metadata
from plasticity_bench.harness.app.stages.report import report
from plasticity_bench.harness.app.stages.score import score
from plasticity_bench.harness.app.sweep import SweepPoint, discover_sweep
from plasticity_bench.harness.app.tracking import Tracking, check_report_to, open_tracking
from plasticity_bench.harness.app.trainer_history import trainer_log
from plasticity_bench.harness.backends import BackendPool
from plasticity_bench.harness.backends.auto import BackendChoice, resolve_backend
from plasticity_bench.harness.core import provenance
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import TRAIN_LOG_FILE, CheckpointRecord, RunStore, write_manifest
from plasticity_bench.tasks.base import content_hash
from plasticity_bench.tasks.identity import fingerprinted, suite_identity
from plasticity_bench.tasks.suites import Suite, load_suite
from plasticity_bench.tasks.suites.items import EvalItems, load_eval_items


@dataclass(frozen=True)
class PreparedSweep:
    """A sweep checked and resolved, before anything is written (as `PreparedRun` for `bench run`)."""

    suite: Suite
    backend: BackendChoice
    requested: str  # the backend asked for (auto is decided by the generate stage)
    identity: dict[str, Any]  # what defines the sweep: run.json's config, hashed with the data into the fingerprint
    data: dict[str, Any]  # the evaluation data's identity (tasks/identity.py)
    fingerprint: str
    evaluation: EvalItems
    refresh: Refresh | None


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
    engines: int = 1,
    vllm: VllmSettings | None = None,
) -> RunStore:
    """`identity_extra`: what else defines the sweep (part of its fingerprint, recorded in run.json's
    config); `make_models`: writes the sweep's model folders inside the new run folder (e.g.
    `bench wise-ft`'s interpolations) once it exists, before the sweep is read; `refresh`: a folder
    holding this sweep scored on other data is brought up to date, not refused (harness/app/refresh.py);
    `report_to`: experiment trackers (harness/app/tracking.py) that get the Trainer's log and the scores;
    `engines`: generation engines sharing the checkpoints out (harness/app/engines.py), not part of the identity;
    `vllm`: the vLLM engine's arguments (`--vllm-setting`, harness/app/eval_vllm.py), as a run's `vllm:` block."""
    report_to = check_report_to(report_to)
    check_per_slice(per_slice)
    check_on_this_machine(vllm)
    paths, base_model, hub_models = resolve_hub_ids(paths, base_model)
    identity = {
        **sweep_identity(paths, steps, backend, seed, base_model, label, per_slice),
        **(identity_extra or {}),
        **({"hub_models": hub_models} if hub_models else {}),  # a sweep of local folders: identified by its paths
        **vllm_identity(vllm),  # engine settings that change the numbers (a dtype): part of the fingerprint
    }
    sweep = prepare_sweep(suite_ref, out, backend, identity, refresh)
    new_folder = not out.exists()
    tracking: Tracking | None = None
    try:
        store = open_sweep(sweep, out, seed, label)
        if make_models is not None:
            make_models(store)
        adopt_sweep(store, discover_sweep([Path(p) for p in paths], steps, base_model, work_dir=out))
        tracking = open_tracking(report_to, store, sweep.identity, work_left=not store.stage_done("score"))
        tracking.log_train_log()
        with BackendPool(pool_settings(vllm)) as backends:
            generate_sweep(store, sweep, backend, backends, seed, quiet, engines)
        score(store, tracking.log_scores)
        report(store)
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


def generate_sweep(
    store: RunStore, sweep: PreparedSweep, backend: str, backends: BackendPool, seed: int, quiet: bool, engines: int
) -> None:
    """The generate stage, then the few-shot probe (tasks/suites/few_shot.py) on the same engines."""
    generate(store, sweep.suite, sweep.backend, backend, backends, seed, quiet, engines)
    few_shot(store, sweep.suite, sweep.evaluation.probes, backends, seed, quiet)


def check_per_slice(per_slice: int | None) -> None:
    if per_slice is not None and per_slice <= 0:
        raise BenchError(f"--limit must be a positive number of items per evaluation set, got {per_slice}")


def sweep_identity(
    paths: Sequence[Path],
    steps: list[int] | None,
    backend: str,
    seed: int,
    base_model: Path | None,
    label: str,
    per_slice: int | None,
) -> dict[str, Any]:
    """What defines a sweep of checkpoints (`bench eval`, `bench eval --watch`): part of its fingerprint."""
    return {
        "checkpoints": [str(Path(p).resolve()) for p in paths],
        "steps": steps,
        "backend": backend,
        "seed": seed,
        "base": str(Path(base_model).resolve()) if base_model else None,
        "label": label,
        "eval_per_slice": per_slice,
    }


def prepare_sweep(suite_ref: str, out: Path, backend: str, identity: dict[str, Any], refresh: bool) -> PreparedSweep:
    """Resolve the suite and backend, fingerprint the sweep and check the output folder; writes nothing."""
    suite = load_suite(suite_ref)
    choice = resolve_backend(backend)
    identity = {"kind": "eval", "suite_sha256": suite.sha256, **identity}
    data = suite_identity(suite, training=False)  # the data files' bytes and the scorers' versions

    def fingerprint_of(data_identity: dict[str, Any]) -> str:
        return hashlib.sha256(
            json.dumps({**identity, **fingerprinted(data_identity)}, sort_keys=True).encode()
        ).hexdigest()[:16]

    fingerprint = fingerprint_of(data)
    plan = check_data(out, fingerprint, data, fingerprint_of, refresh)
    if plan is None:
        RunStore.check_target(out, fingerprint)
    evaluation = load_eval_items(suite, identity["eval_per_slice"])
    return PreparedSweep(suite, choice, backend, identity, data, fingerprint, evaluation, plan)


def open_sweep(sweep: PreparedSweep, out: Path, seed: int, label: str) -> RunStore:
    """The sweep's run folder, created with its run.json (the one metadata writer) or reopened."""
    metadata = run_metadata(
        fingerprint=sweep.fingerprint,
        method=label,
        suite=sweep.suite,
        evaluation=sweep.evaluation,
        seed=seed,
        config=sweep.identity,
        backend=sweep.backend,
        data_identity=sweep.data,
    )
    items = sweep.evaluation.items
    if sweep.refresh is not None:
        metadata = apply_refresh(out, sweep.refresh, metadata, items, content_hash(items))
    return RunStore.open_or_create(out, metadata, items)


def adopt_sweep(store: RunStore, points: Sequence[SweepPoint]) -> None:
    """The sweep as the run's train stage (no training): its points become the checkpoint manifest,
    pointing at the model folders where they are, and a Trainer's own log becomes train_log.parquet."""
    store.update_metadata(
        base_model=str(points[0].model_dir),
        base_model_sha256=provenance.weights_digest(Path(points[0].model_dir)),
        sweep=[{"step": p.step, "source": str(p.source), "kind": p.kind} for p in points],
    )
    if store.stage_done("train"):
        return

    def manifest() -> dict[str, Any]:
        store.checkpoints.mkdir(parents=True, exist_ok=True)
        records = [CheckpointRecord(p.step, p.kind, 0.0, None, 0, str(Path(p.model_dir).resolve())) for p in points]
        write_manifest(store.checkpoints, records)
        return import_trainer_log(store, points)

    timed(store, "train", manifest)


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
