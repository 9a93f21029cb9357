"""DPO on pairs from the model's own samples (Rafailov et al. 2023), sigmoid loss:

    r(x,y) = β·[log π_θ(y|x) − log π_ref(y|x)]
    L      = −log σ( r(x,y⁺) − r(x,y⁻) )  +  α · NLL(y⁺),        β = 0.1, α = 1

α = `nll_weight` (TRL's `rpo_alpha`; NLL per chosen token): 0 is plain DPO. π_ref is the
starting model.

Pairs: a prompt's `samples_per_prompt` samples give up to `pairs_per_prompt` pairs, each wrong
sample (in sampling order) paired with the right ones in turn; none without a right one. "Right"
is `reward` (tasks/verify.py): by default every worked step must be right where the task can
check it, so a lucky final answer is not a chosen answer. Where the samples come from is
`pairs_from`:
  policy (default): online DPO (Guo et al. 2024). Every step samples `prompts_per_step` fresh hard
      prompts from the policy as it is then (another draw when none gives a pair); π_ref stays in
      memory for their log-probs. With α = 1 this is iterative RPO (Pang et al. 2024), made
      one step per iteration.
  start: offline DPO. The starting model samples the first `pair_prompts` hard prompts once;
      training draws batches from those pairs, with π_ref's log-probs computed once.
With `pairs: first_step` both completions are cut after the first step where they differ
(Step-DPO's pairs, Lai et al. 2024; a cut completion has no EOS). Either way the pairs of every
10th of the first `pair_prompts` prompts, sampled from the start, are held out of training.

Defaults (BENCHMARKS §11, §12.4, §13, on organism A; §14.1): offline DPO never gains on the target.
With 1–4 pairs per prompt, η 3e-5 to 3e-4, β 0.1 and 1, α 0 and 1, answer-checked, verified and
first-step pairs it scored −1.5 to −16.5 points, while the held-out margins grew. Plain DPO
lowers the chosen answers' own likelihood as the margin grows (likelihood displacement, Razin
et al. 2024: worst when y⁺ and y⁻ are nearly the same text, as chains one digit apart are); even
with α = 1, easy math fell. Online pairs avoid it: at η 1e-4, 300 steps, seed 0, online DPO moved
hard math +0.5 with α = 0 and +3.5 with α = 1 (−0.5 and −9.5 at 3e-4), and 600 steps with α = 1
gained +8.0 with no forgetting, hence η 1e-4, α = 1, 600 steps.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.options import option
from plasticity_bench.tasks.base import Item
from plasticity_bench.tasks.verify import REWARD_KINDS, max_new_tokens, rewards
from plasticity_bench.trainers.common import (
    TRAINERS,
    MethodSettings,
    Stage,
    TrainContext,
    TrainingData,
    freeze_reference,
)
from plasticity_bench.trainers.policy import (
    HELD_OUT_EVERY,
    HELD_OUT_MAX,
    PairTrainer,
    implicit_rewards_and_nll,
    pair_batch,
    reference_pairs,
)
from plasticity_bench.trainers.sharded import sharded_sample

PAIRS_FILE = "preference_pairs.parquet"
PAIR_KINDS = ("full", "first_step")
PAIR_SOURCES = ("start", "policy")
MAX_DRAWS = 16  # pairs_from policy: prompt draws a step may take to find one pair before giving up
STEP_ENDS = (";", "\n")  # where a worked step ends: the organism's chains, and a line of a real model's solution


@dataclass(frozen=True)
class DPOOptions:
    beta: float = option(0.1, "β in r(x,y) = β·[log π_θ(y|x) − log π_ref(y|x)]", low=0, low_open=True)
    pair_prompts: int = option(
        1024,
        "hard training prompts sampled to find pairs (pairs_from start; every 10th held out)",
        low=0,
        low_open=True,
    )
    samples_per_prompt: int = option(8, "samples of each prompt (a pair needs >= 2)", low=2)
    pairs_per_prompt: int = option(
        4, "at most this many (correct, wrong) pairs from one prompt's samples", low=0, low_open=True
    )
    nll_weight: float = option(1.0, "α, weight of the chosen completions' NLL (TRL's rpo_alpha); 0 = plain DPO", low=0)
    temperature: float = option(1.0, "sampling temperature of the pairs' samples", low=0, low_open=True)
    pairs: str = option(
        "full",
        "full: whole samples; first_step: both cut after the first step where they differ (Step-DPO)",
        choices=PAIR_KINDS,
    )
    reward: str = option(
        "verified",
        "which samples are right: verified (every worked step, where the task can check) or answer",
        choices=REWARD_KINDS,
    )
    pairs_from: str = option(
        "policy",
        "start: pairs sampled once from the starting model (offline DPO); policy: "
        "sampled afresh from the current policy at every step (online DPO)",
        choices=PAIR_SOURCES,
    )
    prompts_per_step: int = option(8, "prompts sampled per step with pairs_from policy", low=0, low_open=True)


def prompt_pairs(
    item: Item, completions: Sequence[str], scores: Sequence[float], options: DPOOptions
) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) from one prompt's rewarded samples: each wrong sample (in sampling
    order, at most `pairs_per_prompt`) paired with the right ones in turn; none without a right one."""
    right = [c for c, s in zip(completions, scores) if s >= 1.0]
    wrong = [c for c, s in zip(completions, scores) if s < 1.0]
    return [
        (item.prompt, right[j % len(right)], rejected)
        for j, rejected in enumerate(wrong[: options.pairs_per_prompt] if right else [])
    ]


