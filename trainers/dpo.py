"""DPO on pairs from the model's own samples (Rafailov et al. 2023), sigmoid loss:

    r(x,y) = β·[log π_θ(y|x) − log π_ref(y|x)]
    L      = −log σ( r(x,y⁺) − r(x,y⁻) ),        β = 0.1

Pairs: the starting model samples `samples_per_prompt` completions for each of `pair_prompts`
hard training prompts; a prompt with at least one verified-correct and one wrong sample gives
one pair (the first of each). π_ref is the starting model; its log-probs are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from harness.core.errors import BenchError
from tasks.base import Item
from tasks.verify import max_new_tokens
from trainers.common import TRAINERS, TrainContext, TrainingData
from trainers.policy import PairTrainer, implicit_rewards, rewards, sample, save_pairs

PAIRS_FILE = "preference_pairs.parquet"


@dataclass(frozen=True)
class DPOOptions:
    beta: float = 0.1
    pair_prompts: int = 512  # hard training prompts sampled to find pairs
    samples_per_prompt: int = 8
    temperature: float = 1.0

    def validate(self) -> None:
        if self.beta <= 0:
            raise BenchError(f"options.beta must be positive, got {self.beta}")
        if self.samples_per_prompt < 2:
            raise BenchError(f"options.samples_per_prompt must be >= 2 to find a pair, got {self.samples_per_prompt}")
        if self.pair_prompts <= 0 or self.temperature <= 0:
            raise BenchError("options.pair_prompts and options.temperature must be positive")


def sampled_pairs(model: PreTrainedModel, ctx: TrainContext, hard: Sequence[Item], options: DPOOptions,
                  method: str) -> tuple[list[str], list[str], list[str]]:
    """(prompts, chosen, rejected): the model samples `samples_per_prompt` completions of each of
    the first `pair_prompts` hard prompts; a prompt with a verified-correct and a wrong sample gives
    one pair (the first of each). BenchError when no prompt does."""
    items = list(hard[: options.pair_prompts])
    max_tokens = max(max_new_tokens(item) for item in items)
    samples = sample(model, ctx, [i.prompt for i in items], options.samples_per_prompt, max_tokens, options.temperature, ctx.loop.seed)
    pairs = []
    for item, completions in zip(items, samples):
        scores = rewards([item] * len(completions), completions)
        right = [c for c, s in zip(completions, scores) if s >= 1.0]
        wrong = [c for c, s in zip(completions, scores) if s < 1.0]
        if right and wrong:
            pairs.append((item.prompt, right[0], wrong[0]))
    if not pairs:
        raise BenchError(
            f"{method}: no preference pairs: none of {len(items)} prompts had both a correct and a wrong sample; "
            "raise options.samples_per_prompt or options.pair_prompts"
        )
    return [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]


def dpo_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """L = −log σ(r⁺ − r⁻), averaged over the batch."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


@TRAINERS.register("dpo", "DPO (sigmoid, β=0.1) on correct/incorrect pairs from the model's own samples")
class DPO(PairTrainer[DPOOptions]):
    Options = DPOOptions

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        prompts, chosen, rejected = sampled_pairs(model, ctx, data.hard, self.options, "dpo")
        self.pairs = self.make_pairs(model, ctx, prompts, chosen, rejected)
        save_pairs(self.pairs, ctx.run_dir and ctx.run_dir / PAIRS_FILE)

    def loss(self, model, batch):
        r_chosen, r_rejected = implicit_rewards(model, batch, self.options.beta)
        metrics = {"reward_margin": (r_chosen - r_rejected).mean().item(), "pair_accuracy": (r_chosen > r_rejected).float().mean().item()}
        return dpo_loss(r_chosen, r_rejected), metrics
