"""What a scorer is: a named, batched judge of model outputs against items' gold answers.

A task built on a real benchmark picks its scorer by name (``get_scorer("math_verify")``); adding
a scorer is one module in this package with one class registered in SCORERS, plus its import in
``tasks/scorers/__init__.py``. The gold answer is ``item.answer``; a scorer may read extra data
from ``item.meta``.

A scorer implements **one item's check** (`Scorer.check`): the verdict on one output, with the
answer it parsed out of the output (``Score.answer``: the number, the chosen letter, the program
it ran; empty when nothing could be parsed), so a user debugging a score sees what was read. The
loop over a batch, the batch-size check and the removal of thinking text live here, once. A
scorer whose checks run together — programs in the sandbox (`ProgramScorer`), math-verify's
worker processes — overrides `check_items` instead, still one Score per item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.core.registry import Registry
from plasticity_bench.harness.sandbox import ExecutionResult, Job, run_programs
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.prompting import strip_thinking

# Outcomes the scorers in this package report (Score.outcome).
CORRECT = "correct"
WRONG_ANSWER = "wrong_answer"
NO_ANSWER = "no_answer"  # nothing answer-like could be extracted from the output


class Scorer(ABC):
    """Scores a batch of outputs; `name` is set by `SCORERS.register`."""

    name: ClassVar[str]
    executes_programs: ClassVar[bool] = False  # outcomes are the sandbox's: reliability applies
    scored_with_its_source: ClassVar[bool] = (
        False  # the source's own harness scores (lm-eval): re-scored from its stored data
    )
    # What the scorer reads of an item, matched against the source's declaration (`Source.provides`,
    # `Source.provided_meta`) when a suite is read: a mismatch is refused before any generation.
    needs: ClassVar[frozenset[str]] = frozenset()  # capabilities (tasks.sources.CAPABILITIES)
    needs_meta: ClassVar[frozenset[str]] = frozenset()  # item.meta keys
    requires: ClassVar[tuple[str, ...]] = ()  # distributions whose version decides the verdicts (in the run's identity)

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        """One Score per (item, output) pair, in order; outputs are scored as given."""
        check_batch(items, outputs)
        return self.check_items(items, outputs)

    def check_items(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        """The one loop over a batch (of equal lengths); overridden where the checks run together."""
        return [self.check(item, output) for item, output in zip(items, outputs)]

    @abstractmethod
    def check(self, item: Item, output: str) -> Score:
        """One output's verdict against its item, with the answer parsed out of the output."""

    def score_generations(
        self, items: Sequence[Item], outputs: Sequence[str], precomputed: Sequence[float] | None = None
    ) -> list[Score]:
        """Score raw model outputs, as the harness and the trainers call it: the thinking part is
        removed first. `precomputed`: scores the generator already gave (lm-eval's), which only a
        scorer that reads them uses."""
        return self.score(items, [without_thinking(output) for output in outputs])

    @classmethod
    def item_problem(cls, item: Item) -> str | None:
        """Why this scorer could never score `item` (a gold it cannot read), checked before generation;
        None if it can."""
        return None

    def close(self) -> None:  # noqa: B027 (a no-op unless the scorer holds resources)
        """Release what the scorer holds (worker processes); it may be used again afterwards."""


SCORERS: Registry[type[Scorer]] = Registry("scorer")


def get_scorer(name: str) -> Scorer:
    """A new instance of the scorer registered as `name` (an unknown name raises BenchError listing the known ones)."""
    return SCORERS.get(name)()


def without_thinking(output: str) -> str:
    """The output as a scorer sees it: without its <think>…</think> part (untouched when it has none)."""
    return strip_thinking(output) if "<think>" in output or "</think>" in output else output


def check_batch(items: Sequence[Item], outputs: Sequence[str]) -> None:
    if len(items) != len(outputs):
        raise ValueError(f"{len(items)} items but {len(outputs)} outputs")


def binary(correct: bool, outcome: str, answer: str = "") -> Score:
    return Score(float(correct), correct, outcome, answer)


class ProgramScorer(Scorer):
    """A scorer that runs the model's program in the sandbox (harness/sandbox): a subclass builds
    one item's program and test (`job`); the batch runs together, so programs run in parallel,
    and the answer recorded is the program that ran."""

    executes_programs = True

    @abstractmethod
    def job(self, item: Item, output: str) -> Job:
        """The program to run for this output and the test that judges it."""

    def check(self, item: Item, output: str) -> Score:
        return self.check_items([item], [output])[0]

    def check_items(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        jobs = [self.job(item, output) for item, output in zip(items, outputs)]
        return program_scores(jobs, run_programs(jobs))


def program_scores(jobs: Sequence[Job], results: Sequence[ExecutionResult]) -> list[Score]:
    """The sandbox's verdicts (outcomes: pass, wrong_answer, runtime_error, …), each with its program."""
    return [Score(float(r.passed), r.passed, r.outcome.value, job.program) for job, r in zip(jobs, results)]
