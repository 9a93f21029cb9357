"""Replay: SFT on the hard set with a fixed share of every batch drawn from earlier data.

    L(θ) = −(1/|y|) Σ_{(x,y) ∈ B} Σ_t log π_θ(y_t | x, y_<t),
    B = (1−ρ)·b items of D_hard  ∪  ρ·b items of D_replay,      ρ = replay_fraction = 0.25

(the token mean over the mixed batch, i.e. SFT's loss on a batch that is part replay). The
replayed data (*assumption*, options.source): `foundation` = the suite's organism pre-training
mix (`foundation:`), the data the organism learnt what it may forget from; `easy` = the suite's
easy post-training set, the only earlier data a `--model` run has; `auto` (default) =
foundation where the run trains the organism on a suite with a mix, else easy (so a `--model`
run replays its easy set). The train log's `replay_share` is the replayed share of each batch.
The foundation items are drawn afresh from the mix's generators (seed = the run's seed,
`train_examples` items in all), unrendered as pre-training saw them: on an organism pre-trained
with `organism.in_context`, that share of them shown after solved examples, as in pre-training.
ρ·b is rounded; both parts get at least one item when 0 < ρ < 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.options import option
from plasticity_bench.tasks.base import Item
from plasticity_bench.trainers.common import (
    TRAINERS,
    MethodSettings,
    Stage,
    TrainContext,
    Trainer,
    TrainingData,
    mixed_batches,
)

SOURCES = ("auto", "foundation", "easy")


@dataclass(frozen=True)
class ReplayOptions:
    replay_fraction: float = option(
        0.25, "ρ, the share of every batch that is replayed data", low=0, high=1, high_open=True
    )
    source: str = option(
        "auto",
        "the replayed data: foundation (the suite's pre-training mix), easy (the easy set) "
        "or auto (foundation when the run has it, else easy)",
        choices=SOURCES,
    )


def replay_count(batch_size: int, fraction: float) -> int:
    """ρ·b rounded, leaving at least one item of each part when 0 < ρ < 1 and b ≥ 2."""
    if fraction == 0 or batch_size < 2:
        return 0
    return min(batch_size - 1, max(1, round(fraction * batch_size)))


@TRAINERS.register(
    "replay", "SFT on the hard set with a share (0.25) of every batch replayed from the foundation mix (or easy set)"
)
class Replay(Trainer[ReplayOptions]):
    Options = ReplayOptions
    needs_foundation = True

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        source = self.options.source
        if source == "auto":
            source = "foundation" if data.foundation else "easy"
        if source == "foundation" and not data.foundation:
            raise BenchError(
                "replay: options.source foundation needs the organism and a suite with a `foundation:` mix; "
                "use source: easy"
            )
        self.source = source
        self.replayed: Sequence[Item] = data.foundation if source == "foundation" else data.easy

    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        return [Stage("hard", data.hard, settings.steps, settings.lr)]

    def batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        size = ctx.loop.batch_size
        replayed = replay_count(size, self.options.replay_fraction)
        return mixed_batches(
            ctx.tokenizer,
            [stage.items, self.replayed],
            [size - replayed, replayed],
            f"{ctx.loop.seed}/{stage.name}",
            start,
        )

    def update(self, model, batch, optimizer, ctx):
        replayed = replay_count(ctx.loop.batch_size, self.options.replay_fraction)
        return {**super().update(model, batch, optimizer, ctx), "replay_share": replayed / ctx.loop.batch_size}
