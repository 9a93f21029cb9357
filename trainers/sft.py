"""SFT: plain supervised fine-tuning on the hard set, the baseline every method is measured against.

    L(θ) = −(1/|y|) Σ_t log π_θ(y_t | x, y_<t)        (completion tokens only; prompt masked)

one stage, warm-up then cosine from η.
"""

from __future__ import annotations

from plasticity_bench.trainers.common import TRAINERS, MethodSettings, NoOptions, Stage, Trainer, TrainingData


@TRAINERS.register("sft", "supervised fine-tuning on the hard set at η (cosine); the baseline")
class SFT(Trainer[NoOptions]):
    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        return [Stage("hard", data.hard, settings.steps, settings.lr)]
