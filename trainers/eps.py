"""EPS, the control for RPS: the same two stages, but stage 2 keeps η (no drop).

    stage 1: θ₁ = SFT(θ₀; D_easy, lr η)
    stage 2: θ₂ = SFT(θ₁; D_hard, lr η)

With the same seed, stage 1 is bit-identical to RPS's, so both share the stage-1 checkpoint.
"""

from __future__ import annotations

from trainers.common import TRAINERS, MethodSettings, NoOptions, Stage, Trainer, TrainingData, two_stage


@TRAINERS.register("eps", "RPS's control: the same easy → hard stages, both at η (no drop)")
class EPS(Trainer[NoOptions]):
    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        return two_stage(data, settings, stage2_lr=settings.lr)
