"""GRPO (Shao et al. 2024): group-normalised advantages, clipped surrogate, k3 KL to π_ref.

For each of `prompts_per_step` hard prompts, sample G completions from the current policy and
reward each with the task's own verifier R_i ∈ [0, 1]. Then

    Â_i   = (R_i − mean(R)) / (std(R) + ε)                     within the prompt's group
    ρ_t   = π_θ(y_t | x, y_<t) / π_old(y_t | x, y_<t)
    L_pla = −mean_t min(ρ_t Â, clip(ρ_t, 1−ε_c, 1+ε_c) Â)        token-level: mean over all tokens
    KL_t  = π_ref/π_θ − log(π_ref/π_θ) − 1                       (k3 estimator, per token)
    L     = L_pla + β · mean_t KL_t

π_old is the policy that sampled the rollout; each rollout is used for `updates_per_rollout`
optimiser steps (the first has ρ ≡ 1; later ones exercise the clip). The loss is TRL's `bnpo`
aggregation: one token mean over the whole rollout batch.

R is the task's verified reward (tasks/verify.py `rewards`): on the organism's chains it is 1 only
when every worked step is right, not just the final answer (`reward: answer` rewards the answer alone).
Defaults (BENCHMARKS §12, measured on organism A, the AMD machine's; §14.1): η = 1e-4, 8 prompts ×
G = 8 per rollout, one update per rollout (fully on-policy), 600 steps (at 300 the gain, ≈ 5 points,
was within most runs' own interval). With the answer-only reward GRPO learned nothing at any η:
43 % of the right answers it sampled came from wrong steps, so it was taught wrong arithmetic, and
at η ≥ 2e-4 easy math collapsed. With the verified reward, in a standalone probe of these equations
(seed 0, 300 steps), 4 prompts per step with 2 updates per rollout gained +5.5, 8 prompts with 1
update +9.5, and 600 steps +19.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from transformers import PreTrainedModel

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.options import option
from plasticity_bench.tasks.verify import REWARD_KINDS, max_new_tokens, rewards
from plasticity_bench.trainers.common import (
    TRAINERS,
    MethodSettings,
    Stage,
    TrainContext,
    Trainer,
    TrainingData,
    freeze_reference,
)
from plasticity_bench.trainers.policy import encode_completions, token_logprobs
from plasticity_bench.trainers.sharded import sharded_sample


@dataclass(frozen=True)
class GRPOOptions:
    group_size: int = option(8, "G, completions sampled per prompt (a group-normalised advantage needs >= 2)", low=2)
    prompts_per_step: int = option(8, "prompts (groups) per rollout: G · 8 = 64 completions", low=0, low_open=True)
    beta: float = option(0.04, "β, the coefficient of the k3 KL to π_ref", low=0)
    clip_eps: float = option(
        0.2, "ε_c, the surrogate's clip: ρ in [1 − ε_c, 1 + ε_c]", low=0, high=1, low_open=True, high_open=True
    )
    temperature: float = option(1.0, "sampling temperature of the rollouts", low=0, low_open=True)
    updates_per_rollout: int = option(1, "optimiser steps on each rollout (1: fully on-policy)", low=0, low_open=True)
    advantage_eps: float = option(1e-4, "ε in Â = (R − mean R) / (std R + ε)", low=0)
    reward: str = option(
        "verified",
        "R: verified (every worked step right, where the task can check) or answer (the final answer's score)",
        choices=REWARD_KINDS,
    )


GRPOOptionsT = TypeVar("GRPOOptionsT", bound=GRPOOptions)  # PCR extends GRPO's options


def group_advantages(group_rewards: torch.Tensor, eps: float) -> torch.Tensor:
    """Â = (R − mean R) / (std R + ε) along the last axis (the G samples of one prompt; unbiased std)."""
    mean = group_rewards.mean(-1, keepdim=True)
    std = group_rewards.std(-1, keepdim=True)
    return (group_rewards - mean) / (std + eps)


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: min(ρÂ, clip(ρ, 1±ε)Â), and whether the clip was active (for the clip fraction)."""
    ratio = torch.exp(logp - old_logp)
    advantages = advantages.unsqueeze(-1)
    unclipped, clipped = ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    return torch.minimum(unclipped, clipped), (clipped < unclipped)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per token: π_ref/π_θ − log(π_ref/π_θ) − 1 ≥ 0, an unbiased estimate of KL(π_θ ‖ π_ref)."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def grpo_terms(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], options: GRPOOptions
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(L_pla, β·KL, metrics) for a rollout batch: the two terms PCR treats separately."""
    logp, mask = token_logprobs(model, batch)
    old_logp = (
        batch["old_logp"] if "old_logp" in batch else logp.detach()
    )  # one update per rollout: π_old is π_θ (ρ ≡ 1)
    surrogate, clipped = clipped_surrogate(logp, old_logp, batch["advantages"], options.clip_eps)
    kl = k3_kl(logp, batch["ref_logp"])
    metrics = {
        "reward_mean": float(batch["reward_mean"]),
        "kl": masked_mean(kl, mask).item(),
        "clip_fraction": masked_mean(clipped.float(), mask).item(),
    }
    return -masked_mean(surrogate, mask), options.beta * masked_mean(kl, mask), metrics


@TRAINERS.register("grpo", "GRPO: G samples per prompt, verifier rewards, clipped surrogate + β·KL (k3)")
class GRPO(Trainer[GRPOOptionsT]):
    Options = GRPOOptions
    default_lr = 1e-4
    # 8 rollouts of 8 prompts a step: 300 steps gained ≈ 5 points, short of each run's own 2 SE
    # (organism A, BENCHMARKS §12.6)
    default_steps = 600
    samples_policy = True

    rollout: tuple[int, dict[str, torch.Tensor]] | None = None  # the latest rollout: (index, batch)

    def setup(self, model: PreTrainedModel, data: TrainingData, ctx: TrainContext) -> None:
        ctx.reference = freeze_reference(model)

    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        return [Stage("hard", data.hard, settings.steps, settings.lr)]

    def batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Rollouts from the current policy, each yielded `updates_per_rollout` times.

        Rollout k samples prompts from a seeded stream and completions with seed `seed·100003 + k`,
        so the stream from its `start`-th batch needs only the prompt draws of the rollouts before
        it, plus, when `start` falls between two updates of one rollout, that rollout itself
        (sampled from an earlier policy: it is the state `state_dict` saves)."""
        options = self.options
        rng = random.Random(f"{ctx.loop.seed}/rollouts")
        first, offset = divmod(start, options.updates_per_rollout)
        for _ in range(first * options.prompts_per_step):
            rng.randrange(len(stage.items))
        for rollout in range(first, 10**9):
            items = [stage.items[rng.randrange(len(stage.items))] for _ in range(options.prompts_per_step)]
            if rollout == first and offset:
                if self.rollout is None or self.rollout[0] != rollout:
                    raise BenchError(
                        f"grpo: resuming between two updates of rollout {rollout}, "
                        "but the saved training state does not hold it"
                    )
                batch = self.rollout[1]
            else:
                batch = self.rollout_batch(model, items, ctx, rollout)
            self.rollout = (rollout, batch)
            for update in range(offset if rollout == first else 0, options.updates_per_rollout):
                yield {**batch, "examples": torch.tensor(batch["input_ids"].shape[0] if update == 0 else 0)}

    def rollout_batch(
        self, model: PreTrainedModel, items: list, ctx: TrainContext, rollout: int
    ) -> dict[str, torch.Tensor]:
        """Sample G completions per prompt, reward them, and compute π_old's and π_ref's log-probs and Â."""
        options = self.options
        max_tokens = max(max_new_tokens(item) for item in items)
        groups = sharded_sample(  # under N processes each samples its share of the prompts (trainers/sharded.py)
            model,
            ctx,
            [i.prompt for i in items],
            options.group_size,
            max_tokens,
            options.temperature,
            seed=ctx.loop.seed * 100_003 + rollout,
        )
        flat_items = [item for item in items for _ in range(options.group_size)]
        completions = [c for group in groups for c in group]
        group_rewards = torch.tensor(rewards(flat_items, completions, options.reward)).view(
            len(items), options.group_size
        )
        batch = encode_completions(ctx.tokenizer, [i.prompt for i in flat_items], completions)
        assert ctx.reference is not None, "setup() freezes the reference"
        with torch.no_grad():
            if options.updates_per_rollout > 1:  # later updates need π_old's log-probs; a single update is π_old itself
                batch["old_logp"] = token_logprobs(model, batch)[0]
            batch["ref_logp"] = token_logprobs(ctx.reference, batch)[0]
        batch["advantages"] = group_advantages(group_rewards, options.advantage_eps).view(-1)
        batch["reward_mean"] = group_rewards.mean()
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The rollout being used (its index and batch): a checkpoint between two of its updates
        needs it. With one update per rollout no checkpoint falls inside one, so none is saved."""
        if self.rollout is None or self.options.updates_per_rollout == 1:
            return {"rollout": None}
        return {"rollout": {"index": self.rollout[0], "batch": self.rollout[1]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["rollout"]
        self.rollout = None if saved is None else (saved["index"], saved["batch"])

    def loss(self, model, batch):
        pla, sta, metrics = grpo_terms(model, batch, self.options)
        return pla + sta, {**metrics, "examples": int(batch["examples"])}
