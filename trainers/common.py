"""Shared training machinery: encoding, batching, schedules, the loop, checkpoints.

A method (one file each in `trainers/`) only says *which stages on which data at which learning
rate* and *what loss*; everything else lives here once. Pre-training the model organism is the
same loop with one stage on the foundation mix.
"""

from __future__ import annotations

import copy
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.core.registry import Registry
from tasks.base import Item
from trainers.rollouts import PolicySampler


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


@dataclass(frozen=True)
class TrainingData:
    """What a method may train on: the suite's easy and hard post-training sets."""

    easy: Sequence[Item]
    hard: Sequence[Item]


@dataclass(frozen=True)
class MethodSettings:
    """The method-independent knobs every trainer receives (from the run config)."""

    steps: int  # total post-training steps
    lr: float  # η, the peak learning rate
    stage2_lr_ratio: float  # RPS: stage-2 lr = ratio · η (0.1 is the paper's 90% drop)
    stage1_fraction: float  # share of steps spent in stage 1 (two-stage methods)


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


class Trainer(ABC, Generic[OptionsT]):
    """A post-training method: its curriculum, its batches and its update.

    The defaults are SFT's: batches of (prompt, target) items, token-level NLL on completion
    tokens, one AdamW step. Preference and RL methods override `batches` and `loss` (or
    `update`, for PCR's two-gradient step) and set `Options` to a dataclass of hyperparameters,
    subclassing `Trainer[ThatDataclass]` so `self.options` has its type.
    """

    name: ClassVar[str]  # set by TRAINERS.register
    Options: ClassVar[type] = NoOptions
    # η when the config does not set one. Preference and RL methods use 0.1× SFT's, the ratio
    # their papers use against SFT (e.g. SPoT 1e-6 on Qwen3-8B where SFT runs at ~1e-5).
    default_lr: ClassVar[float] = 1e-3
    # Whether the method samples from its policy (through ctx.sampler): the run's rollout backend applies.
    samples_policy: ClassVar[bool] = False

    def __init__(self, options: OptionsT | None = None) -> None:
        self.options: OptionsT = options if options is not None else cast(OptionsT, self.Options())

    @abstractmethod
    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        """The method's curriculum."""

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        """Called once before `stages` (e.g. freeze a reference model, build pairs from samples)."""

    def batches(self, model: PreTrainedModel, stage: Stage, ctx: TrainContext) -> Iterator[dict[str, torch.Tensor]]:
        return batches(ctx.tokenizer, stage.items, ctx.loop.batch_size, f"{ctx.loop.seed}/{stage.name}")

    def loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_loss(model, batch), {}

    def update(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, ctx: TrainContext) -> dict[str, float]:
        """One optimiser step; returns the step's metrics: "loss" at least, and "examples" (new
        training examples this step consumed) when that is not the loop's batch size."""
        loss, metrics = self.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.loop.grad_clip)
        optimizer.step()
        return {"loss": loss.item(), **metrics}


TRAINERS: Registry[type[Trainer[Any]]] = Registry("method")


def sft_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """L = −(1/|y|) Σ_t log π_θ(y_t | x, y_<t), averaged over the batch's completion tokens."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def two_stage(data: TrainingData, settings: MethodSettings, stage2_lr: float) -> list[Stage]:
    """RPS/EPS curriculum: easy data at η, then hard data at `stage2_lr`."""
    stage1_steps = round(settings.steps * settings.stage1_fraction)
    return [
        Stage("easy", data.easy, stage1_steps, settings.lr),
        Stage("hard", data.hard, settings.steps - stage1_steps, stage2_lr),
    ]


# ---------------------------------------------------------------- encoding and batching


def encode(tokenizer: PreTrainedTokenizerBase, item: Item) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for prompt + target + EOS; prompt positions are masked (-100)."""
    prompt_ids = tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(item.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
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


def batches(tokenizer: PreTrainedTokenizerBase, items: Sequence[Item], batch_size: int, seed: str) -> Iterator[dict[str, torch.Tensor]]:
    """An endless stream of batches, sampled uniformly with replacement, deterministic in `seed`."""
    rng = random.Random(seed)
    cache: dict[int, tuple[list[int], list[int]]] = {}
    while True:
        picks = [rng.randrange(len(items)) for _ in range(batch_size)]
        for i in picks:
            if i not in cache:
                cache[i] = encode(tokenizer, items[i])
        yield collate([cache[i] for i in picks], tokenizer.pad_token_id)


# ---------------------------------------------------------------- schedule


def cosine_lr(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `peak * min_ratio` at the stage's last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---------------------------------------------------------------- the loop

OnStep = Callable[[int, float], None]  # (global step, loss) -> None, e.g. a progress bar
Save = Callable[[int, str, float, float, int], None]  # (step, stage, lr, mean loss, examples seen)


def freeze_reference(model: PreTrainedModel) -> PreTrainedModel:
    """π_ref: a frozen copy of the model as it is now (the starting model, when called in setup)."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def train(
    model: PreTrainedModel,
    trainer: Trainer,
    stages: Sequence[Stage],
    ctx: TrainContext,
    save: Save | None = None,
    on_step: OnStep | None = None,
) -> list[dict[str, Any]]:
    """Run the stages in order; return one log row per step (step, stage, lr and the method's metrics).

    Each stage gets a fresh AdamW and its own warm-up + cosine. `save` is called every
    `checkpoint_every` steps and at every stage's end (the stage boundary is always a checkpoint).
    """
    config = ctx.loop
    torch.manual_seed(config.seed)
    model.train()
    step, examples_seen, losses, log = 0, 0, [], []
    for stage in stages:
        if stage.steps <= 0:
            continue
        optimizer = torch.optim.AdamW(model.parameters(), lr=stage.peak_lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
        warmup = max(1, round(stage.steps * config.warmup_fraction))
        stream = trainer.batches(model, stage, ctx)
        for stage_step in range(stage.steps):
            lr = cosine_lr(stage_step, stage.steps, stage.peak_lr, warmup, config.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            metrics = trainer.update(model, next(stream), optimizer, ctx)
            step += 1
            examples_seen += int(metrics.pop("examples", config.batch_size))
            losses.append(metrics["loss"])
            log.append({"step": step, "stage": stage.name, "lr": lr, **metrics})
            if on_step:
                on_step(step, metrics["loss"])
            stage_end = stage_step == stage.steps - 1
            if save and (stage_end or (config.checkpoint_every and step % config.checkpoint_every == 0)):
                model.eval()
                save(step, stage.name, lr, sum(losses) / len(losses), examples_seen)
                model.train()
                losses = []
    model.eval()
    return log
