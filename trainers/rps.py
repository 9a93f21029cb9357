"""RPS, Regressive Plasticity Schedule: easy data at η, then hard data at 0.1·η.

    stage 1: θ₁ = SFT(θ₀; D_easy, lr η)          cosine within the stage
    stage 2: θ₂ = L₂(θ₁; D_hard, lr r·η), r = stage2_lr_ratio = 0.1 (the 90% drop)

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
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from harness.core.errors import BenchError
from trainers.common import TRAINERS, MethodSettings, Stage, TrainContext, Trainer, TrainingData, sft_loss, two_stage
from trainers.dpo import PAIRS_FILE, DPOOptions, dpo_loss, dpo_pairs
from trainers.policy import implicit_rewards_and_nll, pair_batches, reference_pairs, save_pairs

STAGE2_LOSSES = ("sft", "dpo")


@dataclass(frozen=True)
class DPOStageOptions(DPOOptions):
    """The dpo method's options with the DPO stage's defaults: offline pairs from the starting
    model (the only kind a stage can have, below) and plain DPO."""

    pairs_from: str = "start"
    nll_weight: float = 0.0


@dataclass(frozen=True)
class TwoStageOptions:
    stage2_loss: str = "sft"  # sft | dpo
    dpo: DPOStageOptions = field(default_factory=DPOStageOptions)  # the pairs and β when stage2_loss is dpo

    def validate(self) -> None:
        if self.stage2_loss not in STAGE2_LOSSES:
            raise BenchError(f"options.stage2_loss must be one of {', '.join(STAGE2_LOSSES)}, got {self.stage2_loss!r}")
        self.dpo.validate()
        if self.dpo.pairs_from != "start":
            raise BenchError("options.dpo.pairs_from: the DPO stage's pairs are sampled once, from the starting model (start); "
                             "only the dpo method samples pairs from the policy")


class TwoStage(Trainer[TwoStageOptions]):
    """Easy set at η, then the hard set at `stage2_lr(settings)` with SFT or DPO."""

    Options = TwoStageOptions
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
        easy, hard = two_stage(data, settings, stage2_lr=self.stage2_lr(settings))
        return [easy, Stage(hard.name, self.pairs, hard.steps, hard.peak_lr) if self.options.stage2_loss == "dpo" else hard]

    def batches(self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        if stage.name == "hard" and self.options.stage2_loss == "dpo":
            return pair_batches(ctx.tokenizer, stage.items, ctx.loop.batch_size, ctx.loop.seed, start)
        return super().batches(model, stage, ctx, start)

    def loss(self, model, batch):
        if "chosen_input_ids" not in batch:
            return sft_loss(model, batch), {}
        r_chosen, r_rejected, nll = implicit_rewards_and_nll(model, batch, self.options.dpo.beta)
        metrics = {"reward_margin": (r_chosen - r_rejected).mean().item(), "pair_accuracy": (r_chosen > r_rejected).float().mean().item()}
        return dpo_loss(r_chosen, r_rejected) + self.options.dpo.nll_weight * nll, metrics


@TRAINERS.register("rps", "two stages: easy set at η, then hard set at 0.1·η (90% lr drop); stage-2 loss sft or dpo")
class RPS(TwoStage):
    def stage2_lr(self, settings: MethodSettings) -> float:
        return settings.stage2_lr_ratio * settings.lr
