"""EPS, the control for RPS: the same two stages, but stage 2 keeps η (no drop).

    stage 1: θ₁ = SFT(θ₀; D_easy, lr η)
    stage 2: θ₂ = SFT(θ₁; D_hard, lr η)

With the same seed, stage 1 is bit-identical to RPS's, so both share the stage-1 checkpoint.
The stage-2 loss and the split are RPS's options.stage2_loss (sft or dpo) and options.stage1_fraction
(trainers/rps.py); options.stage2_lr_ratio is RPS's alone.
"""

from __future__ import annotations

from plasticity_bench.trainers.common import TRAINERS, MethodSettings
from plasticity_bench.trainers.rps import TwoStage, TwoStageOptions


@TRAINERS.register("eps", "RPS's control: the same easy → hard stages, both at η (no drop); stage-2 loss sft or dpo")
class EPS(TwoStage[TwoStageOptions]):
    Options = TwoStageOptions

    def stage2_lr(self, settings: MethodSettings) -> float:
        return settings.lr
