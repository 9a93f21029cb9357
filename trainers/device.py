"""Where and in what precision a trainer computes: the accelerator when there is one.

On a CUDA GPU the model trains there, with bf16 autocast where the GPU supports it (Ampere and
later; fp16 autocast is not used: it needs loss scaling) and fp32 master weights, so AdamW's
state and the saved checkpoints stay fp32. On a CPU everything is fp32 and nothing is moved or
cast, so placement leaves a CPU run's results exactly what the trainers compute. `device: cpu`
in the run config forces the CPU.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from plasticity_bench.harness.core.errors import BenchError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    autocast_dtype: torch.dtype | None  # None: full fp32

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward passes' precision (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.autocast_dtype)

    def describe(self) -> str:
        precision = {torch.bfloat16: "bf16 autocast", None: "fp32"}.get(self.autocast_dtype, str(self.autocast_dtype))
        return f"{self.device} ({precision}, fp32 weights)"


def choose_placement(
    requested: str = "auto", cuda_available: bool | None = None, bf16_supported: bool | None = None
) -> Placement:
    """The device and precision for training. `cuda_available`/`bf16_supported` default to what
    torch reports; tests pass them to check the rule on a CPU."""
    if requested not in DEVICES:
        raise BenchError(f"unknown device {requested!r}; known: {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested == "cuda" and not cuda:
        raise BenchError("device cuda was asked for but no CUDA GPU is visible to torch; use device: auto or cpu")
    if requested == "cpu" or not cuda:
        return Placement("cpu", None)
    bf16 = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
    return Placement("cuda", torch.bfloat16 if bf16 else None)


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """A batch's tensors on `device` (a no-op on the CPU: tensors are made there)."""
    if device == "cpu":
        return batch
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
