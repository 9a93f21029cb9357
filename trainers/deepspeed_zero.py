"""Sharded training with DeepSpeed's ZeRO (stage 2 or 3), for runs whose accelerate config says
`distributed_type: DEEPSPEED` (harness/app/sharding.py, docs/scale.md). `strategy: zero2|zero3` without
such a config is the same sharding done by torch's FSDP2 instead (trainers/fsdp.py).

The loop stays bench's own (trainers/common.py): each stage's fresh AdamW is handed, with the model, to
`deepspeed.initialize`, and the engine stands in for the optimizer (`ZeroOptimizer`). ZeRO-2 splits the
gradients and AdamW's state over the processes and keeps the weights whole on each; ZeRO-3 splits the
weights too, when the engine is made (the model is loaded whole first, and `setup` ran on it whole). A later
stage destroys the engine and makes a new one with its own fresh AdamW on the same (partitioned) model.

The gradient is the one the explicit all-reduce of the data-parallel path gives: each process's loss is
already weighted by its share of the batch's rows, and DeepSpeed *averages* the processes' gradients, so
the loss is multiplied by the number of processes before `engine.backward` (the average of N·gᵢ is Σ gᵢ).
DeepSpeed clips the whole gradient's norm itself (its `gradient_clipping`, set to the run's `grad_clip`).

Checkpoints stay ordinary: the weights are gathered whole for the main process (ZeRO-3: DeepSpeed's own
consolidation, as accelerate's `get_state_dict` does), and every process's ZeRO optimizer partition is
gathered to the main process and saved as a list in rank order; resuming hands the list back to the new
engine's optimizer, which takes its own partition (ZeRO's format: resume with the same processes and stage).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as torch_dist

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.trainers.distributed import Distributed


def engine_config(stage: int, rows_per_process: int, grad_clip: float) -> dict[str, Any]:
    """The DeepSpeed config bench's loop needs: one backward per optimizer step (the loop weighs its own
    micro-batches), the run's clipping, no precision of DeepSpeed's own (the run's autocast decides)."""
    return {
        "train_micro_batch_size_per_gpu": max(1, rows_per_process),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
        "zero_allow_untested_optimizer": True,  # torch's AdamW, as the other paths use
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**62,  # DeepSpeed's own progress lines: never
    }


def every_process_whole_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, whole tensor) of every parameter, one at a time, on every process (all must iterate it: ZeRO-3
    gathers each parameter's partitions in turn and partitions it again after; ZeRO-2's are whole already)."""
    import deepspeed

    for name, parameter in model.named_parameters():
        with deepspeed.zero.GatheredParameters([parameter], modifier_rank=None):
            yield name, parameter.data


# the two entries of a ZeRO optimizer state that are DeepSpeed objects, not tensors and plain values: training
# states are loaded with torch.load(weights_only=True), so they are saved as plain values and made again on load
STAGE, SCALER = "zero_stage", "loss_scaler"


def plain(partition: dict[str, Any]) -> dict[str, Any]:
    """A ZeRO optimizer partition with only tensors and plain values (the stage as its number, no loss scaler)."""
    return {**partition, STAGE: int(partition[STAGE]), SCALER: None}


class ZeroOptimizer:
    """A DeepSpeed engine in the place of the stage's optimizer: the loop sets its learning rate, steps it,
    saves and loads its state as it does AdamW's; `backward` replaces `loss.backward()`."""

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, dist: Distributed, config: dict
    ) -> None:
        import deepspeed

        self.dist = dist
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.engine.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing: the engine clears the gradients after each step."""

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss * self.dist.world, scale_wrt_gas=False)  # DeepSpeed averages; ×N makes it the sum

    def step(self) -> None:
        self.engine.step()

    def state_dict(self) -> list[Any] | None:
        """Every process's ZeRO partition, in rank order, on the main process (None on the others);
        every process must call it."""
        gathered: list[Any] | None = [None] * self.dist.world if self.dist.main else None
        torch_dist.gather_object(plain(self.engine.optimizer.state_dict()), gathered, dst=0)
        return gathered

    def load_state_dict(self, partitions: list[Any]) -> None:
        """The partitions `state_dict` saved (ZeRO takes this process's own from the list)."""
        if len(partitions) != self.dist.world:
            raise BenchError(
                f"this training state holds the ZeRO optimizer partitions of {len(partitions)} processes, "
                f"not {self.dist.world}: resume it with num_processes {len(partitions)}"
            )
        from deepspeed.runtime.zero.config import ZeroStageEnum

        scaler = self.engine.optimizer.loss_scaler  # static, 1.0: DeepSpeed's own fp16/bf16 is not used
        restored = [{**p, STAGE: ZeroStageEnum(p[STAGE]), SCALER: scaler} for p in partitions]
        self.engine.optimizer.load_state_dict(restored, load_optimizer_states=True, load_from_fp32_weights=True)

    def whole_weights(self) -> dict[str, torch.Tensor] | None:
        """ZeRO-3: the weights gathered whole for the main process (None on the others); every process
        must call it. ZeRO-2 keeps them whole in the model: None (the checkpoint saves its state dict)."""
        if self.engine.zero_optimization_stage() < 3:
            return None
        weights = self.engine._zero3_consolidated_16bit_state_dict()  # what accelerate's get_state_dict calls
        return dict(weights) if self.dist.main else None

    def close(self) -> None:
        """Remove the engine's hooks from the model (a later stage makes a new engine on it)."""
        self.engine.destroy()
