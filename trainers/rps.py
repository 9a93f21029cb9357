"""RPS, Regressive Plasticity Schedule: easy data at η, then hard data at 0.1·η.

    stage 1: θ₁ = SFT(θ₀; D_easy, lr η)          cosine within the stage
    stage 2: θ₂ = SFT(θ₁; D_hard, lr r·η), r = stage2_lr_ratio = 0.1 (the 90% drop)

The stage structure, not the loss, is the method (the author used DPO+LoRA on Qwen3-8B);
the stage loss here is SFT's. EPS (trainers/eps.py) is the same with r = 1.
"""

from __future__ import annotations

from trainers.common import TRAINERS, MethodSettings, NoOptions, Stage, Trainer, TrainingData, two_stage


@TRAINERS.register("rps", "two stages: easy set at η, then hard set at 0.1·η (90% lr drop)")
class RPS(Trainer[NoOptions]):
    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        return two_stage(data, settings, stage2_lr=settings.stage2_lr_ratio * settings.lr)
