"""Machinery shared by the preference and RL methods (DPO, SPoT, GRPO, PCR).

    log π(y|x) = Σ_t log π(y_t | x, y_<t)      (sum over completion tokens only)

plus sampling from a policy held in memory and rewards from the tasks' own verifiers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plasticity_bench.harness.backends.base import SamplingParams
from plasticity_bench.tasks.base import Item
from plasticity_bench.trainers.common import (
    MethodSettings,
    OptionsT,
    Stage,
    TrainContext,
    Trainer,
    TrainingData,
    collate,
    encode,
    to_device,
)


def encode_completions(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    whole: Sequence[bool] | None = None,
) -> dict[str, torch.Tensor]:
    """A right-padded batch of prompt+completion+EOS with the prompt and padding masked in labels;
    a completion marked not `whole` is a prefix (cut at a step) and gets no EOS."""
    ends = whole if whole is not None else [True] * len(completions)
    rows = [
        encode(tokenizer, Item("", "", "", "", prompt, completion, ""), eos)
        for prompt, completion, eos in zip(prompts, completions, ends)
    ]
    return collate(rows, tokenizer.pad_token_id)


def token_logprobs(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y_t | x, y_<t), mask) for every label position, shape [B, T−1]; mask marks completion tokens
    (labels other than -100), the log-probabilities elsewhere are 0. The log-softmax runs in `dtype`:
    float32 for training, float64 where differences of near-equal sums are taken (KL to start).
    The batch is moved to the model's device (a no-op on the CPU)."""
    device = model.device
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits[
        :, :-1
    ]
    labels = batch["labels"][:, 1:].to(device)
    mask = labels != -100
    logp = torch.log_softmax(logits.to(dtype), dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_logprobs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log π(y|x): the sum of the completion's token log-probabilities, shape [B]."""
    logp, _mask = token_logprobs(model, batch)
    return logp.sum(-1)


@torch.no_grad()
def reference_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 64,
    whole: Sequence[bool] | None = None,
) -> list[float]:
    """log π(y|x) under a frozen model, computed once (so π_ref need not stay in memory)."""
    values: list[float] = []
    for start in range(0, len(prompts), batch_size):
        part = slice(start, start + batch_size)
        batch = encode_completions(tokenizer, prompts[part], completions[part], None if whole is None else whole[part])
        values += sequence_logprobs(model, batch).tolist()
    return values


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    ctx: TrainContext,
    prompts: Sequence[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> list[list[str]]:
    """n completions per prompt from the model as it is now (temperature 0 = greedy), through the
    run's rollout sampler (the policy in memory, or a vLLM engine synced to it)."""
    return ctx.sampler.sample(
        model, ctx.tokenizer, prompts, SamplingParams(max_new_tokens, temperature=temperature, n=n, seed=seed)
    )


@dataclass(frozen=True)
class PreferencePair:
    """(x, y⁺, y⁻) with log π_ref of both completions precomputed."""

    prompt: str
    chosen: str
    rejected: str
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0
    chosen_whole: bool = True  # False: the completion is cut at a step (DPO's first_step pairs) and has no EOS
    rejected_whole: bool = True


def reference_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    whole: tuple[Sequence[bool], Sequence[bool]] | None = None,
) -> list[PreferencePair]:
    """The pairs with π_ref's log-probs of both completions (`model` is π_ref), computed once.
    `whole`: (chosen's, rejected's) flags, whether each completion is whole (EOS-terminated) rather
    than cut at a step; default: all whole."""
    chosen_whole, rejected_whole = whole if whole is not None else ([True] * len(prompts), [True] * len(prompts))
    ref_chosen = reference_logprobs(model, tokenizer, prompts, chosen, whole=chosen_whole)
    ref_rejected = reference_logprobs(model, tokenizer, prompts, rejected, whole=rejected_whole)
    fields = zip(prompts, chosen, rejected, ref_chosen, ref_rejected, chosen_whole, rejected_whole)
    return [PreferencePair(*values) for values in fields]


def pair_batch(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair]) -> dict[str, torch.Tensor]:
    prompts = [p.prompt for p in pairs]
    chosen = encode_completions(tokenizer, prompts, [p.chosen for p in pairs], [p.chosen_whole for p in pairs])
    rejected = encode_completions(tokenizer, prompts, [p.rejected for p in pairs], [p.rejected_whole for p in pairs])
    return {
        **{f"chosen_{k}": v for k, v in chosen.items()},
        **{f"rejected_{k}": v for k, v in rejected.items()},
        "ref_chosen": torch.tensor([p.ref_chosen for p in pairs]),
        "ref_rejected": torch.tensor([p.ref_rejected for p in pairs]),
    }


def pair_batches(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair], batch_size: int, seed: int, start: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of pairs, sampled uniformly with replacement, deterministic in `seed`;
    the stream from its `start`-th batch."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(start):
        torch.randint(len(pairs), (batch_size,), generator=generator)
    while True:
        picks = torch.randint(len(pairs), (batch_size,), generator=generator).tolist()
        yield pair_batch(tokenizer, [pairs[i] for i in picks])