def sampled_pairs(
    model: PreTrainedModel, ctx: TrainContext, items: Sequence[Item], options: DPOOptions, seed: int
) -> tuple[list[tuple[str, str, str]], list[float]]:
    """The model, as it is now, samples `samples_per_prompt` completions of each item's prompt:
    the (prompt, chosen, rejected) pairs they give (`prompt_pairs`) and every sample's reward."""
    samples = sharded_sample(  # under N processes each samples its share of the prompts (trainers/sharded.py)
        model,
        ctx,
        [i.prompt for i in items],
        options.samples_per_prompt,
        max(max_new_tokens(i) for i in items),
        options.temperature,
        seed,
    )
    pairs: list[tuple[str, str, str]] = []
    scores: list[float] = []
    for item, completions in zip(items, samples):
        item_scores = rewards([item] * len(completions), completions, options.reward)
        pairs += prompt_pairs(item, completions, item_scores, options)
        scores += item_scores
    return pairs, scores


def cut_pairs(
    pairs: Sequence[tuple[str, str, str]], options: DPOOptions
) -> tuple[list[str], list[str], list[str], tuple[list[bool], list[bool]]]:
    """The pairs as `options.pairs` asks (cut through their first differing step, or whole), with
    (chosen's, rejected's) flags of which completions are whole."""
    prompts, chosen, rejected = [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]
    if options.pairs == "first_step":
        return first_step_pairs(prompts, chosen, rejected)
    return prompts, chosen, rejected, ([True] * len(prompts), [True] * len(prompts))


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


def first_step_pairs(
    prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]
) -> tuple[list[str], list[str], list[str], tuple[list[bool], list[bool]]]:
    """The pairs cut through their first differing step, once each (samples that err alike cut
    to the same pair), with (chosen's, rejected's) flags: whether each completion was left whole."""
    unique: dict[tuple[str, str, str], tuple[bool, bool]] = {}
    for prompt, y_plus, y_minus in zip(prompts, chosen, rejected):
        cut_plus, cut_minus = through_first_differing_step(y_plus, y_minus)
        unique.setdefault((prompt, cut_plus, cut_minus), (cut_plus == y_plus, cut_minus == y_minus))
    keys, flags = list(unique), list(unique.values())
    return (
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        ([f[0] for f in flags], [f[1] for f in flags]),
    )


def dpo_pairs(
    model: PreTrainedModel, ctx: TrainContext, hard: Sequence[Item], options: DPOOptions, method: str
) -> tuple[list[str], list[str], list[str], tuple[list[bool], list[bool]]]:
    """The pairs `options` ask for (DPO's, and RPS/EPS's DPO stage): the starting model samples
    the first `pair_prompts` hard prompts (`sampled_pairs`), then the pairs are cut with `pairs:
    first_step`; with (chosen's, rejected's) flags of which completions are whole. BenchError when no
    prompt gives a pair."""
    items = list(hard[: options.pair_prompts])
    pairs, _scores = sampled_pairs(model, ctx, items, options, ctx.loop.seed)
    if not pairs:
        raise BenchError(
            f"{method}: no preference pairs: none of {len(items)} prompts had both a correct and a wrong sample; "
            "raise options.samples_per_prompt or options.pair_prompts"
        )
    return cut_pairs(pairs, options)


