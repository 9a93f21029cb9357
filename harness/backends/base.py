"""The generation interface every backend implements (transformers now; vLLM next).

A backend holds one model at a time; `load` swaps in another checkpoint, so a backend that is
expensive to start (vLLM) can be built once per run and reused across every checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

from harness.errors import BenchError
from harness.registry import Registry


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()


class GenerationBackend(ABC):
    name: ClassVar[str]
    engines_started: int = 0  # serving engines (worker processes) this object started; 0 for in-process backends

    @abstractmethod
    def load(self, model_dir: Path) -> None:
        """Make `model_dir` (a Hugging Face model folder) the model that generates."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """params.n completions per prompt (prompt text excluded, stop text and EOS removed)."""

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Per (context, continuation): log P(continuation | context) and whether greedy decoding
        would produce the continuation. Optional: used by lm-eval's log-likelihood tasks."""
        raise BenchError(f"backend {self.name!r} cannot score log-likelihoods")

    def close(self) -> None:
        """Release the model (engines with worker processes override this)."""


BACKENDS: Registry[type[GenerationBackend]] = Registry("backend")


class BackendPool:
    """One backend object per name for a whole run, so training's rollouts and the generate
    stage share one vLLM engine instead of starting two; closed when the run ends."""

    def __init__(self) -> None:
        self.opened: dict[str, GenerationBackend] = {}

    def get(self, name: str) -> GenerationBackend:
        if name not in self.opened:
            self.opened[name] = BACKENDS.get(name)()
        return self.opened[name]

    def engine_running(self, name: str) -> bool:
        """Whether `name`'s backend has started an engine in this run (e.g. for training's rollouts)."""
        return name in self.opened and self.opened[name].engines_started > 0

    def close(self) -> None:
        for backend in self.opened.values():
            backend.close()
        self.opened.clear()

    def __enter__(self) -> "BackendPool":
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
