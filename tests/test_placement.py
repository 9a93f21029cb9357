"""Where training runs: the device/dtype rule, checked on a CPU by telling it what a GPU would report."""

from __future__ import annotations

import pytest
import torch

from harness.core.errors import BenchError
from trainers.device import Placement, choose_placement, to_device


def test_cpu_trains_in_fp32() -> None:
    assert choose_placement("auto", cuda_available=False) == Placement("cpu", None)
    assert choose_placement("cpu", cuda_available=True, bf16_supported=True) == Placement("cpu", None)
    assert choose_placement().device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_gpu_trains_there_in_bf16_where_supported() -> None:
    assert choose_placement("auto", cuda_available=True, bf16_supported=True) == Placement("cuda", torch.bfloat16)
    assert choose_placement("cuda", cuda_available=True, bf16_supported=False) == Placement("cuda", None)  # e.g. a V100: fp32
    assert "bf16" in Placement("cuda", torch.bfloat16).describe() and "fp32" in Placement("cpu", None).describe()


def test_bad_requests_are_clear_errors() -> None:
    with pytest.raises(BenchError, match="no CUDA GPU is visible"):
        choose_placement("cuda", cuda_available=False)
    with pytest.raises(BenchError, match="unknown device 'tpu'"):
        choose_placement("tpu")


def test_cpu_batches_stay_put_and_autocast_is_off() -> None:
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "examples": 4}
    assert to_device(batch, "cpu") is batch
    with Placement("cpu", None).autocast():
        assert not torch.is_autocast_enabled()
