"""The generation interface every backend implements, and what each one declares it can do.

A backend holds one model at a time; `load` swaps in another checkpoint, so a backend that is
expensive to start (vLLM) can be built once per run and reused across every checkpoint.

Callers ask a backend what it can do (`capabilities`, `install_problem`, `model_problem`,
`predicted_cpu_seconds`) instead of testing its name or type: `auto` (auto.py), the rollout
sampler (trainers/rollouts.py) and the lm-eval adapter all work from these declarations, so a new
backend is one file plus its registration (and, for `auto` on a CPU, its measured rates in
cpu_rates.json).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from plasticity_bench.harness.backends import cost
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.registry import Registry


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond `load` and `generate`."""

    loglikelihoods: bool = False  # log P(continuation | context): lm-eval's log-likelihood tasks
    policy_in_memory: bool = False  # generates with a model object already in memory (training's policy), no copy
    policy_sync: bool = (
        False  # a separate engine kept in sync with a training policy (its weights written and swapped in)
    )
    gpu_serving: bool = (
        False  # a batched serving engine (paged attention, CUDA graphs): what `auto` picks on a CUDA GPU
    )


class GenerationBackend(ABC):
    name: ClassVar[str]  # set by BACKENDS.register
    capabilities: ClassVar[Capabilities] = Capabilities()
    engines_started: int = 0  # serving engines (worker processes) this object started; 0 for in-process backends

    @classmethod
    def install_problem(cls) -> str | None:
        """Why this backend cannot be used on this machine at all (None: it can). Must be cheap."""
        return None

    @classmethod
    def model_problem(cls, config: dict[str, Any], on_gpu: bool) -> str | None:
        """Why this backend cannot run a model with this config.json (None: it can)."""
        return None

    @classmethod
    def predicted_cpu_seconds(cls, parameters: int, new_tokens: int, engine_running: bool) -> float | None:
        """Predicted time to generate `new_tokens` on a CPU (None: never measured, so not predicted)."""
        if not cost.has_cpu_rates(cls.name):
            return None
        start = 0.0 if engine_running else cost.engine_start_seconds(cls.name)
        return start + new_tokens / cost.cpu_tokens_per_second(parameters)[cls.name]

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any) -> GenerationBackend:
        """A backend generating with a model already in memory (capabilities.policy_in_memory)."""
        raise BenchError(f"backend {cls.name!r} cannot generate with a model held in memory")

    @abstractmethod
    def load(self, model_dir: Path) -> None:
        """Make `model_dir` (a Hugging Face model folder) the model that generates."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """params.n completions per prompt (prompt text excluded, stop text and EOS removed)."""

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Per (context, continuation): log P(continuation | context) and whether greedy decoding
        would produce the continuation. Only where capabilities.loglikelihoods."""
        raise BenchError(f"backend {self.name!r} cannot score log-likelihoods")

    def close(self) -> None:  # noqa: B027  (optional hook: in-process backends have nothing to release)
        """Release the model (engines with worker processes override this)."""

    def sleep(self) -> None:  # noqa: B027  (optional hook: only an engine holding device memory frees some)
        """Free device memory while a trainer on the same device updates the policy; the next load
        or generation undoes it."""

    def engine_settings(self) -> dict[str, Any]:
        """The settings a started engine reports it runs with, for run.json ({}: no engine)."""
        return {}


BACKENDS: Registry[type[GenerationBackend]] = Registry("backend")


def backends_with(capability: str) -> list[type[GenerationBackend]]:
    """Registered backends that declare `capability` (a field of Capabilities) and are installed."""
    return [
        entry.obj
        for entry in BACKENDS
        if getattr(entry.obj.capabilities, capability) and entry.obj.install_problem() is None
    ]


class BackendPool:
    """One backend object per name for a whole run, so training's rollouts and the generate
    stage share one vLLM engine instead of starting two; closed when the run ends."""

    def __init__(self, settings: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.opened: dict[str, GenerationBackend] = {}
        # per backend name, its constructor's keyword arguments (a run's `vllm:` settings)
        self.settings = dict(settings or {})

    def get(self, name: str) -> GenerationBackend:
        if name not in self.opened:
            self.opened[name] = BACKENDS.get(name)(**self.settings.get(name, {}))
        return self.opened[name]

    def running_engines(self) -> frozenset[str]:
        """The backends that have started an engine in this run (e.g. for training's rollouts)."""
        return frozenset(name for name, backend in self.opened.items() if backend.engines_started > 0)

    def close(self) -> None:
        for backend in self.opened.values():
            backend.close()
        self.opened.clear()

    def __enter__(self) -> BackendPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def encode_context_continuation(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, split as lm-eval's own models do: trailing spaces
    of the context move to the continuation, the whole text is encoded once and cut where the
    context's encoding ends (so a merge across the boundary is not split into rarer tokens)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:  # nothing to condition on: start from BOS (or EOS), as lm-eval does
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    cut = len(tokenizer.encode(context, add_special_tokens=False))
    return whole[:cut], whole[cut:]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s in text), default=len(text))
    return text[:cut]
