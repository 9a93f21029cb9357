"""PCR's update on one fixed rollout batch, by one process and by two (gloo), for
tests/test_multiprocess.py: the two processes each take half of the groups and sum their gradient
moments before the projection, so both must reach the same update. Run as
`python -m tests.pcr_processes OUT_FOLDER`; writes one.pt and two.pt (metrics and weights)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def model() -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=32,
    )
    return Qwen3ForCausalLM(config)


def rollout(seed: int = 3) -> dict[str, torch.Tensor]:
    """4 groups of 2 completions whose two gradients conflict in both MLP blocks (seed 3)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (8, 6), generator=generator)
    labels = ids.clone()
    labels[:, :2] = -100
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "advantages": torch.randn(8, generator=generator),
        "ref_logp": -torch.rand(8, 5, generator=generator) * 3,
        "reward_mean": torch.tensor(0.5),
        "examples": torch.tensor(8),
    }


def update(rank: int, world: int, out: str, port: int) -> None:
    from plasticity_bench.trainers.common import LoopConfig, TrainContext
    from plasticity_bench.trainers.distributed import SINGLE, Distributed
    from plasticity_bench.trainers.pcr import PCR, PCROptions

    if world > 1:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
    policy = model().train()
    loop = LoopConfig(8, 0.0, 0.0, 0.0, 1.0, 0, 0)
    ctx = TrainContext(None, loop, dist=Distributed(rank, world) if world > 1 else SINGLE)  # type: ignore[arg-type]
    metrics = PCR(PCROptions(group_size=2, prompts_per_step=4)).update(
        policy, rollout(), torch.optim.AdamW(policy.parameters(), lr=1e-3), ctx
    )
    if rank == 0:
        torch.save({"metrics": metrics, "weights": policy.state_dict()}, out)
    if world > 1:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    update(0, 1, str(folder / "one.pt"), 0)
    mp.spawn(update, args=(2, str(folder / "two.pt"), free_port()), nprocs=2)
