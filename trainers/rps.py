"""RPS, Regressive Plasticity Schedule: easy data at η, then hard data at 0.1·η.

    stage 1: θ₁ = SFT(θ₀; D_easy, lr η)          cosine within the stage
    stage 2: θ₂ = L₂(θ₁; D_hard, lr r·η), r = options.stage2_lr_ratio = 0.1 (the 90% drop)

Stage 1 takes options.stage1_fraction (0.5) of the steps.

The stage structure, not the loss, is the method (the author used DPO+LoRA on Qwen3-8B). The
stage-2 loss L₂ is options.stage2_loss:
  sft (default)  −(1/|y|) Σ_t log π_θ(y_t | x, y_<t) on the hard set;
  dpo            −log σ(r(x,y⁺) − r(x,y⁻)) + α·NLL(y⁺), r = β·[log π_θ(y|x) − log π_ref(y|x)]
                 (trainers/dpo.py), on pairs of hard prompts; options.dpo takes every option of
                 the dpo method (beta, pair_prompts, samples_per_prompt, pairs_per_prompt,
                 nll_weight = α, temperature, pairs, reward), with offline pairs (pairs_from:
                 start, the only kind a stage can have) and plain DPO (α = 0) by default.
*Assumption* for dpo: the pairs are sampled from, and π_ref is, the **starting** model θ₀, built
in `setup` before stage 1 (as every method's setup runs on the starting model, which keeps the
run resumable); sampling them from θ₁ would need a setup between stages. The pairs are saved as
`preference_pairs.parquet`. The policy is sampled in memory (rollout_backend does not apply).
Add `lora:` to the run config for the author's DPO+LoRA. EPS (trainers/eps.py) is the same with r = 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from transformers import PreTrainedModel

from plasticity_bench.harness.core.options import option
from plasticity_bench.trainers.common import (
    TRAINERS,
    MethodSettings,
    Stage,
    TrainContext,
    Trainer,
    TrainingData,
    sft_loss,
    two_stage,
)
from plasticity_bench.trainers.dpo import PAIRS_FILE, DPOOptions, dpo_loss, dpo_pairs
from plasticity_bench.trainers.policy import implicit_rewards_and_nll, pair_batches, reference_pairs, save_pairs

STAGE2_LOSSES = ("sft", "dpo")


@dataclass(frozen=True)
class DPOStageOptions(DPOOptions):
    """The dpo method's options with the DPO stage's defaults: offline pairs from the starting
    model (the only kind a stage can have, below) and plain DPO."""

    pairs_from: str = option(
        "start",
        "the DPO stage's pairs are sampled once, from the starting model; "
        "only the dpo method samples pairs from the policy",
        choices=("start",),
    )
    nll_weight: float = option(0.0, "α, weight of the chosen completions' NLL (TRL's rpo_alpha); 0 = plain DPO", low=0)


@dataclass(frozen=True)
class TwoStageOptions:
    stage1_fraction: float = option(
        0.5, "share of the steps spent in stage 1, on the easy set", low=0, high=1, low_open=True, high_open=True
    )
    stage2_loss: str = option(
        "sft", "stage 2's loss on the hard set: sft, or dpo on pairs of hard prompts", choices=STAGE2_LOSSES
    )
    dpo: DPOStageOptions = option(default_factory=DPOStageOptions, help="the pairs and β when stage2_loss is dpo")


@dataclass(frozen=True)
class RPSOptions(TwoStageOptions):
    stage2_lr_ratio: float = option(
        0.1, "r: stage 2 runs at r·η (0.1 is the paper's 90% drop)", low=0, high=1, low_open=True
    )


TwoStageOptionsT = TypeVar("TwoStageOptionsT", bound=TwoStageOptions)  # RPS adds its lr drop to the shared options


class TwoStage(Trainer[TwoStageOptionsT]):
    """Easy set at η, then the hard set at `stage2_lr(settings)` with SFT or DPO."""

    # η for stage 1 (BENCHMARKS §11, organism A): at SFT's 3e-4, stage 2 at 0.1·η = 3e-5 gained +2.5 on hard
    # math (not significant); at 1e-3, stage 2 at 1e-4 learns (+16), as the method needs.
    default_lr = 1e-3

    def stage2_lr(self, settings: MethodSettings) -> float:
        raise NotImplementedError

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        if self.options.stage2_loss == "dpo":
            prompts, chosen, rejected, whole = dpo_pairs(model, ctx, data.hard, self.options.dpo, self.name)
            self.pairs = reference_pairs(model, ctx.tokenizer, prompts, chosen, rejected, whole)  # π_ref = θ₀
            save_pairs(self.pairs, ctx.run_dir and ctx.run_dir / PAIRS_FILE)

    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        easy, hard = two_stage(data, settings, self.options.stage1_fraction, stage2_lr=self.stage2_lr(settings))
        return [
            easy,
            Stage(hard.name, self.pairs, hard.steps, hard.peak_lr) if self.options.stage2_loss == "dpo" else hard,
        ]

    def batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        if stage.name == "hard" and self.options.stage2_loss == "dpo":
            return pair_batches(ctx.tokenizer, stage.items, ctx.loop.batch_size, ctx.loop.seed, start)
        return super().batches(model, stage, ctx, start)

    def loss(self, model, batch):
        if "chosen_input_ids" not in batch:
            return sft_loss(model, batch), {}
        r_chosen, r_rejected, nll = implicit_rewards_and_nll(model, batch, self.options.dpo.beta)
        metrics = {
            "reward_margin": (r_chosen - r_rejected).mean().item(),
            "pair_accuracy": (r_chosen > r_rejected).float().mean().item(),
        }
        return dpo_loss(r_chosen, r_rejected) + self.options.dpo.nll_weight * nll, metrics


@TRAINERS.register("rps", "two stages: easy set at η, then hard set at 0.1·η (90% lr drop); stage-2 loss sft or dpo")
class RPS(TwoStage[RPSOptions]):
    Options = RPSOptions

    def stage2_lr(self, settings: MethodSettings) -> float:
        return self.options.stage2_lr_ratio * settings.lr
