"""SPoT, Surgical Post-Training (arXiv 2603.01683): learn from minimally corrected own errors.

1. Error elicitation: the starting model answers `error_prompts` hard training prompts; keep
   the wrong answers y⁻.
2. Rectification: the task's oracle (`Task.rectify`, here the chain-sum solver) keeps the model's
   correct steps, fixes the first wrong step and rewrites what follows; keep y⁺ only if it verifies.
3. Proximity filter, token level:  R = 1 − |LCS(y⁻, y⁺)| / |y⁺|;  keep pairs with R ≤ γ (0.6).
   The pairs and their R are saved as `rectified_pairs.parquet` in the run folder.
4. Loss, with the implicit reward r(x,y) = β·[log π_θ(y|x) − log π_ref(y|x)], β = 0.1:
     SPoT-BCO (default):  L = −log σ(r(x,y⁺) − δ) − log σ(−(r(x,y⁻) − δ))
         δ, as the released code computes it (`options.delta: batch_mean`, the default): the
             released code trains with TRL 0.20's DPOTrainer `loss_type="bco_pair"`, whose δ is
             the running, equal-weight mean over optimiser steps of each step's *batch-mean*
             detached reward (chosen and rejected together), starting at 0 and updated with the
             current batch before the loss. `options.delta: all_rewards` instead averages every
             individual reward seen so far (TRL's separate BCOTrainer does that); the two agree
             only at a fixed batch size. TRL >= 0.29's `bco_pair` has no δ at all: it is plain
             BCE, i.e. SPoT-BCE below.
     SPoT-BCE:            the same with δ = 0
     released (`options.loss: bco_pair`): SPoT-BCO with δ computed as TRL 0.20's `RunningMoments`
         does it, operation for operation (`RunningMoments` below: float32 updates of a float64
         mean from a count that starts at 1e-24); equal to `bco` with `delta: batch_mean` up to
         float rounding. With `nll_weight: 0` and β 0.1 it is the released recipe: the arm
         `spot-released` of tasks/arms/authors.yaml.
   No SFT term in the paper (`options.nll_weight: 0`); with nll_weight = α > 0 the loss adds
   α · NLL(y⁺) per chosen token (TRL's `rpo_alpha`). π_ref is the frozen starting model
   (log-probs precomputed).

Defaults differ from the paper on purpose (the sweep in BENCHMARKS §11, on organism A; §14.1): with
the paper's loss (α = 0) the organism's held-out reward margin grows at every η tried (1e-5, 3e-5,
1e-4) while greedy hard-math accuracy *falls* (−6, −7, −3.5 points): pushing y⁻'s whole likelihood
down also pushes down the correct steps it shares with y⁺. With α = 1 and η = 3e-4 it gains (+19),
as Pang et al. 2024 found for DPO on math reasoning (an NLL term on the chosen answers is needed).
`options: {nll_weight: 0}` with `lr: 1e-5` runs the paper's loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.options import option
from plasticity_bench.tasks.base import Item
from plasticity_bench.tasks.verify import max_new_tokens, rewards
from plasticity_bench.tasks.verify import rectify as oracle
from plasticity_bench.trainers.common import TRAINERS, TrainContext, TrainingData
from plasticity_bench.trainers.policy import PairTrainer, implicit_rewards_and_nll
from plasticity_bench.trainers.sharded import sharded_sample

PAIRS_FILE = "rectified_pairs.parquet"
LOSSES = ("bco", "bce", "bco_pair")
DELTAS = ("batch_mean", "all_rewards")


@dataclass(frozen=True)
class SPoTOptions:
    beta: float = option(0.1, "β, the implicit reward's scale", low=0, low_open=True)
    gamma: float = option(
        0.6, "proximity filter: a pair is kept when its change ratio R <= γ", low=0, high=1, low_open=True
    )
    loss: str = option(
        "bco",
        "bco (reward shift δ = running mean, `delta`), bce (δ = 0) or bco_pair (δ exactly as TRL 0.20's bco_pair)",
        choices=LOSSES,
    )
    delta: str = option(
        "batch_mean", "bco's δ: running mean of batch means (TRL 0.20 bco_pair) or of all rewards", choices=DELTAS
    )
    error_prompts: int = option(2048, "hard training prompts answered to elicit errors", low=0, low_open=True)
    temperature: float = option(
        0.0, "sampling temperature of the errors; 0: the model's greedy (characteristic) errors", low=0
    )
    nll_weight: float = option(1.0, "α, weight of NLL(y⁺) per token (TRL's rpo_alpha); 0 = the paper's loss", low=0)

    def validate(self) -> None:
        if self.loss == "bco_pair" and self.delta != "batch_mean":
            raise BenchError(
                f"options.delta {self.delta} applies to loss bco only: bco_pair's δ is TRL 0.20's, the running mean "
                "of batch means"
            )


def change_ratio(rejected: list[int], chosen: list[int]) -> float:
    """R = 1 − |LCS(y⁻, y⁺)| / |y⁺| over token ids (dynamic programming, O(|y⁻|·|y⁺|))."""
    previous = [0] * (len(chosen) + 1)
    for a in rejected:
        current = [0]
        for j, b in enumerate(chosen):
            current.append(previous[j] + 1 if a == b else max(previous[j + 1], current[j]))
        previous = current
    return 1 - previous[-1] / len(chosen)


class RunningMean:
    """δ: the mean of every value added so far (`options.delta: all_rewards`), or with
    `batch_mean=True` the mean over calls of each call's mean, as TRL 0.20's `bco_pair` keeps it
    (`options.delta: batch_mean`, the released code's δ)."""

    def __init__(self, batch_mean: bool = False) -> None:
        self.batch_mean = batch_mean
        self.total, self.count = 0.0, 0

    def add(self, values: torch.Tensor) -> float:
        if self.batch_mean:
            self.total += float(values.mean())
            self.count += 1
        else:
            self.total += float(values.sum())
            self.count += values.numel()
        return self.total / self.count

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = state["total"], state["count"]


class RunningMoments:
    """δ for `loss: bco_pair`: TRL 0.20's `RunningMoments.update` (trl/trainer/utils.py), which its
    DPOTrainer calls once per batch with that batch's mean reward x̄ₙ = mean(r⁺ ∪ r⁻), detached:

        δₙ = δₙ₋₁ + (x̄ₙ − δₙ₋₁)·1/cₙ,   cₙ = cₙ₋₁ + 1,   δ₀ = 0, c₀ = 1e-24

    (the equal-weight mean of the batch means), with the same arithmetic: the difference and the
    step in float32, the mean and the count Python floats. Its variance is not kept: δ needs only
    the mean."""

    def __init__(self) -> None:
        self.mean, self.count = 0.0, 1e-24

    @torch.no_grad()
    def add(self, values: torch.Tensor) -> float:
        xs = values.mean()  # TRL's `rewards`: the mean of the chosen and the rejected rewards together
        xs_count = xs.numel()
        xs_mean = torch.var_mean(xs, unbiased=False)[1].float()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        self.mean += (delta * xs_count / tot_count).item()
        self.count = tot_count
        return self.mean

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.count = state["mean"], state["count"]


def spot_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, delta: float) -> torch.Tensor:
    """L = −log σ(r⁺ − δ) − log σ(−(r⁻ − δ)), averaged over the batch."""
    return (-F.logsigmoid(r_chosen - delta) - F.logsigmoid(-(r_rejected - delta))).mean()


