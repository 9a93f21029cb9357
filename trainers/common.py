"""Shared training machinery: encoding, batching, schedules, the loop, checkpoints, resuming.

A method (one file each in `trainers/`) only says *which stages on which data at which learning
rate* and *what loss*; everything else lives here once. Pre-training the model organism is the
same loop with one stage on the foundation mix.

Resuming: at every checkpoint the loop hands `save` a `Checkpoint` whose `state` holds everything
besides the weights that training needs to go on exactly as if it had never stopped: the
position (global step, stage index, step within the stage), the optimizer's state, the RNG
states (python `random`, numpy, torch), the log so far, the rollout counters and the method's
own state (`Trainer.state_dict`, e.g. SPoT's running δ or GRPO's current rollout). The data
streams are index-based: `Trainer.batches(..., start)` re-creates a stage's stream at its
`start`-th batch. `train(..., resume=state)`, on a model holding that checkpoint's weights and a
trainer whose `setup` ran on the starting model, continues bit for bit.

Several processes (`TrainContext.dist`, trainers/distributed.py): each trains its block of every
batch's rows (`Trainer.shard_backward`) and the gradients are summed across them; every process
takes part in each checkpoint, whose state then also holds each process's RNG and method state
(`rng_by_rank`, `method_by_rank`), and only the main process's `save` writes it. Sharded (FSDP,
trainers/fsdp.py), the model is sharded when training starts, FSDP sums the gradients, and each
checkpoint's weights and optimizer state are gathered whole for the main process. Under DeepSpeed's
ZeRO (trainers/deepspeed_zero.py) each stage's AdamW goes into an engine that stands in for it. Alone,
none of this runs: a 1-process run computes exactly what it did before processes existed.
"""

from __future__ import annotations

import copy
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.interrupt import kill_point
from plasticity_bench.harness.core.registry import Registry
from plasticity_bench.tasks.base import Item
from plasticity_bench.trainers.deepspeed_zero import ZeroOptimizer, engine_config
from plasticity_bench.trainers.device import Placement, to_device
from plasticity_bench.trainers.distributed import SINGLE, Distributed
from plasticity_bench.trainers.fsdp import (
    check_resumable,
    load_optimizer_state,
    optimizer_state,
    shard,
    tied,
    whole_weights,
)
from plasticity_bench.trainers.fsdp import state_marker as sharding_marker
from plasticity_bench.trainers.rollouts import PolicySampler, RolloutStats


@dataclass(frozen=True)
class Stage:
    """A contiguous block of training: its own data, step count and cosine schedule."""

    name: str
    items: Sequence[Any]  # what the method's batches are made of (items, preference pairs, prompts)
    steps: int
    peak_lr: float


@dataclass(frozen=True)
class LoopConfig:
    batch_size: int
    warmup_fraction: float  # of each stage's steps
    min_lr_ratio: float  # cosine decays to peak_lr * min_lr_ratio
    weight_decay: float
    grad_clip: float
    checkpoint_every: int  # 0: only at stage ends
    seed: int
    grad_accum: int = 1  # micro-batches per optimiser step: a global batch that fits a small device


@dataclass(frozen=True)
class TrainingData:
    """What a method may train on: the suite's easy and hard post-training sets, and (for a
    method with `Trainer.needs_foundation`, on the organism) items of its pre-training mix."""

    easy: Sequence[Item]
    hard: Sequence[Item]
    foundation: Sequence[
        Item
    ] = ()  # the suite's `foundation:` mix, unrendered as pre-training saw it; () for a --model run


@dataclass(frozen=True)
class MethodSettings:
    """The method-independent knobs every trainer receives (from the run config)."""

    steps: int  # total post-training steps
    lr: float  # η, the peak learning rate


class NoOptions:
    """For methods without hyperparameters of their own."""


OptionsT = TypeVar("OptionsT")


