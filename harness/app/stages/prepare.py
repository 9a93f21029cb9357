"""The prepare stage: every name resolved and every input checked (`prepare`, which writes
nothing), then the starting model made and the run folder created or reopened (`open_run`).

`run_metadata` is the one writer of run.json's description of a run, for `bench run` and `bench eval` alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

import plasticity_bench.tasks  # noqa: F401  (registers the tasks)
import plasticity_bench.trainers  # noqa: F401  (registers the methods)
from plasticity_bench.harness.app.config import LoraSettings, RunConfig, lora_settings, method_options
from plasticity_bench.harness.app.memory import check_memory
from plasticity_bench.harness.app.organism import (
    OrganismConfig,
    build_model,
    build_tokenizer,
    find_organism,
    start_source,
)
from plasticity_bench.harness.app.organism_family import starting_organism
from plasticity_bench.harness.app.refresh import Refresh, check_data
from plasticity_bench.harness.app.refresh import apply as apply_refresh
from plasticity_bench.harness.app.stages.few_shot import check_probe_fits_organism
from plasticity_bench.harness.backends import BACKENDS
from plasticity_bench.harness.backends.auto import AUTO, ROLLOUTS, BackendChoice, resolve_backend
from plasticity_bench.harness.backends.vllm_backend import check_engine_settings
from plasticity_bench.harness.core import provenance
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import RUN_FILE, RunStore, check_disk_space
from plasticity_bench.tasks.base import Item, content_hash
from plasticity_bench.tasks.identity import fingerprinted, suite_identity
from plasticity_bench.tasks.suites import SHIPPED as SHIPPED_SUITES
from plasticity_bench.tasks.suites import Suite, load_suite
from plasticity_bench.tasks.suites.check import check_training
from plasticity_bench.tasks.suites.few_shot import probe_record, probe_spec
from plasticity_bench.tasks.suites.items import EvalItems, load_eval_items
from plasticity_bench.trainers.common import TRAINERS, Trainer


@dataclass(frozen=True)
class PreparedRun:
    config: RunConfig
    out: Path
    suite: Suite
    trainer: Trainer
    items: tuple[Item, ...]
    evaluation: EvalItems  # the suite's evaluation items as loaded (`items` is its `.items`), the sets skipped here
    backend: BackendChoice  # config.backend resolved (auto → hf or vllm)
    rollouts: BackendChoice | None  # config.rollout_backend resolved; None when the method never samples
    refresh: Refresh | None = None  # --refresh on a folder whose data changed: what to redo (harness/app/refresh.py)


def with_method_defaults(config: RunConfig) -> RunConfig:
    """The config with the method's own default η and run length where it leaves them unset:
    what a run is fingerprinted with."""
    trainer_class = TRAINERS.get(config.method)
    return replace(
        config,
        lr=trainer_class.default_lr if config.lr is None else config.lr,
        steps=trainer_class.default_steps if config.steps is None else config.steps,
    )


def prepare(config: RunConfig, out: Path, refresh: bool = False) -> PreparedRun:
    """Resolve every name and check the output folder; raises BenchError, writes nothing.
    `refresh`: a folder holding this run made on other data is brought up to date, not refused."""
    trainer_class = TRAINERS.get(config.method)
    trainer = trainer_class(method_options(trainer_class.Options, config.options, config.method))
    config = with_method_defaults(config)
    backend = resolve_backend(config.backend)
    rollouts = resolve_backend(config.rollout_backend, ROLLOUTS) if trainer_class.samples_policy else None
    check_vllm_settings(config, backend, rollouts)
    suite = load_suite(config.suite)
    check_suite_trains(suite, config)
    identity = suite_identity(suite, training=True)
    fingerprint = run_fingerprint(config, suite, identity)
    plan = check_data(out, fingerprint, identity, lambda old: run_fingerprint(config, suite, old), refresh)
    if plan is None:
        RunStore.check_target(out, fingerprint)
    check_memory(config, trainer)  # harness/app/memory.py: device memory per process, before the disk
    check_disk(config, suite, out, rollouts)
    evaluation = load_eval_items(suite, config.eval_per_slice)
    items = evaluation.items
    # training data and golds too, before anything is written
    check_training(suite, config.train_examples, config.seed, evaluation.prompts)
    if config.model is None:
        check_prompts_fit_organism(config.organism, suite, items)
        check_probe_fits_organism(config.organism.max_positions, suite, evaluation.probes)
    lora = lora_settings(config)
    if lora is not None:
        check_lora_targets(lora, config)
    return PreparedRun(config, out, suite, trainer, items, evaluation, backend, rollouts, plan)


def check_vllm_settings(config: RunConfig, backend: BackendChoice, rollouts: BackendChoice | None) -> None:
    """The run's `vllm:` settings, where a vLLM engine may start (auto decides later), checked against
    this machine now rather than when the engine starts, mid-run."""
    if AUTO in (config.backend, config.rollout_backend) or "vllm" in (backend.name, rollouts and rollouts.name):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        check_engine_settings(config.vllm.enable_sleep_mode, config.vllm.tensor_parallel_size, gpus)


def check_suite_trains(suite: Suite, config: RunConfig) -> None:
    if suite.easy is None or suite.hard is None:
        raise BenchError(
            f"suite {suite.name} has no training sets (`train:`), so `bench run` cannot train on it; "
            "to score checkpoints of another trainer use `bench eval`"
        )
    if not config.model and not suite.foundation:
        raise BenchError(
            f"suite {suite.name} has no organism pre-training mix (`foundation:`); give --model MODEL_FOLDER"
        )


def open_run(run: PreparedRun, quiet: bool) -> tuple[RunStore, Path]:
    """The prepare stage's writes: the starting model (the organism is pre-trained once per machine
    unless --model names one), then the run folder, created with its run.json or reopened to resume."""
    config = run.config
    base_model = (
        Path(config.model)
        if config.model
        else starting_organism(config.organism, run.suite, config.organism_seed, quiet)
    )
    metadata = metadata_of_run(run, base_model)
    check_same_start(run.out, metadata)
    if run.refresh is not None:
        metadata = apply_refresh(run.out, run.refresh, metadata, run.items, metadata["eval_set_sha256"])
    return RunStore.open_or_create(run.out, metadata, run.items), base_model


def check_same_start(out: Path, metadata: dict[str, Any]) -> None:
    """A run folder resumes only from the weights it started from: the shipped organism starts the default
    preset's runs, so a folder begun from a machine's own pre-training of that organism must not continue."""
    run_file = out / RUN_FILE
    existing = json.loads(run_file.read_text()) if run_file.is_file() else None
    if not isinstance(existing, dict) or existing.get("fingerprint") != metadata["fingerprint"]:
        return  # a new run, or another run's folder (which RunStore refuses, naming it)
    before, now = existing.get("base_model_sha256"), metadata["base_model_sha256"]
    if before and now and before != now:
        raise BenchError(
            f"output folder {out} began from other starting weights (sha256 {before[:12]}…) than this run's "
            f"start {metadata['base_model']} ({now[:12]}…); choose another --out or delete it"
        )


def module_names(config: RunConfig) -> set[str]:
    """The last part of every Linear/Embedding module's name in the run's model (what a LoRA
    target names), read from the architecture on the meta device: nothing is loaded."""
    from transformers import AutoConfig

    with torch.random.fork_rng(), torch.device("meta"):
        model = (
            AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config.model))
            if config.model
            else build_model(config.organism, len(build_tokenizer()))
        )
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
    }


def check_lora_targets(lora: LoraSettings, config: RunConfig) -> None:
    known = module_names(config)
    unknown = [target for target in lora.targets if target not in known]
    if unknown:
        raise BenchError(
            f"lora.targets: the model has no module named {unknown[0]!r}; "
            f"its linear modules: {', '.join(sorted(known))}"
        )


def check_prompts_fit_organism(organism: OrganismConfig, suite: Suite, items: Sequence[Item]) -> None:
    """organism.max_positions must hold every evaluation prompt and its completion: found now,
    not after pre-training and training (the generate stage checks any model the same way)."""
    tokenizer = build_tokenizer()
    by_set: dict[str, list[int]] = {}
    for item in items:
        by_set.setdefault(item.slice, []).append(len(tokenizer.encode(item.prompt, add_special_tokens=False)))
    for slice_, lengths in by_set.items():
        budget = suite.eval_set(slice_).sampling.max_new_tokens
        needed = max(lengths) + budget
        if needed > organism.max_positions:
            raise BenchError(
                f"organism.max_positions ({organism.max_positions}) is too short for evaluation set {slice_}: "
                f"its longest prompt has {max(lengths)} tokens and {budget} more are generated; "
                f"set it to at least {needed}"
            )


def check_disk(config: RunConfig, suite: Suite, out: Path, rollouts: BackendChoice | None) -> None:
    """The store's disk estimate (harness/store/disk.py) for this run's model and settings."""
    assert config.steps is not None, "prepare() resolves the method's default steps first"
    engine_copy = rollouts is not None and not BACKENDS.get(rollouts.name).capabilities.policy_in_memory
    check_disk_space(
        out,
        model_size_bytes(config, suite),
        config.steps,
        config.checkpoint_every,
        config.keep_checkpoints,
        engine_copy,
    )


def model_size_bytes(config: RunConfig, suite: Suite) -> int:
    """The size of one checkpoint's weights: the model folder's weight files, or the organism's
    parameters in float32 (counted on the meta device when it is not built yet)."""
    folder = Path(config.model) if config.model else find_organism(config.organism, suite)
    files = (
        [f for pattern in ("*.safetensors", "*.bin", "*.pt") for f in folder.glob(pattern)] if folder.is_dir() else []
    )
    if files or config.model:
        return sum(f.stat().st_size for f in files)
    with torch.random.fork_rng(), torch.device("meta"):  # build_model seeds torch; nothing is allocated
        return 4 * build_model(config.organism, len(build_tokenizer())).num_parameters()


def run_fingerprint(config: RunConfig, suite: Suite, identity: dict[str, Any] | None = None) -> str:
    """The config's identity, plus the suite file's content when the suite is a user's file, plus
    its data files' content and its libraries' versions (`identity`, tasks/identity.py; the current
    one when None)."""
    data = fingerprinted(suite_identity(suite, training=True) if identity is None else identity)
    data.update({"few_shot_probe": probe_spec(suite)} if probe_spec(suite) else {})  # what it probes is a result
    return (
        config.fingerprint(data or None)
        if suite.path.parent == SHIPPED_SUITES
        else config.fingerprint({"suite_sha256": suite.sha256, **data})
    )


def run_metadata(
    *,
    fingerprint: str,
    method: str,
    suite: Suite,
    evaluation: EvalItems,
    seed: int,
    config: dict[str, Any],
    backend: BackendChoice,
    data_identity: dict[str, Any],
    **more: Any,
) -> dict[str, Any]:
    """run.json's description of a run (`bench run` and `bench eval`): its identity, its suite and
    evaluation items by hash, its settings, the generation backend and why, where and when it was
    made; `more`: what only one kind of run records. The store adds the format and the stages."""
    by_slice: dict[str, list[Item]] = {}
    for item in evaluation.items:
        by_slice.setdefault(item.slice, []).append(item)
    return {
        "fingerprint": fingerprint,
        "data_identity": data_identity,
        "method": method,
        "suite": suite.name,
        "suite_sha256": suite.sha256,
        "suite_spec": evaluation.summary(),
        "seed": seed,
        "config": config,
        "backend": backend.name,
        "backend_reason": backend.reason,
        "eval_sets": {name: {"n": len(items), "sha256": content_hash(items)} for name, items in by_slice.items()},
        "eval_set_sha256": content_hash(evaluation.items),
        "provenance": provenance.collect(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **probe_record(suite, evaluation.probes),  # the few-shot probe (tasks/suites/few_shot.py), if any
        **more,
    }


def metadata_of_run(run: PreparedRun, base_model: Path) -> dict[str, Any]:
    """`bench run`'s run.json: the common description plus the starting model, rollouts, LoRA and options."""
    lora = lora_settings(run.config)
    options = run.trainer.options
    return run_metadata(
        fingerprint=run_fingerprint(run.config, run.suite),
        method=run.config.method,
        suite=run.suite,
        evaluation=run.evaluation,
        seed=run.config.seed,
        config=run.config.to_dict(),
        backend=run.backend,
        data_identity=suite_identity(run.suite, training=True),
        base_model=str(base_model),
        base_model_sha256=provenance.weights_digest(base_model),
        base_model_source="model" if run.config.model else start_source(base_model),  # shipped or pre-trained here
        organism_seed=run.config.organism_seed,  # organism S of the family; None: the preset's organism
        rollout_backend=run.rollouts and run.rollouts.name,
        rollout_backend_reason=run.rollouts.reason if run.rollouts else "the method does not sample its policy",
        lora=asdict(lora) if lora else None,
        method_options=asdict(options) if is_dataclass(options) and not isinstance(options, type) else {},
    )
