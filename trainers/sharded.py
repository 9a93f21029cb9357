"""Sampling shared out over the training processes: GRPO/PCR rollouts, DPO/SPoT's pair samples.

Under N processes a draw of completions for P prompts is made in N shards: process r samples the
prompts of its contiguous block (the same blocks as a batch's rows, trainers/distributed.py) with
the seed `seed · 1009 + r` (`Distributed.shard_seed`), and the shards are gathered in rank order,
so every process ends with the whole draw, the same on all of them. The draw is deterministic in
(seed, step, N); it differs from one process's draw at the same seed (each shard has its own
seed), which is why `num_processes` is part of a run's identity. Alone, the draw is `sample` itself.

When the model in training is sharded at rest (FSDP2, DeepSpeed ZeRO-3), a forward pass through it is a
collective: the processes would have to run the same passes, and sampling different prompts (stopping at
different lengths) they do not. So every process samples with a whole copy of the policy instead (made at the
first draw, `whole_policy`), into which all of them first gather the current weights: the draw is then the one a
data-parallel run with the same weights makes. The copy costs one whole model per process (the memory check
counts it). DeepSpeed ZeRO-2 keeps the weights whole and samples with the model itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from plasticity_bench.trainers import deepspeed_zero, fsdp
from plasticity_bench.trainers.common import TrainContext
from plasticity_bench.trainers.policy import sample


def sharded_sample(
    model: PreTrainedModel,
    ctx: TrainContext,
    prompts: Sequence[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> list[list[str]]:
    """`sample`'s n completions per prompt, this process sampling only its block of the prompts."""
    dist = ctx.dist
    if not dist.active:
        return sample(model, ctx, prompts, n, max_new_tokens, temperature, seed)
    policy = sampling_policy(model, ctx)
    start, end = dist.bounds(len(prompts))
    mine = (
        sample(policy, ctx, prompts[start:end], n, max_new_tokens, temperature, dist.shard_seed(seed))
        if end > start
        else []
    )
    return [group for shard in dist.gather(mine) for group in shard]


def sampling_policy(model: PreTrainedModel, ctx: TrainContext) -> PreTrainedModel:
    """The model a draw samples with: the model itself, or, sharded at rest, the whole copy holding its current
    weights (every process must call this: the weights are gathered)."""
    sharding = ctx.dist.sharding
    if sharding is None or not sharding.at_rest:
        return model
    if ctx.whole_policy is None:
        ctx.whole_policy = whole_copy(model, ctx.placement.device)
    engine = deepspeed_zero if sharding.by_deepspeed else fsdp
    copy_weights(ctx.whole_policy, engine.every_process_whole_weights(model))
    return ctx.whole_policy


def whole_copy(model: PreTrainedModel, device: str) -> PreTrainedModel:
    """A whole, frozen model of the same architecture, attention and generation settings (weights not yet set)."""
    dtype = next(model.parameters()).dtype
    with torch.device(device):
        whole = AutoModelForCausalLM.from_config(
            model.config, torch_dtype=dtype, attn_implementation=model.config._attn_implementation
        )
    whole.generation_config = model.generation_config
    whole.eval().requires_grad_(False)
    return whole


@torch.no_grad()
def copy_weights(whole: torch.nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Every parameter of `whole` from the gathered weights of the same name (tied ones once, as both models
    name them); a parameter the gathered weights lack would leave the copy's random start, so it is an error."""
    parameters = dict(whole.named_parameters())
    copied = set()
    for name, tensor in weights:
        parameters[name].copy_(tensor)
        copied.add(name)
    assert copied == set(parameters), f"the sampling copy lacks {sorted(set(parameters) - copied)[:3]}"
