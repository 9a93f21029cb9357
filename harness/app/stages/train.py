"""The train stage: checkpoint 0 is the starting model, then the method's stages, checkpointing as
they go; train_log.parquet at the end.

Resumes: a re-run of a run stopped during training (a kill, a crash, SIGINT/SIGTERM) starts from
the last checkpoint in the manifest (harness/store/checkpoints.py), drops whatever was written
after it, and ends with the same weights, log and records as a run that never stopped.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from plasticity_bench.harness.app.config import LoraSettings, RunConfig, lora_settings
from plasticity_bench.harness.app.organism import pretraining_mix
from plasticity_bench.harness.app.stages import timed
from plasticity_bench.harness.app.stages.prepare import PreparedRun
from plasticity_bench.harness.app.stages.prompts import note_chat_fallback, rendered
from plasticity_bench.harness.backends import BACKENDS, BackendPool
from plasticity_bench.harness.backends.auto import BackendChoice
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.interrupt import kill_point, uninterruptible
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.store import (
    TRAIN_LOG_FILE,
    CheckpointRecord,
    RunStore,
    checkpoint_name,
    load_trainer_state,
    resumable_checkpoints,
    save_checkpoint,
    save_trainer_state,
    trainer_state_path,
    write_manifest,
)
from plasticity_bench.tasks.base import Item
from plasticity_bench.tasks.suites.items import training_items
from plasticity_bench.trainers.common import Checkpoint, LoopConfig, MethodSettings, TrainContext, TrainingData
from plasticity_bench.trainers.common import train as train_loop
from plasticity_bench.trainers.device import Placement, choose_placement
from plasticity_bench.trainers.distributed import SINGLE, Distributed
from plasticity_bench.trainers.rollouts import POLICY_FOLDER, PolicySampler

OnLog = Callable[[dict[str, Any]], None]


def train(
    store: RunStore, run: PreparedRun, base_model: Path, backends: BackendPool, quiet: bool, on_log: OnLog | None = None
) -> None:
    """Train unless done; run.json records the step it resumed from and the steps it ran."""
    if store.stage_done("train"):
        return
    if run.config.num_processes > 1:  # the train stage alone runs under N processes (train_launch.py)
        from plasticity_bench.harness.app.stages.train_launch import launch_training

        timed(store, "train", lambda: launch_training(store, run, base_model, quiet, on_log))
    else:
        timed(store, "train", lambda: train_stage(store, run, base_model, backends, quiet, on_log))


def train_stage(
    store: RunStore,
    run: PreparedRun,
    base_model: Path,
    backends: BackendPool,
    quiet: bool,
    on_log: OnLog | None = None,
    dist: Distributed = SINGLE,
) -> dict:
    """Resumes from the last complete checkpoint of an earlier attempt when there is one (the
    method's `setup` runs again on the starting model, then the checkpoint's weights and training
    state are loaded). Returns what run.json records. Under N processes (`dist`) every process
    trains and only the main one writes the run folder."""
    config = run.config
    tokenizer, model, records = open_training(store, base_model, dist)
    resumed_from = records[-1]
    lora = lora_settings(config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model, lora is not None)
    if lora is not None:  # from here on the model is the start + adapters; checkpoints are saved merged
        model = with_lora(model, lora, config.seed)
    saver = checkpoint_saver(store, model, tokenizer, records, lora is not None, config.keep_checkpoints)
    save = saver if dist.main else None  # under N processes the main one writes the run folder
    data = training_data(store, run, tokenizer, base_model)
    assert config.lr is not None and config.steps is not None, "prepare() resolves the method's default η and steps"
    sampler = rollout_sampler(run.rollouts, backends, store.root / policy_folder(dist))
    placement = with_precision(choose_placement(config.device), config.mixed_precision)
    sampler.sleep_during_updates = placement.device == "cuda"  # an engine on a GPU is on the trainer's GPU
    model.to(placement.device)
    if dist.main:
        store.update_metadata(training_device=placement.describe(), **process_metadata(config, model))
    run_dir = store.root if dist.main else None  # datasets a method builds are saved once
    ctx = TrainContext(tokenizer, loop_config(config), run_dir, sampler=sampler, placement=placement, dist=dist)
    # counted on the whole model: ZeRO-3 leaves empty placeholders in the model while it trains
    counts = {
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    try:
        run.trainer.setup(model, data, ctx)  # on the starting model, also when resuming (it is deterministic)
        resume = load_resume_state(store, model, resumed_from, lora is not None)
        with progress_bar(config.steps, f"training ({config.method})", quiet or not dist.main) as advance:
            if resumed_from.step:
                advance(n=resumed_from.step)
            stages = run.trainer.stages(data, MethodSettings(config.steps, config.lr))
            log = train_loop(model, run.trainer, stages, ctx, save, lambda _step, loss: advance(loss), resume, on_log)
    finally:
        sampler.close()
    if not dist.main:
        return {}
    store.write_table(TRAIN_LOG_FILE, pd.DataFrame(log))
    if run.rollouts:
        store.update_metadata(rollouts=asdict(sampler.stats))
    if sampler.engine is not None and sampler.engine.engine_settings():
        store.update_metadata(engine_settings=sampler.engine.engine_settings())
    return {
        "resumed_from_step": resumed_from.step,
        "steps_run": len(log) - resumed_from.step,
        **counts,
    }


def open_training(store: RunStore, base_model: Path, dist: Distributed) -> tuple[Any, Any, list[CheckpointRecord]]:
    """The tokenizer, the starting model and the manifest to go on from (`start_or_resume`, by the main
    process; the others wait for it and get the same)."""
    if dist.main:
        shutil.rmtree(store.generations, ignore_errors=True)  # generations belong to a finished train stage
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # fp32 master weights whatever the folder stores (a bf16 checkpoint would otherwise train in pure
    # bf16, where AdamW steps at η ≈ 1e-6 round away); bf16 enters only through autocast
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    records = dist.broadcast(start_or_resume(store, model, tokenizer) if dist.main else None)
    return tokenizer, model, records


def with_precision(placement: Placement, mixed_precision: str) -> Placement:
    """The device's placement with the run's `mixed_precision`: auto keeps the device's choice
    (bf16 autocast on a GPU that has it), no is fp32, bf16 is bf16 autocast (on a CPU too, slowly)."""
    if mixed_precision == "auto":
        return placement
    return Placement(placement.device, torch.bfloat16 if mixed_precision == "bf16" else None)


def enable_gradient_checkpointing(model: Any, lora: bool) -> None:
    """Recompute each layer's activations in the backward pass (transformers); with LoRA the
    frozen embeddings' output must require grad for the recomputed layers to reach the adapters."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        model.enable_input_require_grads()


