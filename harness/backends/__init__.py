"""Generation backends. Importing this package registers each one in BACKENDS."""

from harness.backends import hf, vllm_backend  # noqa: F401  (registration side effect; vllm itself loads lazily)
from harness.backends.base import BACKENDS, BackendPool, GenerationBackend, SamplingParams

__all__ = ["BACKENDS", "BackendPool", "GenerationBackend", "SamplingParams"]
