"""L2-SP (Li et al. 2018, "Explicit inductive bias for transfer learning"): SFT on the hard set
with an L2 pull towards the starting weights instead of towards zero:

    L(θ) = −(1/|y|) Σ_t log π_θ(y_t | x, y_<t)  +  ½·λ·‖θ − θ₀‖²

θ₀ = the starting model's weights, a frozen copy made in `setup` (the sum runs over the
parameters being trained: with `lora:` the adapters, whose start is their initialisation).
λ = options.lam = 0.01 (*assumption*: the paper tunes α ∈ {1e-3, 1e-2, 1e-1} per task; 0.01 is
its middle value, and on the organism ½·0.01·‖θ−θ₀‖² is of the order of the SFT loss after a
few hundred steps at η = 1e-3, so the pull matters without freezing the model). The penalty
½λ‖θ−θ₀‖² is logged each step as `l2sp_penalty` (0 at the first step: θ = θ₀), and
`sft_loss` beside it. AdamW's own weight decay (config weight_decay, default 0) still applies.
"""

from __future__ import annotations

from dataclasses import dataclass

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
)


@dataclass(frozen=True)
class L2SPOptions:
    lam: float = option(0.01, "λ, the strength of the pull ½·λ·‖θ − θ₀‖² towards the starting weights", low=0)


def l2sp_penalty(model: PreTrainedModel, start: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """½·λ·‖θ − θ₀‖² over the parameters named in `start`."""
    params = dict(model.named_parameters())
    return 0.5 * lam * sum(((params[name] - theta0) ** 2).sum() for name, theta0 in start.items())  # type: ignore[return-value]


@TRAINERS.register("l2sp", "SFT on the hard set + ½λ‖θ−θ₀‖² (λ=0.01), a pull towards the starting weights")
class L2SP(Trainer[L2SPOptions]):
    Options = L2SPOptions

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        self.start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        return [Stage("hard", data.hard, settings.steps, settings.lr)]

    def loss(self, model, batch):
        nll = sft_loss(model, batch)
        penalty = l2sp_penalty(model, self.start, self.options.lam)
        return nll + penalty, {"sft_loss": nll.item(), "l2sp_penalty": penalty.item()}