def elicit_errors(
    model: PreTrainedModel, ctx: TrainContext, items: list[Item], temperature: float
) -> list[tuple[Item, str]]:
    """Step 1: the starting model's answers that its task's verifier rejects, as (item, y⁻)."""
    max_tokens = max(max_new_tokens(item) for item in items)
    prompts = [i.prompt for i in items]  # under N processes each samples its share (trainers/sharded.py)
    answers = [s[0] for s in sharded_sample(model, ctx, prompts, 1, max_tokens, temperature, ctx.loop.seed)]
    return [(item, y) for item, y, r in zip(items, answers, rewards(items, answers)) if r < 1.0]


def rectify(wrong: list[tuple[Item, str]]) -> list[tuple[Item, str, str]]:
    """Step 2: (item, y⁻, y⁺) where the task's oracle produced a y⁺ that verifies as correct."""
    corrected = [(item, y_minus, oracle(item, y_minus)) for item, y_minus in wrong]
    candidates = [(item, y_minus, y_plus) for item, y_minus, y_plus in corrected if y_plus is not None]
    verdicts = rewards([item for item, _, _ in candidates], [y_plus for _, _, y_plus in candidates])
    return [triple for triple, reward in zip(candidates, verdicts) if reward >= 1.0]


@TRAINERS.register("spot", "SPoT: oracle-rectified own errors, reward-based BCO loss (β=0.1, γ=0.6)")
class SPoT(PairTrainer[SPoTOptions]):
    Options = SPoTOptions
    default_lr = 3e-4  # with nll_weight 1 (see the module docstring)

    def __init__(self, options: SPoTOptions | None = None) -> None:
        super().__init__(options)
        self.delta: RunningMean | RunningMoments = (
            RunningMoments()
            if self.options.loss == "bco_pair"
            else RunningMean(batch_mean=self.options.delta == "batch_mean")
        )

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        options = self.options
        items = list(data.hard[: options.error_prompts])
        wrong = elicit_errors(model, ctx, items, options.temperature)
        verified = rectify(wrong)
        tokenize = lambda text: ctx.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        ratios = [change_ratio(tokenize(y_minus), tokenize(y_plus)) for _, y_minus, y_plus in verified]
        kept = [(triple, ratio) for triple, ratio in zip(verified, ratios) if ratio <= options.gamma]
        if not kept:
            raise BenchError(
                f"spot: empty rectified set: {len(items)} prompts gave {len(wrong)} wrong answers, "
                f"{len(verified)} verified corrections, none with change ratio <= gamma={options.gamma}; "
                "nothing to train on"
            )
        prompts = [item.prompt for (item, _, _), _ in kept]
        chosen = [y_plus for (_, _, y_plus), _ in kept]
        rejected = [y_minus for (_, y_minus, _), _ in kept]
        self.make_pairs(
            model,
            ctx,
            prompts,
            chosen,
            rejected,
            ctx.run_dir and ctx.run_dir / PAIRS_FILE,
            {"change_ratio": [r for _, r in kept]},
        )

    def state_dict(self) -> dict[str, Any]:
        """δ's running mean, total and count (the pairs are rebuilt by `setup`)."""
        return {"delta": self.delta.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.delta.load_state_dict(state["delta"])

    def loss(self, model, batch):
        r_chosen, r_rejected, nll = implicit_rewards_and_nll(model, batch, self.options.beta)
        # δ: the running mean of the rewards (bco, bco_pair), updated with this batch's before the loss; 0 for bce
        delta = self.delta.add(torch.cat([r_chosen, r_rejected]).detach()) if self.options.loss != "bce" else 0.0
        metrics = {
            "delta": delta,
            "reward_chosen": r_chosen.mean().item(),
            "reward_rejected": r_rejected.mean().item(),
            "chosen_nll": nll.item(),
        }
        # L = −log σ(r(x,y⁺) − δ) − log σ(−(r(x,y⁻) − δ)) + α·NLL(y⁺)/|y⁺|, α = nll_weight (0 in the paper)
        return spot_loss(r_chosen, r_rejected, delta) + self.options.nll_weight * nll, metrics
