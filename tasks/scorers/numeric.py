"""`numeric`: the last number in the output equals the gold number (GSM8K style).

Thousands separators are removed first (``1,234`` → ``1234``; a comma counts as one only when
exactly three digits follow it, so a list ``3,4`` stays two numbers). A minus sign counts only
when it does not follow a word character or ``)``, so ``10-5`` ends in ``5``, not ``-5``. Equal
means a relative tolerance of 1e-6 (so a gold 0 needs an exact 0). The gold is read the same way
(``72``, ``1,234``, ``#### 72``, ``-0.5``); a gold with no number is a data error.
"""

from __future__ import annotations

import math
import re

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.scorers.base import CORRECT, NO_ANSWER, SCORERS, WRONG_ANSWER, Scorer, binary

RELATIVE_TOLERANCE = 1e-6
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def last_number_text(text: str) -> str | None:
    """The last number in `text` as written (thousands separators removed), or None."""
    text = _THOUSANDS.sub("", text.replace("\u2212", "-"))  # also read the Unicode minus sign
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def last_number(text: str) -> float | None:
    """The last number in `text`, or None."""
    number = last_number_text(text)
    return None if number is None else float(number)


@SCORERS.register("numeric", "last number in the output equals the gold number (relative tolerance 1e-6)")
class Numeric(Scorer):
    needs = frozenset({"answer"})

    @classmethod
    def item_problem(cls, item: Item) -> str | None:
        return None if last_number(item.answer) is not None else f"its gold answer {item.answer[:60]!r} has no number"

    def check(self, item: Item, output: str) -> Score:
        gold = last_number(item.answer)
        if gold is None:
            raise BenchError(f"numeric scorer: item {item.id}'s gold answer {item.answer!r} has no number")
        text = last_number_text(output)
        got = None if text is None else float(text)
        correct = got is not None and math.isclose(got, gold, rel_tol=RELATIVE_TOLERANCE)
        return binary(correct, CORRECT if correct else NO_ANSWER if got is None else WRONG_ANSWER, text or "")
