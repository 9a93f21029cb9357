"""`task`: a generator task (tasks/) scores its own items: the micro suite's scorers."""

from __future__ import annotations

from collections.abc import Sequence

from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score, get_task
from plasticity_bench.tasks.scorers.base import SCORERS, Scorer


@SCORERS.register("task", "the generator task's own scorer (items of `kind: generator` sources)")
class TaskScorer(Scorer):
    needs = frozenset({"generator_task"})

    def check(self, item: Item, output: str) -> Score:
        return get_task(item.task).score([item], [output])[0]

    def check_items(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        """Each task scores its own items in one batch (its programs run in parallel)."""
        by_task: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_task.setdefault(item.task, []).append(index)
        scores: list[Score | None] = [None] * len(items)
        for task, indices in by_task.items():
            for index, value in zip(
                indices, get_task(task).score([items[i] for i in indices], [outputs[i] for i in indices])
            ):
                scores[index] = value
        return [s for s in scores if s is not None]