def process_metadata(config: RunConfig, model: Any) -> dict[str, Any]:
    """run.json's record of how training ran: processes, launcher, gradient checkpointing as the model has it."""
    return {
        "training_processes": config.num_processes,
        "launcher": config.launcher if config.num_processes > 1 else None,
        "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
    }


def policy_folder(dist: Distributed) -> str:
    """The rollout engine's scratch weights folder: one per process (each may run its own engine)."""
    return POLICY_FOLDER if not dist.active else f"{POLICY_FOLDER}-{dist.rank}"


def start_or_resume(store: RunStore, model: Any, tokenizer: Any) -> list[CheckpointRecord]:
    """The manifest to go on from: an earlier attempt's up to its last resumable checkpoint, else
    (starting over) a fresh one holding checkpoint 0, the starting model."""
    records = resumable_checkpoints(store, clean=True)
    if records:
        return records
    shutil.rmtree(store.checkpoints, ignore_errors=True)
    store.checkpoints.mkdir(parents=True)
    records = [CheckpointRecord(0, "start", 0.0, None, 0, f"checkpoints/{checkpoint_name(0)}")]
    save_checkpoint(model, tokenizer, store.checkpoints / checkpoint_name(0))
    write_manifest(store.checkpoints, records)
    return records


def checkpoint_saver(
    store: RunStore, model: Any, tokenizer: Any, records: list[CheckpointRecord], lora: bool, keep: str
) -> Callable[[Checkpoint], None]:
    """What the training loop calls at each checkpoint: model folder, then training state, then the
    manifest that makes the checkpoint count (appended to `records`)."""

    def save(checkpoint: Checkpoint) -> None:
        with uninterruptible():
            save_checkpoint(model, tokenizer, store.checkpoints / checkpoint_name(checkpoint.step), checkpoint.weights)
            kill_point("model", checkpoint.step)
            state = {**checkpoint.state, "lora": adapter_state(model)} if lora else checkpoint.state
            save_trainer_state(state, trainer_state_path(store.checkpoints, checkpoint.step))
            path = f"checkpoints/{checkpoint_name(checkpoint.step)}"
            records.append(
                CheckpointRecord(
                    checkpoint.step, checkpoint.stage, checkpoint.lr, checkpoint.loss, checkpoint.examples_seen, path
                )
            )
            write_manifest(store.checkpoints, records)
            if keep != "all":  # resuming needs only the latest training state
                for earlier in records[1:-1]:
                    trainer_state_path(store.checkpoints, earlier.step).unlink(missing_ok=True)

    return save