@dataclass
class TrainContext:
    """What a method may use besides its data: tokenizer, loop settings, run folder, step log."""

    tokenizer: PreTrainedTokenizerBase
    loop: LoopConfig
    run_dir: Path | None = None  # where a method may save datasets it builds (None: nowhere)
    reference: PreTrainedModel | None = None  # frozen π_ref, made by `freeze_reference`
    sampler: PolicySampler = field(default_factory=PolicySampler)  # rollouts: in memory, or a vLLM engine kept in sync
    placement: Placement = field(
        default_factory=lambda: Placement("cpu", None)
    )  # device and precision (trainers/device.py)
    dist: Distributed = SINGLE  # this process among several training processes (trainers/distributed.py)
    # while the model in training is sharded: a whole copy of it that samples, refreshed before every draw
    # (trainers/sharded.py)
    whole_policy: PreTrainedModel | None = None


class Trainer(ABC, Generic[OptionsT]):
    """A post-training method: its curriculum, its batches and its update.

    The defaults are SFT's: batches of (prompt, target) items, token-level NLL on completion
    tokens, one AdamW step. Preference and RL methods override `batches` and `loss` (or
    `update`, for PCR's two-gradient step) and set `Options` to a dataclass of hyperparameters,
    subclassing `Trainer[ThatDataclass]` so `self.options` has its type.
    """

    name: ClassVar[str]  # set by TRAINERS.register
    Options: ClassVar[type] = NoOptions
    # η when the config does not set one: each method's own, from the sweep in BENCHMARKS §11 (organism A)
    # (about 1/10 of the organism's pre-training η for SFT, as real post-training runs well below
    # pre-training's; at 1e-3, SFT learnt as much but forgot far more).
    default_lr: ClassVar[float] = 3e-4
    # post-training steps when the config does not set them; the RL methods need more rollouts
    # than the others need batches to gain beyond noise (BENCHMARKS §12.6).
    default_steps: ClassVar[int] = 300
    # Whether the method samples from its policy (through ctx.sampler): the run's rollout backend applies.
    samples_policy: ClassVar[bool] = False
    # Whether the method trains on the organism's pre-training mix (TrainingData.foundation; replay).
    needs_foundation: ClassVar[bool] = False

    def __init__(self, options: OptionsT | None = None) -> None:
        self.options: OptionsT = options if options is not None else cast(OptionsT, self.Options())

    @abstractmethod
    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        """The method's curriculum."""

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        """Called once before `stages`, on the starting model (e.g. freeze a reference model, build
        pairs from samples). It must be deterministic: a resumed run calls it again on the starting
        model rather than saving what it built."""

    def batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        """The stage's endless stream of batches from its `start`-th batch on (a resumed run
        re-creates the stream where it stopped: the stream must be a function of `start`, the
        seed and what `load_state_dict` restored)."""
        return batches(ctx.tokenizer, stage.items, ctx.loop.batch_size, f"{ctx.loop.seed}/{stage.name}", start)

    def state_dict(self) -> dict[str, Any]:
        """The method's own training state that resuming needs (the loop saves the weights, the
        optimizer, the RNGs and the stream position): tensors and plain Python values only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; called after `setup`, before the first batch."""

    def loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_loss(model, batch), {}

    def update(
        self,
        model: PreTrainedModel,
        batch: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        ctx: TrainContext,
    ) -> dict[str, float]:
        """One optimiser step; returns the step's metrics: "loss" at least, and "examples" (new
        training examples this step consumed) when that is not the loop's batch size.

        With ctx.loop.grad_accum = k the batch is split into k micro-batches whose gradients add
        up, each weighted by its share of the batch's rows (for a per-token mean loss this weighs
        rows, not tokens: the same as the whole batch when rows are equally long)."""
        optimizer.zero_grad(set_to_none=True)
        if ctx.dist.active:  # this process's rows, gradients summed over the processes
            value, metrics = self.shard_backward(model, batch, ctx, optimizer)
        elif ctx.loop.grad_accum == 1:  # the whole batch at once: bit for bit what runs always did
            with ctx.placement.autocast():
                loss, metrics = self.loss(model, batch)
            loss.backward()
            value = loss.item()
        else:
            value, metrics = 0.0, {}
            for part, weight in micro_batches(batch, ctx.loop.grad_accum):
                with ctx.placement.autocast():
                    part_loss, part_metrics = self.loss(model, part)
                (part_loss * weight).backward()
                value += weight * part_loss.item()
                for key, number in part_metrics.items():
                    metrics[key] = metrics.get(key, 0.0) + weight * float(number)
        if not isinstance(optimizer, ZeroOptimizer):  # DeepSpeed clips the whole gradient inside its step
            torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.loop.grad_clip)
        optimizer.step()
        return {"loss": value, **metrics}

    def shard_backward(
        self,
        model: PreTrainedModel,
        batch: dict[str, torch.Tensor],
        ctx: TrainContext,
        optimizer: torch.optim.Optimizer | ZeroOptimizer,
    ) -> tuple[float, dict[str, float]]:
        """Under N processes: this process's block of the batch's rows (then `grad_accum` micro-batches
        of it), each weighted by its share of the whole batch, gradients and metrics summed over the
        processes: what one process computes with `grad_accum` N (trainers/distributed.py)."""
        part, share = ctx.dist.share(batch)
        totals: dict[str, float] = {"loss": 0.0}
        for micro, weight in micro_batches(part, ctx.loop.grad_accum):
            with ctx.placement.autocast():
                micro_loss, micro_metrics = self.loss(model, micro)
            weighted = micro_loss * (share * weight)
            optimizer.backward(weighted) if isinstance(optimizer, ZeroOptimizer) else weighted.backward()
            totals["loss"] += share * weight * micro_loss.item()
            for key, number in micro_metrics.items():
                totals[key] = totals.get(key, 0.0) + share * weight * float(number)
        ctx.dist.all_reduce_grads([p for p in model.parameters() if p.requires_grad])
        totals = ctx.dist.sum_values(totals)
        return totals.pop("loss"), totals


