"""`kind: generator`: a registered task (tasks/) generates items, seeded (the micro suite)."""

from __future__ import annotations

import random
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import TASKS, get_task
from plasticity_bench.tasks.sources import SOURCES, Source


@SOURCES.register("generator", "a registered task's seeded generator: task, level, n")
class Generator(Source):
    required = ("task", "level")
    default_scorer = "task"
    provides = frozenset({"answer", "generator_task"})
    generated_per_seed = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        task = self.options["task"]
        if task not in TASKS:
            raise BenchError(f"{self.where}: unknown generator task {task!r}; known: {', '.join(TASKS.names())}")
        if self.options["level"] not in get_task(task).levels:
            raise BenchError(
                f"{self.where}: task {task} has no level {self.options['level']!r}; "
                f"levels: {', '.join(get_task(task).levels)}"
            )

    @property
    def task(self) -> str:
        return str(self.options["task"])

    @property
    def level(self) -> str:
        return str(self.options["level"])

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        # The task's own family and ids: a generated set is exactly what `Task.items` makes, so its
        # items' hashes (recorded in run.json) depend on the task, level, n and seed alone.
        return get_task(self.task).items(self.level, int(self.options.get("n", 200)), seed)

    def eval_items(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        return self.load(name, split, family, seed)

    def train_items(self, name: str, split: str, family: str, seed: int, n: int, exclude: frozenset[str]) -> list[Item]:
        """n fresh items (repeats allowed) from the run's seed, never an evaluation prompt."""
        task = get_task(self.task)
        rng = random.Random(f"train/{self.task}/{self.level}/{seed}")
        out: list[Item] = []
        while len(out) < n:
            for prompt, target, answer, meta in task.make(rng, self.level, n - len(out)):
                if prompt not in exclude:
                    out.append(
                        Item(
                            f"train-{self.task}-{self.level}-{len(out)}",
                            task.family,
                            self.task,
                            self.level,
                            prompt,
                            target,
                            answer,
                            meta,
                        )
                    )
        return out[:n]

    def max_new_tokens(self) -> int:
        return get_task(self.task).max_new_tokens

    def set_name(self) -> tuple[str, str]:
        return self.task, self.level
