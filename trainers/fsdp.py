"""Sharded training with torch's own FSDP2 (`torch.distributed.fsdp.fully_shard`), for runs whose
`strategy` is fsdp, zero2 or zero3 (trainers/distributed.py `Sharding`, docs/scale.md).

The training loop (trainers/common.py) shards the model when training starts, after the method's
`setup` ran on the whole model and a resumed run's weights were loaded: whatever `setup` builds
from the starting model (π_ref, preference pairs sampled from it) stays whole on every process.
Each decoder layer, then the root, gets `fully_shard` over all the processes; parameters become
DTensors sharded along their first dimension, and AdamW keeps its moments for this process's shard.

The gradient is the one the explicit all-reduce of the data-parallel path gives: each process's loss
is already weighted by its share of the batch's rows, so FSDP must SUM the processes' gradients, not
average them (its default); a divide factor of 1 with sum-only collectives does that on gloo and
NCCL alike. Gradient clipping sees DTensor gradients and computes the norm of the whole gradient.

Checkpoints stay ordinary: every process takes part in gathering the full weights and the full
optimizer state (torch.distributed.checkpoint.state_dict, full_state_dict), and the main process
writes them in the run-folder format; resuming loads the full optimizer state back into the shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.trainers.distributed import Distributed, Sharding

# what a checkpoint's training state records of a sharded run (its optimizer state is keyed by parameter name)
STATE_KEY = "sharding"
ENGINE_KEY = "sharding_engine"
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def layer_names(model: torch.nn.Module, sharding: Sharding) -> tuple[str, ...]:
    """The class names of the modules sharded one by one: the configured ones, else the model's decoder layer."""
    return sharding.layers or tuple(getattr(model, "_no_split_modules", None) or ())


def shard(model: torch.nn.Module, dist: Distributed, device: str) -> None:
    """`fully_shard` each decoder layer, then the root, over all the processes; gradients summed."""
    sharding = dist.sharding
    assert sharding is not None, "shard() is for sharded runs"
    names = layer_names(model, sharding)
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise BenchError(
            f"FSDP: the model has no module of class {', '.join(names) or '(none named)'} to shard layer by layer; "
            "name its decoder layer in the accelerate config's fsdp_transformer_layer_cls_to_wrap"
        )
    mesh = init_device_mesh(device, (dist.world,))
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=sharding.reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=sharding.reshard_after_forward)
    for module in model.modules():
        if isinstance(module, FSDPModule):  # a sum, as the explicit all-reduce makes it, with gloo's ops only
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state, keyed by parameter name, on the main process ({} on the others);
    every process must call it (it gathers the shards)."""
    return dict(get_optimizer_state_dict(model, optimizer, options=FULL))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Each process's shards of a whole optimizer state that `optimizer_state` saved."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def state_marker(dist: Distributed) -> dict[str, Any]:
    """What a sharded run's checkpoint state adds (nothing for whole models: their states stay as they were):
    the strategy, and the engine when it is DeepSpeed (its optimizer state is ZeRO's partitions)."""
    if dist.sharding is None:
        return {}
    return {STATE_KEY: dist.sharding.strategy, **({ENGINE_KEY: "deepspeed"} if dist.sharding.by_deepspeed else {})}


def check_resumable(state: dict[str, Any], dist: Distributed) -> None:
    """A training state resumes as it was saved: whole, sharded by FSDP2 or by DeepSpeed (their optimizer
    states differ)."""

    def how(engine: str | None) -> str:
        return {None: "with whole models", "fsdp2": "sharded (FSDP)", "deepspeed": "sharded (DeepSpeed ZeRO)"}[engine]

    saved = state.get(ENGINE_KEY, "fsdp2") if STATE_KEY in state else None
    now = dist.sharding.engine if dist.sharding is not None else None
    if saved != now:
        raise BenchError(
            f"this training state was saved by processes training {how(saved)}, not {how(now)}: resume it that way"
        )


def tied(model: torch.nn.Module, weights: dict[str, Any]) -> dict[str, Any]:
    """`weights` with the names of one parameter (tied input and output embeddings) on one tensor again, as in
    the model's own state dict: `save_pretrained` then writes the tied weight once, as it does for a whole model."""
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first and name in weights:
            weights[name] = weights[first[id(param)]]
        first.setdefault(id(param), name)
    return weights


def whole_weights(model: Any, dist: Distributed) -> dict[str, Any] | None:
    """The weights a checkpoint saves when the model in memory is sharded: every process takes part in
    gathering them and the main one gets them whole (tied names on one tensor), the others None.
    None for a whole model: the checkpoint then saves the model's own state dict."""
    if dist.sharding is None or dist.sharding.by_deepspeed:
        return None
    weights = get_model_state_dict(model, options=FULL)
    return tied(model, weights) if dist.main else None


def every_process_whole_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, whole tensor) of every parameter, one at a time, on every process (all must iterate it: each
    parameter is gathered in turn, so at most one parameter's whole copy is in flight)."""
    for name, parameter in model.named_parameters():
        yield name, parameter.full_tensor() if isinstance(parameter, DTensor) else parameter
