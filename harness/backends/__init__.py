"""Generation backends. Importing this package registers each one in BACKENDS."""

from harness.backends import hf  # noqa: F401  (registration side effect)
from harness.backends.base import BACKENDS, GenerationBackend, SamplingParams

__all__ = ["BACKENDS", "GenerationBackend", "SamplingParams"]