def training_data(store: RunStore, run: PreparedRun, tokenizer: Any, base_model: Path) -> TrainingData:
    """The easy and hard training items rendered for the model (and the replay mix where the method wants it)."""
    suite, config = run.suite, run.config
    assert suite.easy is not None and suite.hard is not None, "prepare() checks the suite can train"
    training_prompts = {f"{t.name}/{t.split}": t.prompt for t in (suite.easy, suite.hard)}
    note_chat_fallback(store, training_prompts, tokenizer, base_model, "training")
    exclude = run.evaluation.prompts
    easy = training_items(suite, suite.easy, config.train_examples, config.seed, exclude)
    easy_rendered = rendered(easy, suite.easy.prompt, tokenizer)
    hard = training_items(suite, suite.hard, config.train_examples, config.seed, exclude)
    return TrainingData(
        easy=easy_rendered,
        hard=rendered(hard, suite.hard.prompt, tokenizer),
        foundation=foundation_items(run, tokenizer) if run.trainer.needs_foundation else (),
    )


def loop_config(config: RunConfig) -> LoopConfig:
    return LoopConfig(
        config.batch_size,
        config.warmup_fraction,
        config.min_lr_ratio,
        config.weight_decay,
        config.grad_clip,
        config.checkpoint_every,
        config.seed,
        config.grad_accum,
    )


def load_resume_state(store: RunStore, model: Any, resumed_from: CheckpointRecord, lora: bool) -> dict | None:
    """The training state to resume from (None at the start), with the checkpoint's weights loaded into `model`."""
    if resumed_from.step == 0:
        return None
    resume = load_trainer_state(trainer_state_path(store.checkpoints, resumed_from.step))
    if not lora:  # onto the model's device
        saved = AutoModelForCausalLM.from_pretrained(store.root / resumed_from.path, dtype=torch.float32)
        model.load_state_dict(saved.state_dict())
    else:  # the checkpoint's model folder is merged: the adapters themselves are in the training state
        load_adapter_state(model, resume["lora"])
    return resume


def with_lora(model: Any, lora: LoraSettings, seed: int) -> Any:
    """The model wrapped with fresh LoRA adapters (peft; B = 0, so it starts as the model itself),
    only the adapters trainable. A is initialised from `seed`: the same adapters every time."""
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                target_modules=list(lora.targets),
                lora_dropout=lora.dropout,
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """The LoRA adapters' weights (what resuming a LoRA run loads; its model folders are merged)."""
    from peft import get_peft_model_state_dict

    return {name: tensor.detach().clone() for name, tensor in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    unexpected = getattr(set_peft_model_state_dict(model, state), "unexpected_keys", None)
    if unexpected:
        raise BenchError(
            f"the training state's LoRA adapters do not fit this model ({unexpected[0]}): it cannot be resumed"
        )


def foundation_items(run: PreparedRun, tokenizer: Any) -> list[Item]:
    """Items of the organism's pre-training mix (replay): `train_examples` in all, drawn as the organism's
    recipe draws them (each (task, level) of the suite's `foundation:`, the in-context share packed after
    solved examples) at the run's seed; none for a `--model` run."""
    if run.config.model or not run.suite.foundation:
        return []
    config = run.config
    return pretraining_mix(
        config.organism, run.suite, config.train_examples, config.seed, run.evaluation.prompts, tokenizer
    )


def rollout_sampler(choice: BackendChoice | None, backends: BackendPool, scratch: Path) -> PolicySampler:
    """In memory where the backend samples a policy in memory (and for methods that never sample);
    else the run's engine of that backend, synced per rollout."""
    if choice is None or BACKENDS.get(choice.name).capabilities.policy_in_memory:
        return PolicySampler()
    return PolicySampler.with_engine(backends.get(choice.name), scratch)
