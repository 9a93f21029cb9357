"""Sampling shared out over the training processes: GRPO/PCR rollouts, DPO/SPoT's pair samples.

Under N processes a draw of completions for P prompts is made in N shards: process r samples the
prompts of its contiguous block (the same blocks as a batch's rows, trainers/distributed.py) with
the seed `seed · 1009 + r` (`Distributed.shard_seed`), and the shards are gathered in rank order,
so every process ends with the whole draw, the same on all of them. The draw is deterministic in
(seed, step, N); it differs from one process's draw at the same seed (each shard has its own
seed), which is why `num_processes` is part of a run's identity. Alone, the draw is `sample` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel

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
    start, end = dist.bounds(len(prompts))
    mine = (
        sample(model, ctx, prompts[start:end], n, max_new_tokens, temperature, dist.shard_seed(seed))
        if end > start
        else []
    )
    return [group for shard in dist.gather(mine) for group in shard]
