"""The few-shot recovery probe: a set's own items again, each with k solved examples before it.

A suite's evaluation set may declare ``few_shot: k`` (and ``few_shot_items: m``, a cap on how many
of its items are probed). Every checkpoint then answers the first m items of the set twice: as
usual (zero-shot) and with k solved examples shown first. A drop that the examples undo is lost
*format* (the model still knows how, it forgot how the answer is asked for); a drop they do not
undo is lost *skill*. The probe's items are kept apart from the suite's items (their own files in
the run folder, `harness/evaluation/few_shot.py`), so no score, gate or claim of the suite changes.

The examples are drawn deterministically and never show the probed item itself:

* a set whose items a seed generates (`Source.generated_per_seed`): from `POOL_SIZE` fresh items
  of the same generator at the suite's `eval_seed`, none of them an evaluation prompt of the suite;
* any other set: from the set's own items (every item the set holds), the probed item left out.

Per probed item, k of the pool are picked with a generator seeded by the item's id and k, so the
examples are the same on every machine and for every method and seed, and they differ between
items (no one example decides the whole set). An example is shown as (user turn, solution): the
question as the set's `question_template` renders it, and the item's reference completion (its
`target`, or its gold `answer` where it has none); the prompt builder (tasks/prompting.py) puts
them before the question like the suite's own `fewshot` turns.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.prompting import ITEM_EXAMPLES, PromptFormat, question, render
from plasticity_bench.tasks.sources import Source

if TYPE_CHECKING:
    from plasticity_bench.tasks.suites import EvalSet, Suite

FEW_SHOT_KEY = ITEM_EXAMPLES  # item.meta of a probe item: the solved examples [[user, solution], ...] before it
POOL_SIZE = 64  # fresh items a generated set draws its examples from
PROBE_VERSION = 1  # how examples are drawn: part of a run's identity, raised when the draw changes


def parse_few_shot(raw: Mapping[str, Any], source: Source, where: str) -> tuple[int, int | None]:
    """A set's ``few_shot`` (k ≥ 0; 0: no probe) and ``few_shot_items`` (m ≥ 1 or None: every item)."""
    shots = raw.get("few_shot", 0)
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise BenchError(
            f"{where}: few_shot must be a whole number of solved examples >= 0 (0: no probe), got {shots!r}"
        )
    cap = raw.get("few_shot_items")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise BenchError(f"{where}: few_shot_items must be a whole number of items >= 1, got {cap!r}")
    if cap is not None and not shots:
        raise BenchError(f"{where}: few_shot_items caps the few-shot probe; set few_shot: K (K >= 1) too")
    if shots and source.runs_itself:
        raise BenchError(
            f"{where}: source kind {source.name} renders its own prompts (lm-eval's num_fewshot decides its examples); "
            "few_shot applies to sets whose prompts the suite renders"
        )
    return shots, cap


def probe_spec(suite: Suite) -> dict[str, Any]:
    """What defines the suite's probe (slice → shots and item cap, and the draw's version): part of a
    run's identity and run.json; {} for a suite without one."""
    sets = {s.slice: {"shots": s.few_shot, "items": s.few_shot_items} for s in suite.eval_sets if s.few_shot}
    return {"version": PROBE_VERSION, "sets": sets} if sets else {}


def probe_record(suite: Suite, probes: Sequence[Item]) -> dict[str, Any]:
    """run.json's `few_shot`: the probe's spec (`probe_spec`) and, per probed set, its items' count and
    content hash (examples included); {} without a probe."""
    from plasticity_bench.tasks.base import content_hash

    spec = probe_spec(suite)
    if not spec or not probes:
        return {}
    by_slice: dict[str, list[Item]] = {}
    for item in probes:
        by_slice.setdefault(item.slice, []).append(item)
    sets = {
        slice_: {**spec["sets"][slice_], "n": len(items), "sha256": content_hash(items)}
        for slice_, items in by_slice.items()
    }
    return {"few_shot": {"version": spec["version"], "sets": sets}}


