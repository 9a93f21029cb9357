"""Generation backends. Importing this package registers each one in BACKENDS."""

from plasticity_bench.harness.backends import hf, vllm_backend  # noqa: F401  (registration side effect; vllm itself loads lazily)
from plasticity_bench.harness.backends.base import (
    BACKENDS,
    BackendPool,
    Capabilities,
    GenerationBackend,
    SamplingParams,
    backends_with,
)

__all__ = ["BACKENDS", "BackendPool", "Capabilities", "GenerationBackend", "SamplingParams", "backends_with"]
