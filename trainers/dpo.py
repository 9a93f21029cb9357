"""DPO on pairs from the model's own samples (Rafailov et al. 2023), sigmoid loss:

    r(x,y) = β·[log π_θ(y|x) − log π_ref(y|x)]
    L      = −log σ( r(x,y⁺) − r(x,y⁻) )  +  α · NLL(y⁺),        β = 0.1

α = `nll_weight` (TRL's `rpo_alpha`; NLL per chosen token): 0 is plain DPO.

Pairs: the starting model samples `samples_per_prompt` completions for each of `pair_prompts`
hard training prompts; a prompt with at least one verified-correct and one wrong sample gives up
to `pairs_per_prompt` pairs: each wrong sample (in sampling order) paired with the correct ones
in turn. "Correct" is `reward` (tasks/verify.py): by default every worked step must be right
where the task can check it, so a lucky final answer is not a chosen answer. With `pairs:
first_step` both completions are cut after the first step where they differ (Step-DPO's pairs,
Lai et al. 2024; a cut completion has no EOS). π_ref is the starting model; its log-probs are
computed once.

Defaults (BENCHMARKS §11's sweep): with one pair per prompt and η = 1e-4 the organism memorised
its ≈ 250 pairs (pair accuracy 1.00, held-out margin falling below 0) and lost 16 points of hard
math. More pairs (1024 prompts, up to 4 pairs each) and η = 3e-5 make the held-out margin grow
(0.05 → 0.24), but greedy hard-math accuracy still falls (−5.5); no setting tried gained on the
target, with or without an NLL term (nll_weight 1: −1.5 at 3e-5, −3.5 at 3e-4). The default stays
plain DPO at the least harmful η. Session 5 (BENCHMARKS §12.4) tried verified pairs (−9.5), β = 1
(−7.0; with NLL −2.0), NLL at 1e-4 (−3.0) and first-step pairs (−14.0 at 3e-5, −16.5 at 1e-4).
Plain DPO lowers the chosen answers' own likelihood while the margin grows (likelihood
displacement, Razin et al. 2024: worst when y⁺ and y⁻ are nearly the same text, as chains one
digit apart are, and first-step pairs are even closer); with the NLL term the chosen answers are
learned, yet easy math still falls 11–25 points.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from harness.core.errors import BenchError
from tasks.base import Item
from tasks.verify import check_reward_kind, max_new_tokens, rewards
from trainers.common import TRAINERS, TrainContext, TrainingData
from trainers.policy import PairTrainer, implicit_rewards_and_nll, sample

PAIRS_FILE = "preference_pairs.parquet"
PAIR_KINDS = ("full", "first_step")
STEP_ENDS = (";", "\n")  # where a worked step ends: the organism's chains, and a line of a real model's solution


@dataclass(frozen=True)
class DPOOptions:
    beta: float = 0.1
    pair_prompts: int = 1024  # hard training prompts sampled to find pairs
    samples_per_prompt: int = 8
    pairs_per_prompt: int = 4  # at most this many (correct, wrong) pairs from one prompt's samples
    nll_weight: float = 0.0  # α: weight of the chosen completions' NLL (TRL's rpo_alpha); 0 = plain DPO
    temperature: float = 1.0
    pairs: str = "full"  # full: whole samples; first_step: both cut after the first step where they differ (Step-DPO's pairs)
    reward: str = "verified"  # which samples are right: verified (every worked step, where the task can check) or answer

    def validate(self) -> None:
        if self.beta <= 0:
            raise BenchError(f"options.beta must be positive, got {self.beta}")
        if self.samples_per_prompt < 2:
            raise BenchError(f"options.samples_per_prompt must be >= 2 to find a pair, got {self.samples_per_prompt}")
        if self.nll_weight < 0:
            raise BenchError(f"options.nll_weight must be >= 0, got {self.nll_weight}")
        check_reward_kind(self.reward)
        if self.pairs not in PAIR_KINDS:
            raise BenchError(f"options.pairs must be one of {', '.join(PAIR_KINDS)}, got {self.pairs!r}")
        if self.pair_prompts <= 0 or self.temperature <= 0 or self.pairs_per_prompt <= 0:
            raise BenchError("options.pair_prompts, options.pairs_per_prompt and options.temperature must be positive")


def sampled_pairs(model: PreTrainedModel, ctx: TrainContext, hard: Sequence[Item], options: DPOOptions,
                  method: str) -> tuple[list[str], list[str], list[str]]:
    """(prompts, chosen, rejected): the model samples `samples_per_prompt` completions of each of
    the first `pair_prompts` hard prompts; a prompt with a verified-correct and a wrong sample gives
    up to `pairs_per_prompt` pairs (wrong samples in order, correct ones in turn). BenchError when no prompt does."""
    items = list(hard[: options.pair_prompts])
    max_tokens = max(max_new_tokens(item) for item in items)
    samples = sample(model, ctx, [i.prompt for i in items], options.samples_per_prompt, max_tokens, options.temperature, ctx.loop.seed)
    pairs = []
    for item, completions in zip(items, samples):
        scores = rewards([item] * len(completions), completions, options.reward)
        right = [c for c, s in zip(completions, scores) if s >= 1.0]
        wrong = [c for c, s in zip(completions, scores) if s < 1.0]
        for j, rejected in enumerate(wrong[: options.pairs_per_prompt] if right else []):
            pairs.append((item.prompt, right[j % len(right)], rejected))
    if not pairs:
        raise BenchError(
            f"{method}: no preference pairs: none of {len(items)} prompts had both a correct and a wrong sample; "
            "raise options.samples_per_prompt or options.pair_prompts"
        )
    return [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]


def through_first_differing_step(chosen: str, rejected: str) -> tuple[str, str]:
    """Both completions cut just after the first step where they differ (a step ends at ';' or a
    newline; a text without one after the difference is kept whole): the shared steps cancel in
    r⁺ − r⁻, so the pair compares the right step with the wrong one, not the rest of the wrong
    chain, whose later steps may be sound arithmetic on a wrong total (Step-DPO, Lai et al. 2024)."""
    common = len(os.path.commonprefix([chosen, rejected]))

    def through_step(text: str) -> str:
        ends = [i for i in (text.find(end, common) for end in STEP_ENDS) if i >= 0]
        return text[: min(ends) + 1] if ends else text

    return through_step(chosen), through_step(rejected)


def first_step_pairs(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]
                     ) -> tuple[list[str], list[str], list[str], tuple[list[bool], list[bool]]]:
    """The pairs cut through their first differing step, once each (samples that err alike cut
    to the same pair), with (chosen's, rejected's) flags: whether each completion was left whole."""
    unique: dict[tuple[str, str, str], tuple[bool, bool]] = {}
    for prompt, y_plus, y_minus in zip(prompts, chosen, rejected):
        cut_plus, cut_minus = through_first_differing_step(y_plus, y_minus)
        unique.setdefault((prompt, cut_plus, cut_minus), (cut_plus == y_plus, cut_minus == y_minus))
    keys, flags = list(unique), list(unique.values())
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], ([f[0] for f in flags], [f[1] for f in flags])


def dpo_pairs(model: PreTrainedModel, ctx: TrainContext, hard: Sequence[Item], options: DPOOptions, method: str
              ) -> tuple[list[str], list[str], list[str], tuple[list[bool], list[bool]]]:
    """The pairs `options` ask for (DPO's, and RPS/EPS's DPO stage): sampled, then cut with
    `pairs: first_step`; with (chosen's, rejected's) flags of which completions are whole."""
    prompts, chosen, rejected = sampled_pairs(model, ctx, hard, options, method)
    if options.pairs == "first_step":
        return first_step_pairs(prompts, chosen, rejected)
    return prompts, chosen, rejected, ([True] * len(prompts), [True] * len(prompts))


def dpo_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """L = −log σ(r⁺ − r⁻), averaged over the batch."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


@TRAINERS.register("dpo", "DPO (sigmoid, β=0.1) on correct/incorrect pairs from the model's own samples")
class DPO(PairTrainer[DPOOptions]):
    Options = DPOOptions
    default_lr = 3e-5

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        prompts, chosen, rejected, whole = dpo_pairs(model, ctx, data.hard, self.options, "dpo")
        self.make_pairs(model, ctx, prompts, chosen, rejected, ctx.run_dir and ctx.run_dir / PAIRS_FILE, whole=whole)

    def loss(self, model, batch):
        r_chosen, r_rejected, nll = implicit_rewards_and_nll(model, batch, self.options.beta)
        metrics = {"reward_margin": (r_chosen - r_rejected).mean().item(), "pair_accuracy": (r_chosen > r_rejected).float().mean().item(),
                   "chosen_nll": nll.item()}
        return dpo_loss(r_chosen, r_rejected) + self.options.nll_weight * nll, metrics