def save_pairs(pairs: Sequence[PreferencePair], path: Path | None, extra: dict[str, Sequence] | None = None) -> None:
    """The method's training pairs as a dataset file in the run folder (None: not saved)."""
    if path is not None:
        pd.DataFrame([{**asdict(p)} for p in pairs]).assign(**(extra or {})).to_parquet(path, index=False)


HELD_OUT_EVERY, HELD_OUT_MAX, HELD_OUT_MIN_PAIRS = 10, 64, 20


def held_out_flags(prompts: Sequence[str]) -> list[bool]:
    """Which pairs are held out of training: those of every 10th distinct prompt (so no held-out
    prompt is trained on), at most 64 pairs; none when there are fewer than 20 pairs."""
    if len(prompts) < HELD_OUT_MIN_PAIRS:
        return [False] * len(prompts)
    rank = {prompt: i for i, prompt in enumerate(dict.fromkeys(prompts))}
    flags, held = [], 0
    for prompt in prompts:
        hold = rank[prompt] % HELD_OUT_EVERY == 0 and held < HELD_OUT_MAX
        held += hold
        flags.append(hold)
    return flags


class PairTrainer(Trainer[OptionsT]):
    """A method that trains on (x, y⁺, y⁻) pairs it builds in `setup` (DPO, SPoT): one stage on
    the pairs, batches of pairs, π_ref's log-probs computed once when the pairs are made. The
    pairs are not part of the saved training state: `setup` rebuilds them, deterministically,
    from the starting model when a run resumes.

    The pairs of every 10th prompt (at most 64 pairs) are held out of training: each step logs the implicit-reward
    margin r(x,y⁺) − r(x,y⁻) and the pair accuracy on them (`heldout_margin`,
    `heldout_pair_accuracy`), whether the preference generalises rather than being memorised."""

    pairs: list[PreferencePair]
    held_out: list[PreferencePair]
    held_out_batch: dict[str, torch.Tensor] | None = None
    samples_policy = True

    def make_pairs(
        self,
        model: PreTrainedModel,
        ctx: TrainContext,
        prompts: Sequence[str],
        chosen: Sequence[str],
        rejected: Sequence[str],
        saved_as: Path | None,
        extra: dict[str, Sequence] | None = None,
        whole: tuple[Sequence[bool], Sequence[bool]] | None = None,
        held_out: Sequence[bool] | None = None,
    ) -> None:
        """Build the pairs with π_ref's log-probs (`reference_pairs`), split off the held-out ones
        (`held_out`; default `held_out_flags`), save all of them (column `held_out`)."""
        pairs = reference_pairs(model, ctx.tokenizer, prompts, chosen, rejected, whole)
        flags = list(held_out) if held_out is not None else held_out_flags(prompts)
        self.pairs = [p for p, held in zip(pairs, flags) if not held]
        self.held_out = [p for p, held in zip(pairs, flags) if held]
        # encoded and placed once: every step scores the same held-out batch
        self.held_out_batch = (
            to_device(pair_batch(ctx.tokenizer, self.held_out), ctx.placement.device) if self.held_out else None
        )
        save_pairs(pairs, saved_as, {**(extra or {}), "held_out": flags})

    def update(
        self,
        model: PreTrainedModel,
        batch: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        ctx: TrainContext,
    ) -> dict[str, float]:
        metrics = super().update(model, batch, optimizer, ctx)
        if self.held_out_batch is not None:
            with torch.no_grad(), ctx.placement.autocast():
                r_chosen, r_rejected = implicit_rewards(model, self.held_out_batch, self.options.beta)  # type: ignore[attr-defined]  # every pair method has β
            metrics["heldout_margin"] = (r_chosen - r_rejected).mean().item()
            metrics["heldout_pair_accuracy"] = (r_chosen > r_rejected).float().mean().item()
        return metrics

    def stages(self, data: TrainingData, settings: MethodSettings) -> list[Stage]:
        return [Stage("hard", self.pairs, settings.steps, settings.lr)]

    def batches(
        self, model: PreTrainedModel, stage: Stage, ctx: TrainContext, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        return pair_batches(ctx.tokenizer, stage.items, ctx.loop.batch_size, ctx.loop.seed, start)


def implicit_rewards(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """r(x,y) = β·[log π_θ(y|x) − log π_ref(y|x)] for the chosen and the rejected completions."""
    r_chosen, r_rejected, _nll = implicit_rewards_and_nll(model, batch, beta)
    return r_chosen, r_rejected


def implicit_rewards_and_nll(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(r(x,y⁺), r(x,y⁻), NLL(y⁺)): the implicit rewards and the chosen completions' negative
    log-likelihood per token, averaged over the batch's chosen tokens (TRL's `rpo_alpha` term)."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k: batch[f"{prefix}_{k}"] for k in ("input_ids", "attention_mask", "labels")}

    logp_chosen, mask = token_logprobs(model, part("chosen"))
    r_chosen = beta * (logp_chosen.sum(-1) - batch["ref_chosen"])
    r_rejected = beta * (sequence_logprobs(model, part("rejected")) - batch["ref_rejected"])
    return r_chosen, r_rejected, -logp_chosen.sum() / mask.sum().clamp(min=1)
