"""The generation interface every backend implements (transformers now; vLLM next).

A backend holds one model at a time; `load` swaps in another checkpoint, so a backend that is
expensive to start (vLLM) can be built once per run and reused across every checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

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

    @abstractmethod
    def load(self, model_dir: Path) -> None:
        """Make `model_dir` (a Hugging Face model folder) the model that generates."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """params.n completions per prompt (prompt text excluded, stop text and EOS removed)."""

    def close(self) -> None:
        """Release the model (engines with worker processes override this)."""


BACKENDS: Registry[type[GenerationBackend]] = Registry("backend")


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s in text), default=len(text))
    return text[:cut]
