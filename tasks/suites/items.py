"""A suite's items: the explicit step after parsing (tasks/suites/__init__.py loads no data).

`load_eval_items(suite, per_slice)` reads every evaluation set (data files, hub datasets, lm-eval
tasks) and returns the items together with the optional sets it skipped; what a run has items of
is known only then. Training items never repeat an evaluation prompt, so the functions that make
them take the evaluation prompts (`EvalItems.prompts`) from the caller.

Nothing here is cached: a command loads its suite's items once and passes them on, so a data file
edited between two commands (or two loads in one process) is always read as it is now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.suites import EvalSet, Suite, TrainSet


@dataclass(frozen=True)
class EvalItems:
    """A suite's evaluation items as loaded here and now."""

    suite: Suite
    items: tuple[Item, ...]  # set by set; the first `per_slice` of each where the load asked for fewer
    skipped: Mapping[str, str]  # slice → why an optional set has no items here
    prompts: frozenset[str]  # every evaluation prompt of the whole sets: what no training item may be
    probes: tuple[Item, ...] = ()  # the few-shot recovery probe's items (tasks/suites/few_shot.py), set by set

    @property
    def available_sets(self) -> list[EvalSet]:
        return [s for s in self.suite.eval_sets if s.slice not in self.skipped]

    def summary(self) -> dict:
        """The suite as run.json records it (`Suite.to_summary`), without the sets skipped here."""
        return self.suite.to_summary(self.skipped)


def load_eval_items(suite: Suite, per_slice: int | None = None) -> EvalItems:
    """The suite's evaluation items, set by set; `per_slice` keeps the first n of each (smoke runs).
    An optional set whose data is not available is skipped (`EvalItems.skipped`); any other
    problem, or no target set with items, is a one-line BenchError."""
    from plasticity_bench.tasks.suites.compat import check_items

    per_set: list[list[Item]] = []
    skipped: dict[str, str] = {}
    for eval_set in suite.eval_sets:
        try:
            per_set.append(eval_set.source.eval_items(eval_set.name, eval_set.split, eval_set.family, suite.eval_seed))
        except BenchError as error:
            if not eval_set.optional:
                raise
            skipped[eval_set.slice] = str(error)
            per_set.append([])
        check_items(eval_set.scorer, per_set[-1], f"{eval_set.source.where} ({eval_set.slice})")  # before generation
    if all(eval_set.slice in skipped for eval_set in suite.target_sets):
        why = "; ".join(skipped.values())
        raise BenchError(f"suite {suite.name}: none of its target sets is available here ({why})")
    items = tuple(item for set_items in per_set for item in set_items[: per_slice or len(set_items)])
    prompts = frozenset(item.prompt for set_items in per_set for item in set_items)
    return EvalItems(suite, items, skipped, prompts, probe_items_of(suite, per_set, per_slice, prompts))


def probe_items_of(
    suite: Suite, per_set: list[list[Item]], per_slice: int | None, prompts: frozenset[str]
) -> tuple[Item, ...]:
    """The few-shot probe's items of every set that declares `few_shot` (tasks/suites/few_shot.py)."""
    from plasticity_bench.tasks.suites.few_shot import probe_items

    return tuple(
        item
        for eval_set, set_items in zip(suite.eval_sets, per_set)
        if eval_set.few_shot and set_items
        for item in probe_items(eval_set, set_items[: per_slice or len(set_items)], set_items, suite.eval_seed, prompts)
    )


def training_items(suite: Suite, train: TrainSet, n: int, seed: int, exclude: frozenset[str]) -> list[Item]:
    """Items of one training set (n of them for generated sources; a file's rows, up to n, otherwise),
    never a prompt of `exclude` (the suite's evaluation prompts), each with its scorer named in meta."""
    from plasticity_bench.tasks.suites.compat import check_items

    family = suite.target_sets[0].family if suite.target_sets else ""
    items = train.source.train_items(train.name, train.split, family, seed, n, exclude)
    if train.difficulty:
        field_name, threshold, side = train.difficulty
        missing = [item.id for item in items if not isinstance(item.meta.get(field_name), (int, float))]
        if missing:
            raise BenchError(
                f"suite {suite.path.name}, train: item {missing[0]} has no numeric meta field "
                f"{field_name!r} (list it under the source's `meta`)"
            )
        items = [item for item in items if (item.meta[field_name] <= threshold) == (side == "easy")]
        if not items:
            raise BenchError(
                f"suite {suite.path.name}, train: no {side} items (difficulty {field_name} "
                f"{'<=' if side == 'easy' else '>'} {threshold})"
            )
    check_items(train.scorer, items[:n], train.source.where)
    if train.source.generated_per_seed:  # they carry their own verifier and budget (their task)
        return items[:n]
    return [_for_training(item, train) for item in items[:n]]


def _for_training(item: Item, train: TrainSet) -> Item:
    """The item with what trainers ask of it (tasks/verify.py): its verifier and sampling budget."""
    meta = {**item.meta, "scorer": train.scorer, "max_new_tokens": train.max_new_tokens}
    return Item(item.id, item.family, item.task, item.level, item.prompt, item.target, item.answer, meta)


def foundation_items(suite: Suite, n: int, seed: int, exclude: frozenset[str]) -> list[Item]:
    """About n items of the suite's `foundation:` mix, each (task, level) in proportion to its
    weight, drawn at `seed`, none of `exclude`: what the organism pre-trains on and what replay replays."""
    total = sum(weight for _, _, weight in suite.foundation)
    return [
        item
        for task, level, weight in suite.foundation
        for item in generator_items(suite, task, level, max(1, round(n * weight / total)), seed, exclude)
    ]


def generator_items(suite: Suite, task: str, level: str, n: int, seed: int, exclude: frozenset[str]) -> list[Item]:
    """n training items of a generator task (the organism's pre-training mix), none of `exclude`."""
    from plasticity_bench.tasks.sources.generator import Generator

    source = Generator({"task": task, "level": level}, f"suite {suite.name}, foundation", suite.path.parent)
    return source.train_items(task, level, "", seed, n, exclude)
