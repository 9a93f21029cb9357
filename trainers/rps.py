"""RPS, Regressive Plasticity Schedule: easy data at η, then hard data at 0.1·η.

    stage 1: θ₁ = L₁(θ₀; D_easy, lr η)           cosine within the stage
    stage 2: θ₂ = L₂(θ₁; D_hard, lr r·η), r = options.stage2_lr_ratio = 0.1 (the 90% drop)

Stage 1 takes options.stage1_fraction (0.5) of the steps; each stage has its own warm-up, cosine
and fresh AdamW (trainers/common.py `train`).

The stage structure, not the loss, is the method. Each stage's loss is options.stage1_loss /
options.stage2_loss:
  sft (default)  −(1/|y|) Σ_t log π_θ(y_t | x, y_<t) on the stage's set;
  dpo            RPO: −log σ(r(x,y⁺) − r(x,y⁻)) + α·NLL(y⁺)/|y⁺|, r = β·[log π_θ(y|x) − log π_ref(y|x)]
                 (trainers/dpo.py `rpo_loss`), on pairs of the stage's own prompts (easy prompts in
                 stage 1, hard ones in stage 2); options.dpo takes every option of the dpo method
                 (beta, pair_prompts, samples_per_prompt, pairs_per_prompt, nll_weight = α,
                 temperature, pairs, reward), with offline pairs (pairs_from: start, the only kind a
                 stage can have) and plain DPO (α = 0) by default.
The author's recipe (RPS-Paper: DPO+LoRA on Qwen3-8B) is dpo in both stages with α = 1 and `lora:`:
the arm `rps-authors` of tasks/arms/authors.yaml.
*Assumption* for dpo: the pairs of both stages are sampled from, and π_ref is, the **starting**
model θ₀, built in `setup` before stage 1 (as every method's setup runs on the starting model,
which keeps the run resumable); sampling stage 2's from θ₁ would need a setup between stages. The
pairs are saved as `preference_pairs.parquet` (stage 2) and `preference_pairs_easy.parquet`
(stage 1). The policy is sampled in memory (rollout_backend does not apply). EPS
(trainers/eps.py) is the same with r = 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from transformers import PreTrainedModel

from plasticity_bench.harness.core.options import option
from plasticity_bench.tasks.base import Item
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
from plasticity_bench.trainers.dpo import PAIRS_FILE, DPOOptions, dpo_pairs, rpo_loss
from plasticity_bench.trainers.policy import (
    PreferencePair,
    implicit_rewards_and_nll,
    pair_batches,
    reference_pairs,
    save_pairs,
)

STAGE_LOSSES = ("sft", "dpo")
STAGE2_LOSSES = STAGE_LOSSES
EASY_PAIRS_FILE = "preference_pairs_easy.parquet"  # stage 1's pairs, with stage1_loss: dpo


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
    pair_prompts: int = option(
        1024,
        "the stage's training prompts sampled to find pairs (easy ones in stage 1, hard in stage 2)",
        low=0,
        low_open=True,
    )
    nll_weight: float = option(0.0, "α, weight of the chosen completions' NLL (TRL's rpo_alpha); 0 = plain DPO", low=0)


@dataclass(frozen=True)
class TwoStageOptions:
    stage1_fraction: float = option(
        0.5, "share of the steps spent in stage 1, on the easy set", low=0, high=1, low_open=True, high_open=True
    )
    stage1_loss: str = option(
        "sft",
        "stage 1's loss on the easy set: sft, or dpo on pairs of easy prompts (the author's recipe: dpo in both)",
        choices=STAGE_LOSSES,
    )
    stage2_loss: str = option(
        "sft", "stage 2's loss on the hard set: sft, or dpo on pairs of hard prompts", choices=STAGE2_LOSSES
    )
    dpo: DPOStageOptions = option(
        default_factory=DPOStageOptions, help="the pairs, β and α of a stage whose loss is dpo"
    )


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

    def stage_loss(self, stage: str) -> str:
        """The loss of stage `easy` (stage1_loss) or `hard` (stage2_loss)."""
        return self.options.stage1_loss if stage == "easy" else self.options.stage2_loss

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        """Each DPO stage's pairs, from its own set's prompts, sampled from the starting model."""
        if self.options.stage1_loss == "dpo":
            self.easy_pairs = self.stage_pairs(model, ctx, data.easy, f"{self.name} stage 1 (easy)", EASY_PAIRS_FILE)
        if self.options.stage2_loss == "dpo":
            self.pairs = self.stage_pairs(model, ctx, data.hard, self.name, PAIRS_FILE)

    def stage_pairs(
        self, model: PreTrainedModel, ctx: TrainContext, items: Sequence[Item], what: str, file: str
    ) -> list[PreferencePair]:
        """One DPO stage's pairs with π_ref = θ₀'s log-probs, saved in the run folder as `file`
        (`what`: the stage, as an error names it)."""
        prompts, chosen, rejected, whole = dpo_pairs(model, ctx, items, self.options.dpo, what)
        pairs = reference_pairs(model, ctx.tokenizer, prompts, chosen, rejected, whole)  # π_ref = θ₀
        save_pairs(pairs, ctx.run_dir and ctx.run_dir / file)
        return pairs

    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        easy, hard = two_stage(data, settings, self.options.stage1_fraction, stage2_lr=self.stage2_lr(settings))
        return [
            Stage(easy.name, self.easy_pairs, easy.steps, easy.peak_lr) if self.options.stage1_loss == "dpo" else easy,
            Stage(hard.name, self.pairs, hard.steps, hard.peak_lr) if self.options.stage2_loss == "dpo" else hard,
        ]

    def batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        if self.stage_loss(stage.name) == "dpo":
            return pair_batches(ctx.tokenizer, stage.items, ctx.loop.batch_size, ctx.loop.seed, start)
        return super().batches(model, stage, ctx, start)

    def loss(self, model, batch):
        if "chosen_input_ids" not in batch:  # an sft stage
            return sft_loss(model, batch), {}
        # RPO (TRL's rpo_alpha): L = −log σ(r(x,y⁺) − r(x,y⁻)) + α·NLL(y⁺)/|y⁺|, r = β·[log π_θ − log π_ref]
        r_chosen, r_rejected, nll = implicit_rewards_and_nll(model, batch, self.options.dpo.beta)
        metrics = {
            "reward_margin": (r_chosen - r_rejected).mean().item(),
            "pair_accuracy": (r_chosen > r_rejected).float().mean().item(),
        }
        return rpo_loss(r_chosen, r_rejected, nll, self.options.dpo.nll_weight), metrics


@TRAINERS.register("rps", "two stages: easy set at η, then hard set at 0.1·η (90% lr drop); stage-2 loss sft or dpo")
class RPS(TwoStage[RPSOptions]):
    Options = RPSOptions

    def stage2_lr(self, settings: MethodSettings) -> float:
        return self.options.stage2_lr_ratio * settings.lr