def probe_items(
    eval_set: EvalSet, shown: Sequence[Item], whole: Sequence[Item], eval_seed: int, exclude: frozenset[str]
) -> list[Item]:
    """The probe's items of one set: the first `few_shot_items` of `shown` (the items the run scores),
    each with `eval_set.few_shot` solved examples in its meta. `whole`: every item of the set (the pool
    of a set that is not generated); `exclude`: the suite's evaluation prompts (never an example of a
    generated set). A pool too small for k examples besides the item is a one-line BenchError."""
    shots = eval_set.few_shot
    fmt = PromptFormat.from_mapping(eval_set.prompt)
    pool = example_pool(eval_set, whole, eval_seed, exclude)
    probed = list(shown[: eval_set.few_shot_items or len(shown)])
    made = []
    for item in probed:
        candidates = [example for example in pool if example.prompt != item.prompt]
        if len(candidates) < shots:
            raise BenchError(
                f"{eval_set.source.where} ({eval_set.slice}): few_shot: {shots} asks for {shots} solved examples "
                f"besides each item, but the set has only {len(candidates)} other items to draw them from; "
                f"lower few_shot to at most {len(candidates)}"
            )
        chosen = random.Random(f"few-shot/{item.id}/{shots}").sample(candidates, shots)
        examples = [[question(fmt, example), solution(example, eval_set)] for example in chosen]
        made.append(replace(item, meta={**item.meta, FEW_SHOT_KEY: examples}))
    return made


def probe_problems(suite: Suite, loaded: Sequence[Sequence[Item]], exclude: frozenset[str]) -> list[str]:
    """`bench suites --check`: why a set's probe cannot be made (`loaded`: each set's items, in order)."""
    problems = []
    for eval_set, items in zip(suite.eval_sets, loaded):
        if eval_set.few_shot and items:
            try:
                probe_items(eval_set, items, items, suite.eval_seed, exclude)
            except BenchError as error:
                problems.append(str(error))
    return problems


def example_pool(eval_set: EvalSet, whole: Sequence[Item], eval_seed: int, exclude: frozenset[str]) -> list[Item]:
    """The items a set's examples are drawn from, in a fixed order, each prompt once."""
    source = eval_set.source
    if source.generated_per_seed:
        made = source.train_items(eval_set.name, eval_set.split, eval_set.family, eval_seed, POOL_SIZE, exclude)
    else:
        made = list(whole)
    return list({item.prompt: item for item in made}.values())


def solution(item: Item, eval_set: EvalSet) -> str:
    """What an example shows as its answer: the reference completion, else the gold answer."""
    shown = item.target or item.answer
    if not shown:
        raise BenchError(
            f"{eval_set.source.where} ({eval_set.slice}): few_shot needs solved examples, but item {item.id} has "
            "neither a reference completion (target) nor a gold answer"
        )
    return shown


def with_solved_examples(
    items: Sequence[Item], share: float, max_shots: int, seed: int, fits: Callable[[str], bool]
) -> list[Item]:
    """A pre-training mix that teaches a model to learn in context: `share` of `items` (drawn at `seed`) each
    come after 1 to `max_shots` solved examples of their own task and level, shown as the probe shows them in
    raw text (`question + solution + "\\n\\n"` each); the rest stay as they are. Examples that would not
    fit (`fits(prompt + target)`: the model's context) are dropped, the first first."""
    rng = random.Random(f"in-context/{seed}")
    by_task: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        by_task.setdefault((item.task, item.level), []).append(item)
    raw = PromptFormat.from_mapping({"chat": False})

    def shown(item: Item, examples: list[list[str]]) -> str:
        return render(raw, replace(item, meta={ITEM_EXAMPLES: examples}), None)

    made = []
    for item in items:
        if rng.random() >= share:
            made.append(item)
            continue
        group = by_task[item.task, item.level]
        shots = rng.randint(1, max_shots)
        chosen = [example for example in rng.sample(group, min(shots + 1, len(group))) if example is not item]
        examples = [[example.prompt, example.target] for example in chosen[:shots]]
        while examples and not fits(shown(item, examples) + item.target):
            examples.pop(0)
        prompt = shown(item, examples)
        made.append(replace(item, prompt=prompt))
    return made
