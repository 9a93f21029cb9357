"""`exact_match`: the output equals the gold after normalising whitespace and case."""

from __future__ import annotations

from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.scorers.base import CORRECT, NO_ANSWER, SCORERS, WRONG_ANSWER, Scorer, binary


def normalise(text: str) -> str:
    """Case-folded, with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.split()).casefold()


@SCORERS.register("exact_match", "output equals the gold answer up to whitespace and case")
class ExactMatch(Scorer):
    needs = frozenset({"answer"})

    def check(self, item: Item, output: str) -> Score:
        got = normalise(output)
        correct = got == normalise(item.answer)
        return binary(correct, CORRECT if correct else WRONG_ANSWER if got else NO_ANSWER, got)