TRAINERS: Registry[type[Trainer[Any]]] = Registry("method")


def micro_batches(batch: dict[str, Any], parts: int) -> list[tuple[dict[str, Any], float]]:
    """`batch` split along its rows into (at most) `parts` micro-batches with their row shares;
    scalars (0-dim tensors, numbers) go to every part unchanged."""
    rows = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    bounds = [round(rows * i / parts) for i in range(parts + 1)]
    out = []
    for start, end in zip(bounds, bounds[1:]):
        if end > start:
            part = {k: v[start:end] if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in batch.items()}
            out.append((part, (end - start) / rows))
    return out


def sft_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """L = −(1/|y|) Σ_t log π_θ(y_t | x, y_<t), averaged over the batch's completion tokens."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def two_stage(data: TrainingData, settings: MethodSettings, stage1_fraction: float, stage2_lr: float) -> list[Stage]:
    """RPS/EPS curriculum: `stage1_fraction` of the steps on easy data at η, then hard data at `stage2_lr`."""
    stage1_steps = round(settings.steps * stage1_fraction)
    return [
        Stage("easy", data.easy, stage1_steps, settings.lr),
        Stage("hard", data.hard, settings.steps - stage1_steps, stage2_lr),
    ]


# ---------------------------------------------------------------- encoding and batching


def encode(tokenizer: PreTrainedTokenizerBase, item: Item, eos: bool = True) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for prompt + target + EOS (no EOS for a target that is only the start of
    a completion); prompt positions are masked (-100)."""
    prompt_ids = tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(item.target, add_special_tokens=False)["input_ids"] + (
        [tokenizer.eos_token_id] if eos else []
    )
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def batches(
    tokenizer: PreTrainedTokenizerBase, items: Sequence[Item], batch_size: int, seed: str, start: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """An endless stream of batches, sampled uniformly with replacement, deterministic in `seed`;
    the stream from its `start`-th batch (the skipped batches' picks are drawn, not encoded)."""
    rng = random.Random(seed)
    for _ in range(start * batch_size):
        rng.randrange(len(items))
    cache: dict[int, tuple[list[int], list[int]]] = {}
    while True:
        picks = [rng.randrange(len(items)) for _ in range(batch_size)]
        for i in picks:
            if i not in cache:
                cache[i] = encode(tokenizer, items[i])
        yield collate([cache[i] for i in picks], tokenizer.pad_token_id)


def mixed_picks(
    sizes: Sequence[int], counts: Sequence[int], seed: str, start: int = 0
) -> Iterator[list[tuple[int, int]]]:
    """An endless stream of batches of (source, index) picks: `counts[s]` items of source `s` per
    batch, each source sampled uniformly with replacement from its own RNG (deterministic in
    `seed`), from the `start`-th batch on. The sources' picks come in source order."""
    rngs = [random.Random(f"{seed}/{source}") for source in range(len(sizes))]
    for rng, size, count in zip(rngs, sizes, counts):
        for _ in range(start * count):
            rng.randrange(size)
    while True:
        yield [
            (source, rng.randrange(size))
            for source, (rng, size, count) in enumerate(zip(rngs, sizes, counts))
            for _ in range(count)
        ]


def mixed_batches(
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[Sequence[Item]],
    counts: Sequence[int],
    seed: str,
    start: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """`batches` over several item sources at fixed per-batch counts (replay: hard + foundation)."""
    cache: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for picks in mixed_picks([len(items) for items in sources], counts, seed, start):
        for source, i in picks:
            if (source, i) not in cache:
                cache[source, i] = encode(tokenizer, sources[source][i])
        yield collate([cache[pick] for pick in picks], tokenizer.pad_token_id)


# ---------------------------------------------------------------- schedule


def cosine_lr(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `peak * min_ratio` at the stage's last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---------------------------------------------------------------- the loop

STATE_VERSION = 1  # of the `Checkpoint.state` layout


@dataclass(frozen=True)
class Checkpoint:
    """What `save` receives every `checkpoint_every` steps and at every stage's end."""

    step: int
    stage: str
    lr: float
    loss: float  # mean training loss since the previous checkpoint
    examples_seen: int
    state: dict[str, Any]  # everything besides the weights that `train(..., resume=state)` needs
    # the whole weights to save when the model in memory is sharded (FSDP); None: the model's own state dict
    weights: dict[str, Any] | None = None


OnStep = Callable[[int, float], None]  # (global step, loss) -> None, e.g. a progress bar
OnLog = Callable[[dict[str, Any]], None]  # one row of the training log, e.g. to an experiment tracker
Save = Callable[[Checkpoint], None]


def freeze_reference(model: PreTrainedModel) -> PreTrainedModel:
    """π_ref: a frozen copy of the model as it is now (the starting model, when called in setup)."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def rng_state() -> dict[str, Any]:
    """The global RNGs a step may draw from: python `random`, numpy, torch (CPU)."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])


@dataclass
class _Progress:
    """Where a training run stands: the global step, the examples seen, the log so far, the losses
    since the last checkpoint, and the stage (and step within it) the next update belongs to."""

    step: int = 0
    examples_seen: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stage_index: int = 0
    stage_step: int = 0


@dataclass(frozen=True)
class _Hooks:
    save: Save | None
    on_step: OnStep | None
    on_log: OnLog | None


def train(
    model: PreTrainedModel,
    trainer: Trainer,
    stages: Sequence[Stage],
    ctx: TrainContext,
    save: Save | None = None,
    on_step: OnStep | None = None,
    resume: dict[str, Any] | None = None,
    on_log: OnLog | None = None,
) -> list[dict[str, Any]]:
    """Run the stages in order; return one log row per step (step, stage, lr and the method's metrics).

    Each stage gets a fresh AdamW and its own warm-up + cosine. `save` is called every
    `checkpoint_every` steps and at every stage's end (the stage boundary is always a checkpoint).
    `resume`: a checkpoint's `state`; the model must already hold that checkpoint's weights and
    the trainer's `setup` must have run on the starting model. Training then goes on from the
    step after that checkpoint, and ends with the same weights and log as an uninterrupted run.
    `on_log` receives every row of the log as it is made (a resumed run's rows up to its checkpoint first).
    """
    torch.manual_seed(ctx.loop.seed)
    sharding = ctx.dist.sharding
    if sharding is not None and not sharding.by_deepspeed:  # FSDP: `setup` and a resume's weights saw the whole model
        shard(model, ctx.dist, ctx.placement.device)
    model.train()
    progress = _Progress() if resume is None else _restored(resume, trainer, ctx)
    if on_log:
        for row in progress.log:
            on_log(row)
    hooks = _Hooks(save, on_step, on_log)
    for index, stage in enumerate(stages):
        first = progress.stage_step if index == progress.stage_index else 0
        if stage.steps <= 0 or index < progress.stage_index or first >= stage.steps:
            continue
        _run_stage(model, trainer, stage, index, first, ctx, progress, resume, hooks)
    model.eval()
    return progress.log


def _restored(resume: dict[str, Any], trainer: Trainer, ctx: TrainContext) -> _Progress:
    """The progress a checkpoint's `state` records; the RNGs, the method's state and the rollout
    counters are set back to what they were at that checkpoint."""
    if resume.get("version") != STATE_VERSION:
        raise BenchError(
            f"training state version {resume.get('version')} is not {STATE_VERSION}: "
            "this run cannot be resumed by this version"
        )
    check_resumable(resume, ctx.dist)
    progress = _Progress(resume["step"], resume["examples_seen"], list(resume["log"]))
    progress.stage_index, progress.stage_step = resume["stage_index"], resume["stage_step"]
    set_rng_state(own_rng(resume, ctx))
    trainer.load_state_dict(resume["method_by_rank"][ctx.dist.rank] if ctx.dist.active else resume["method"])
    for counter in fields(RolloutStats):
        if counter.name != "backend":
            setattr(ctx.sampler.stats, counter.name, resume["rollouts"][counter.name])
    return progress


def _run_stage(
    model: PreTrainedModel,
    trainer: Trainer,
    stage: Stage,
    index: int,
    first: int,
    ctx: TrainContext,
    progress: _Progress,
    resume: dict[str, Any] | None,
    hooks: _Hooks,
) -> None:
    """Steps `first` to the end of stage `index`, with a fresh AdamW (the checkpoint's, when resuming
    inside the stage) and the stage's warm-up + cosine schedule."""
    optimizer = stage_optimizer(model, stage, ctx)
    try:
        if first > 0:
            assert resume is not None
            if isinstance(optimizer, torch.optim.Optimizer) and ctx.dist.sharding is not None:
                load_optimizer_state(model, optimizer, resume["optimizer"])  # FSDP: whole, keyed by name, into shards
            else:
                optimizer.load_state_dict(resume["optimizer"])
        _run_steps(model, trainer, stage, index, first, ctx, progress, hooks, optimizer)
    finally:
        if isinstance(optimizer, ZeroOptimizer):
            optimizer.close()


def stage_optimizer(model: PreTrainedModel, stage: Stage, ctx: TrainContext) -> torch.optim.Optimizer | ZeroOptimizer:
    """A stage's fresh AdamW; under DeepSpeed ZeRO, inside a new engine (trainers/deepspeed_zero.py)."""
    config = ctx.loop
    adamw = torch.optim.AdamW(model.parameters(), lr=stage.peak_lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    sharding = ctx.dist.sharding
    if sharding is None or not sharding.by_deepspeed:
        return adamw
    rows = math.ceil(config.batch_size / ctx.dist.world / config.grad_accum)
    return ZeroOptimizer(model, adamw, ctx.dist, engine_config(sharding.zero_stage, rows, config.grad_clip))


def _run_steps(
    model: PreTrainedModel,
    trainer: Trainer,
    stage: Stage,
    index: int,
    first: int,
    ctx: TrainContext,
    progress: _Progress,
    hooks: _Hooks,
    optimizer: torch.optim.Optimizer | ZeroOptimizer,
) -> None:
    """Steps `first` to the end of stage `index` with `optimizer` and the stage's warm-up + cosine schedule."""
    config = ctx.loop
    warmup = max(1, round(stage.steps * config.warmup_fraction))
    stream = trainer.batches(model, stage, ctx, first)
    for stage_step in range(first, stage.steps):
        lr = cosine_lr(stage_step, stage.steps, stage.peak_lr, warmup, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        metrics = trainer.update(model, to_device(next(stream), ctx.placement.device), optimizer, ctx)  # type: ignore[arg-type]
        progress.step += 1
        progress.examples_seen += int(metrics.pop("examples", config.batch_size))
        progress.losses.append(metrics["loss"])
        progress.log.append({"step": progress.step, "stage": stage.name, "lr": lr, **metrics})
        if hooks.on_log:
            hooks.on_log(progress.log[-1])
        if hooks.on_step:
            hooks.on_step(progress.step, metrics["loss"])
        kill_point("step", progress.step)
        stage_end = stage_step == stage.steps - 1
        # under N processes every process takes part in a checkpoint (its RNG state is gathered); the main one saves
        saving = hooks.save is not None or ctx.dist.active
        if saving and (stage_end or (config.checkpoint_every and progress.step % config.checkpoint_every == 0)):
            state = _checkpoint_state(model, trainer, stage, index, stage_step, optimizer, ctx, progress)
            model.eval()
            mean_loss = sum(progress.losses) / len(progress.losses)
            weights = checkpoint_weights(
                model, optimizer, ctx
            )  # sharded: every process gathers what the main one saves
            if hooks.save:
                hooks.save(Checkpoint(progress.step, stage.name, lr, mean_loss, progress.examples_seen, state, weights))
            del weights
            model.train()
            set_rng_state(own_rng(state, ctx))  # whatever saving drew, the next step starts where a resumed run does
            progress.losses = []
            kill_point("checkpoint", progress.step)


def _checkpoint_state(
    model: torch.nn.Module,
    trainer: Trainer,
    stage: Stage,
    index: int,
    stage_step: int,
    optimizer: torch.optim.Optimizer | ZeroOptimizer,
    ctx: TrainContext,
    progress: _Progress,
) -> dict[str, Any]:
    """Everything besides the weights that resuming after step `stage_step` of stage `index` needs."""
    fsdp = isinstance(optimizer, torch.optim.Optimizer) and ctx.dist.sharding is not None
    return {
        "version": STATE_VERSION,
        "step": progress.step,
        "stage_index": index,
        "stage_name": stage.name,
        "stage_step": stage_step + 1,
        "examples_seen": progress.examples_seen,
        "log": progress.log,
        "optimizer": optimizer_state(model, optimizer) if fsdp else optimizer.state_dict(),  # type: ignore[arg-type]
        "rng": rng_state(),
        "method": trainer.state_dict(),
        "rollouts": asdict(ctx.sampler.stats),
        **(per_rank_state(trainer, ctx) if ctx.dist.active else {}),
        **sharding_marker(ctx.dist),
    }


def checkpoint_weights(
    model: PreTrainedModel, optimizer: torch.optim.Optimizer | ZeroOptimizer, ctx: TrainContext
) -> dict[str, Any] | None:
    """The weights a checkpoint saves when the model in memory is sharded (the main process's; None
    elsewhere, and for a whole model, whose own state dict is saved)."""
    if isinstance(optimizer, ZeroOptimizer):
        weights = optimizer.whole_weights()
        return tied(model, weights) if weights is not None else None
    return whole_weights(model, ctx.dist)


def per_rank_state(trainer: Trainer, ctx: TrainContext) -> dict[str, Any]:
    """Under N processes, what may differ between them, for each: the RNG states (each samples its own
    shard) and the method's state (e.g. SPoT's running δ, updated from each process's own rows)."""
    return {"rng_by_rank": ctx.dist.gather(rng_state()), "method_by_rank": ctx.dist.gather(trainer.state_dict())}


def own_rng(state: dict[str, Any], ctx: TrainContext) -> dict[str, Any]:
    """This process's RNG state in a checkpoint's `state`: under N processes each has its own
    (`rng_by_rank`, saved by the main process for all), alone it is `rng`."""
    if not ctx.dist.active:
        return state["rng"]
    by_rank = state.get("rng_by_rank")
    if not isinstance(by_rank, list) or len(by_rank) != ctx.dist.world:
        saved = len(by_rank) if isinstance(by_rank, list) else 1
        raise BenchError(
            f"this training state was saved by {saved} process(es), not {ctx.dist.world}: resume it with "
            f"num_processes: {saved}"
        )
    return by_rank[ctx.dist.rank]
