"""Training on several processes: which process this is, its share of a batch, and the collectives
the loop needs (gradient sum, scalar sums, gathering Python objects).

Data parallel, by explicit all-reduce: every process holds the whole model, draws the same global
batch from the same seeded stream, and trains on its own contiguous block of the batch's rows,
weighted by that block's share of the rows (`share`), exactly as `grad_accum` weighs its
micro-batches. The weighted gradients are summed across processes (`all_reduce_grads`), so every
process takes the same optimizer step and the weights stay equal without ever being broadcast.
N processes therefore compute what one process computes with `grad_accum: N` (the same row blocks,
the same weights), up to the order of the floating-point sum.

Sharded (`sharding`, strategy fsdp/zero2/zero3, trainers/fsdp.py; or DeepSpeed's ZeRO for an accelerate
DEEPSPEED config, trainers/deepspeed_zero.py): the processes hold shards of the model, its gradients or its
optimizer state, and the sharding engine sums the same weighted gradients itself, so `all_reduce_grads` does
nothing; everything else here (shares, seeds, metric sums, gathers) is the same.

With one process (`SINGLE`) nothing here is called by the loop: its computation is unchanged.
Processes are started by torchrun or `accelerate launch` (harness/app/stages/train_launch.py),
which set RANK, WORLD_SIZE and MASTER_ADDR/PORT; `from_environment` joins the process group
(gloo on a CPU, NCCL on CUDA GPUs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from plasticity_bench.harness.core.memory import sharded_at_rest

# A sampling draw seeded s is made by N processes as N shards; shard r is seeded s·SHARD_STRIDE + r,
# so shards never share a seed with each other (r < SHARD_STRIDE) and one process keeps the seed s.
SHARD_STRIDE = 1009


@dataclass(frozen=True)
class Sharding:
    """How the processes shard the model. With FSDP2 (trainers/fsdp.py) each decoder layer, then the
    root, gets `fully_shard`. `reshard_after_forward`: free each layer's gathered weights after its
    forward pass (FULL_SHARD, ZeRO-3) or keep them until its backward pass (SHARD_GRAD_OP, ZeRO-2)."""

    reshard_after_forward: bool = True
    layers: tuple[str, ...] = ()  # class names of the modules sharded one by one; (): the model's _no_split_modules
    strategy: str = "fsdp"  # the run's `strategy` that chose this (run.json)
    # who shards: torch's FSDP2 (trainers/fsdp.py) or DeepSpeed's ZeRO, stage 2 or 3, when an accelerate
    # config asks for DEEPSPEED (trainers/deepspeed_zero.py; reshard_after_forward and layers unused)
    engine: str = "fsdp2"
    zero_stage: int = 0

    @property
    def by_deepspeed(self) -> bool:
        return self.engine == "deepspeed"

    @property
    def at_rest(self) -> bool:
        """Whether the weights stay split between steps (a whole copy samples: trainers/sharded.py)."""
        return sharded_at_rest(self.strategy, self.engine)


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes (rank 0 of 1 when training alone)."""

    rank: int = 0
    world: int = 1
    sharding: Sharding | None = None  # None: every process holds the whole model

    @property
    def main(self) -> bool:
        """The process that writes the run folder (checkpoints, training state, logs)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def bounds(self, rows: int) -> tuple[int, int]:
        """This process's contiguous block of `rows` (the same rounding as trainers/common.py's `micro_batches`)."""
        return round(rows * self.rank / self.world), round(rows * (self.rank + 1) / self.world)

    def share(self, batch: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """This process's rows of `batch` and their share of the batch; scalars go to every process unchanged."""
        rows = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
        start, end = self.bounds(rows)
        part = {k: v[start:end] if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in batch.items()}
        return part, (end - start) / rows

    def shard_seed(self, seed: int) -> int:
        """The seed of this process's shard of a draw seeded `seed` (`seed` itself when alone)."""
        return seed if not self.active else seed * SHARD_STRIDE + self.rank

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the processes. A parameter no process has a gradient
        for keeps none (AdamW skips it, as one process would); where only some have one, the others count zeros.
        Sharded, FSDP's backward pass has already summed them (trainers/fsdp.py): nothing to do."""
        if not self.active or self.sharding is not None:
            return
        device = params[0].device if params else torch.device("cpu")
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        for param, anywhere in zip(params, present.tolist()):
            if anywhere:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)

    def all_reduce_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over the processes, in place (PCR's gradient moments)."""
        if self.active:
            for tensor in tensors:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def sum_values(self, values: dict[str, float]) -> dict[str, float]:
        """Each metric summed over the processes (in float64; every process must pass the same keys)."""
        if not self.active:
            return values
        keys = sorted(values)
        total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return dict(zip(keys, total.tolist()))

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order, on every process."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        """The main process's `value`, on every process (the others wait for it)."""
        if not self.active:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = Distributed()


def from_environment(cuda: bool, sharding: Sharding | None = None) -> Distributed:
    """Join the process group the launcher described in the environment (RANK, WORLD_SIZE, ...);
    SINGLE when no launcher started this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), sharding)


def close(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()
