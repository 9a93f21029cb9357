"""What the RL and preference trainers ask of a training item, whatever made it: a verified
reward for an output (the whole worked solution checked where the task can), an oracle's
correction (SPoT), and a token budget for sampling.

Items of a generator task ask their task (the micro suite); items of a suite's data files ask the
scorer the suite names for that training set (`item.meta["scorer"]`), and the oracle is the
item's reference solution (its `target`). SPoT's paper used an LLM as the oracle, making minimal
edits to the model's own wrong answer; to plug one in, give `rectify` a function of
(item, wrong output) → corrected output, e.g. one calling an LLM API, and keep the check that the
correction scores as correct (trainers/spot.py does).
"""

from __future__ import annotations

from collections.abc import Sequence

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import TASKS, Score, Task, get_task
from plasticity_bench.tasks.scorers import get_scorer

DEFAULT_MAX_NEW_TOKENS = 512


def scorer_name(item: Item) -> str:
    return str(item.meta.get("scorer", "task"))


def reward_scores(items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
    """Each output scored by its item's verifier (thinking text removed first), batched per scorer."""
    by_scorer: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_scorer.setdefault(scorer_name(item), []).append(index)
    scores: list[Score | None] = [None] * len(items)
    for name, indices in by_scorer.items():
        for i, score in zip(
            indices, get_scorer(name).score_generations([items[i] for i in indices], [outputs[i] for i in indices])
        ):
            scores[i] = score
    return [s for s in scores if s is not None]


def generator_task(item: Item) -> Task | None:
    """The generator task an item asks (its own scorer is the task's), or None for a data-file item."""
    return get_task(item.task) if item.task in TASKS and scorer_name(item) == "task" else None


REWARD_KINDS = ("verified", "answer")  # the trainers' `reward` option


def check_reward_kind(kind: str) -> None:
    if kind not in REWARD_KINDS:
        raise BenchError(f"options.reward must be one of {', '.join(REWARD_KINDS)}, got {kind!r}")


def rewards(items: Sequence[Item], outputs: Sequence[str], kind: str = "verified") -> list[float]:
    """R(x, y) ∈ [0, 1] for the RL and preference trainers: the verifier's score, except that with
    kind "verified", for a task that can check the worked solution (`Task.check_work`), R = 1 when
    the final answer and every step are right and 0 otherwise ("answer": the score alone). On the
    organism an answer-only reward is a weak verifier: 43 % of the right final answers its starting
    model samples at T = 1 (32 % of its greedy ones) come from wrong steps, and rewarding those
    taught GRPO wrong arithmetic (BENCHMARKS §12)."""
    check_reward_kind(kind)
    values = []
    for item, output, score in zip(items, outputs, reward_scores(items, outputs)):
        task = generator_task(item) if kind == "verified" else None
        work = task.check_work(item, output) if task is not None else None
        values.append(score.score if work is None else float(score.correct and work))
    return values


def rectify(item: Item, output: str) -> str | None:
    """A correction of a wrong output: the generator task's minimal edit, or the reference solution."""
    task = generator_task(item)
    return task.rectify(item, output) if task is not None else item.target or None


def max_new_tokens(item: Item) -> int:
    task = generator_task(item)
    if task is not None:
        return task.max_new_tokens
    return int(item.meta.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