def dpo_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """L = −log σ(r⁺ − r⁻), averaged over the batch."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def rpo_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, nll: torch.Tensor, alpha: float) -> torch.Tensor:
    """RPO (Pang et al. 2024; TRL's DPOTrainer with `rpo_alpha` = α):

        L = −log σ(r(x,y⁺) − r(x,y⁻)) + α · NLL(y⁺)/|y⁺|

    the DPO loss averaged over the batch plus α times `nll`, the chosen completions' negative
    log-likelihood per token over the batch's chosen tokens (as TRL averages its cross-entropy);
    α = 0 is plain DPO."""
    return dpo_loss(r_chosen, r_rejected) + alpha * nll


@TRAINERS.register("dpo", "DPO (sigmoid, β=0.1) on correct/incorrect pairs from the model's own samples")
class DPO(PairTrainer[DPOOptions]):
    Options = DPOOptions
    default_lr = 1e-4
    default_steps = 600  # like GRPO's: ≈ 9 pairs a step from 8 prompts (BENCHMARKS §13)

    held_out_prompts: frozenset[str] = frozenset()

    @property
    def online(self) -> bool:
        return self.options.pairs_from == "policy"

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        """Offline: the training and held-out pairs, sampled from the starting model. Online: π_ref
        frozen in memory (every step's new pairs need its log-probs), and only the held-out pairs,
        from every 10th of the first `pair_prompts` prompts, which online training never draws."""
        saved_as = ctx.run_dir and ctx.run_dir / PAIRS_FILE
        if not self.online:
            prompts, chosen, rejected, whole = dpo_pairs(model, ctx, data.hard, self.options, "dpo")
            self.make_pairs(model, ctx, prompts, chosen, rejected, saved_as, whole=whole)
            return
        ctx.reference = freeze_reference(model)
        held = list(data.hard[: self.options.pair_prompts : HELD_OUT_EVERY])
        prompts, chosen, rejected, whole = cut_pairs(
            sampled_pairs(model, ctx, held, self.options, ctx.loop.seed)[0], self.options
        )
        keep = slice(0, HELD_OUT_MAX)  # none at all is allowed: the held-out metrics are then not logged
        self.make_pairs(
            model,
            ctx,
            prompts[keep],
            chosen[keep],
            rejected[keep],
            saved_as,
            whole=(whole[0][keep], whole[1][keep]),
            held_out=[True] * len(prompts[keep]),
        )
        self.held_out_prompts = frozenset(item.prompt for item in held)

    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        if not self.online:
            return super().stages(data, settings)
        return [
            Stage(
                "hard",
                [item for item in data.hard if item.prompt not in self.held_out_prompts],
                settings.steps,
                settings.lr,
            )
        ]

    def batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        return (
            self.online_batches(model, stage, ctx, start) if self.online else super().batches(model, stage, ctx, start)
        )

    def online_batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Step k's pairs, sampled from the policy as it is at step k: `prompts_per_step` prompts,
        `samples_per_prompt` samples each, paired as offline; a draw that gives no pair is followed
        by another. Each draw is seeded by (seed, k, draw) alone, so resuming at any step replays nothing."""
        options = self.options
        assert ctx.reference is not None, "setup() freezes the reference"
        for step in itertools.count(start):
            for draw in range(MAX_DRAWS):
                rng = random.Random(f"{ctx.loop.seed}/dpo/{step}/{draw}")
                items = [stage.items[rng.randrange(len(stage.items))] for _ in range(options.prompts_per_step)]
                found, scores = sampled_pairs(model, ctx, items, options, seed=rng.randrange(2**31))
                if found:
                    break
            else:
                raise BenchError(
                    f"dpo: step {step}: none of {MAX_DRAWS} draws of {options.prompts_per_step} prompts "
                    "gave a preference pair; "
                    "raise options.samples_per_prompt or options.prompts_per_step"
                )
            prompts, chosen, rejected, whole = cut_pairs(found, options)
            pairs = reference_pairs(ctx.reference, ctx.tokenizer, prompts, chosen, rejected, whole)
            yield {
                **pair_batch(ctx.tokenizer, pairs),
                "examples": torch.tensor(len(pairs)),
                "reward_mean": torch.tensor(sum(scores) / len(scores)),
            }

    def loss(self, model, batch):
        r_chosen, r_rejected, nll = implicit_rewards_and_nll(model, batch, self.options.beta)
        metrics = {
            "reward_margin": (r_chosen - r_rejected).mean().item(),
            "pair_accuracy": (r_chosen > r_rejected).float().mean().item(),
            "chosen_nll": nll.item(),
        }
        if "examples" in batch:  # online: the pairs this step found, and the mean reward of the samples they came from
            metrics |= {
                "examples": int(batch["examples"]),
                "pairs": int(batch["examples"]),
                "reward_mean": float(batch["reward_mean"]),
            }
        return rpo_loss(r_chosen, r_rejected, nll, self.options.nll_weight), metrics
