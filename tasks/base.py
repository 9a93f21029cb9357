"""What a task is: a seeded generator of items (``harness.core.items.Item``) plus a scorer of model
outputs.

A *family* groups tasks for reporting (in-domain math, out-of-domain reasoning, program
synthesis).
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.core.registry import Registry


class Candidate(NamedTuple):
    """One generated item before it has an id: what `Task.make` returns."""

    prompt: str
    target: str  # a reference completion
    answer: str  # the final answer the scorer checks
    meta: dict[str, Any]


@dataclass(frozen=True)
class Score:
    score: float  # the task scorer's value in [0, 1] (partial credit where the scorer gives it)
    correct: bool  # exact success; what accuracies are computed from
    outcome: str = ""  # e.g. "wrong_answer", "timeout" for executed programs
    answer: str = ""  # what the scorer parsed out of the output (the program it ran); "" when nothing


class Task(ABC):
    """A family member. Subclasses set the class attributes and implement `make` and `score`."""

    name: ClassVar[str]
    family: ClassVar[str]
    levels: ClassVar[tuple[str, ...]] = ("easy",)
    max_new_tokens: ClassVar[int] = 32
    executes_programs: ClassVar[bool] = False  # scored by running the output in the sandbox (reliability applies)

    @abstractmethod
    def make(self, rng: random.Random, level: str, n: int) -> list[Candidate]:
        """Return n candidates; duplicates are fine."""

    @abstractmethod
    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        """Score each output against its item (batched, so program execution can run in parallel)."""

    def rectify(self, item: Item, output: str) -> str | None:
        """A minimal correction of a wrong output (SPoT's oracle), or None if the task has no oracle."""
        return None

    def check_work(self, item: Item, output: str) -> bool | None:
        """Whether the output's whole worked solution is right, not only its final answer (a
        process verifier, used for training rewards); None when the task cannot tell."""
        return None

    def items(self, level: str, n: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[Item]:
        """n distinct items at `level`, deterministic in `seed`, none of whose prompts is in `exclude`."""
        if level not in self.levels:
            raise ValueError(f"task {self.name} has no level {level!r} (levels: {self.levels})")
        rng = random.Random(f"{self.name}/{level}/{seed}")
        chosen: dict[str, Item] = {}
        for _attempt in range(50):
            for prompt, target, answer, meta in self.make(rng, level, 2 * (n - len(chosen)) + 8):
                if prompt in exclude or prompt in chosen:
                    continue
                item_id = f"{self.name}-{level}-{_short_hash(prompt)}"
                chosen[prompt] = Item(item_id, self.family, self.name, level, prompt, target, answer, meta)
                if len(chosen) == n:
                    return list(chosen.values())
        raise ValueError(f"task {self.name}/{level}: only {len(chosen)} distinct items exist, {n} asked")


TASKS: Registry[type[Task]] = Registry("task")


def get_task(name: str) -> Task:
    """The registered task called `name` (an unknown name raises BenchError listing the known ones)."""
    return TASKS.get(name)()


def content_hash(items: Sequence[Item]) -> str:
    """sha256 of the canonical JSON of the items: the evaluation set's identity."""
    blob = json.dumps([item.to_dict() for item in items], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]
