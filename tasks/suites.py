"""Suites: which items are evaluated (fixed, seeded, held out) and which data trains.

The micro suite is the embedded default. Its evaluation sets are built once from `EVAL_SEED`;
every training set is drawn from other seeds with all evaluation prompts excluded, so no
evaluation item is ever trained on. Smoke runs evaluate a prefix of the same sets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

from tasks.base import Item, get_task


@dataclass(frozen=True)
class EvalSlice:
    task: str
    level: str
    n: int

    @property
    def name(self) -> str:
        return f"{self.task}/{self.level}"


@dataclass(frozen=True)
class Suite:
    name: str
    eval_slices: tuple[EvalSlice, ...]
    eval_seed: int
    foundation: tuple[tuple[str, str], ...]  # (task, level) pairs mixed uniformly in pre-training
    easy: tuple[str, str]  # post-training data by difficulty (RPS stage 1 / stage 2)
    hard: tuple[str, str]


MICRO = Suite(
    name="micro",
    eval_slices=(
        EvalSlice("chain_sum", "easy", 200),
        EvalSlice("chain_sum", "hard", 200),
        EvalSlice("reverse", "easy", 100),
        EvalSlice("sort_letters", "easy", 100),
        EvalSlice("affine", "easy", 100),
        EvalSlice("string_fn", "easy", 100),
    ),
    eval_seed=20261123,
    foundation=(("chain_sum", "easy"), ("reverse", "easy"), ("sort_letters", "easy"), ("affine", "easy"), ("string_fn", "easy")),
    easy=("chain_sum", "easy"),
    hard=("chain_sum", "hard"),
)
SUITES = {MICRO.name: MICRO}


@cache
def eval_items(suite: Suite, per_slice: int | None = None) -> tuple[Item, ...]:
    """The suite's evaluation items; `per_slice` keeps only the first n of each slice (smoke runs)."""
    items: list[Item] = []
    for spec in suite.eval_slices:
        full = get_task(spec.task).items(spec.level, spec.n, suite.eval_seed)
        items.extend(full[: per_slice or spec.n])
    return tuple(items)


@cache
def eval_prompts(suite: Suite) -> frozenset[str]:
    return frozenset(item.prompt for item in eval_items(suite))


def training_items(suite: Suite, task: str, level: str, n: int, seed: int) -> list[Item]:
    """n training items (repeats allowed), never an evaluation prompt of the suite."""
    exclude = eval_prompts(suite)
    rng = random.Random(f"train/{task}/{level}/{seed}")
    out: list[Item] = []
    while len(out) < n:
        for prompt, target, answer, meta in get_task(task).make(rng, level, n - len(out)):
            if prompt not in exclude:
                out.append(Item(f"train-{task}-{level}-{len(out)}", get_task(task).family, task, level, prompt, target, answer, meta))
    return out[:n]
