"""`exact_match`: the output equals the gold after normalising whitespace and case."""

from __future__ import annotations

from collections.abc import Sequence

from harness.core.items import Item
from tasks.base import Score
from tasks.scorers.base import CORRECT, NO_ANSWER, SCORERS, WRONG_ANSWER, Scorer, binary, check_batch


def normalise(text: str) -> str:
    """Case-folded, with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.split()).casefold()


@SCORERS.register("exact_match", "output equals the gold answer up to whitespace and case")
class ExactMatch(Scorer):
    needs = frozenset({"answer"})

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        check_batch(items, outputs)
        scores = []
        for item, output in zip(items, outputs):
            got = normalise(output)
            correct = got == normalise(item.answer)
            scores.append(binary(correct, CORRECT if correct else WRONG_ANSWER if got else NO_ANSWER))
        return scores
