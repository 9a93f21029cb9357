"""`multiple_choice`: the letter the output chose (A–J) equals the gold letter.

The gold is ``item.answer`` when it is a letter; otherwise ``item.meta["label"]``, an index
(0 → A) or a letter. The chosen letter is found, first match wins, by:

1. an explicit statement, the last one in the output: ``The answer is B``, ``Answer: b``,
   ``answer: (C)``, ``the correct option is D`` (a lower-case letter followed by another word,
   ``the answer is a bit...``, is prose);
2. the output opening with a letter: ``B``, ``(B)``, ``B) foo``, ``B. foo``, ``[B]``, or a lone
   lower-case letter (``b``);
3. the last ``\\boxed{B}`` or parenthesised ``(B)`` anywhere.

A bare capital inside prose (``I think...``) is never read as a choice: ``I`` is a valid letter.
"""

from __future__ import annotations

import re

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.scorers.base import CORRECT, NO_ANSWER, SCORERS, WRONG_ANSWER, Scorer, binary

LETTERS = "ABCDEFGHIJ"
_STATED = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is|:|=)?\s*(?:is\s*)?:?\s*[(\[]?\s*([A-J])\b(?![^\s.,;:!?)\]])", re.IGNORECASE
)
_WORD_NEXT = re.compile(r"\s+\w")  # "the answer is a bit...": a lower-case letter followed by a word is prose
_OPENING = re.compile(r"\s*[(\[]?([A-J])(?:\s*[)\].:]|\s*$|\s+-)")
_LONE = re.compile(r"\s*[(\[]?([a-jA-J])[)\].]?\s*$")
_MARKED = re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?\(?([A-J])\)?\s*\}?\s*\}|\(([A-J])\)")


def chosen_letter(output: str) -> str | None:
    """The letter the output chose, upper-case, or None."""
    stated = [
        m.group(1) for m in _STATED.finditer(output) if m.group(1).isupper() or not _WORD_NEXT.match(output, m.end())
    ]
    if stated:
        return stated[-1].upper()
    for pattern in (_OPENING, _LONE):
        match = pattern.match(output)
        if match:
            return match.group(1).upper()
    marked = _MARKED.findall(output)
    if marked:
        boxed, parenthesised = marked[-1]
        return boxed or parenthesised
    return None


def gold_letter(item: Item) -> str:
    answer = item.answer.strip().strip("()").strip().upper()
    if len(answer) == 1 and answer in LETTERS:
        return answer
    label = item.meta.get("label")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label.strip())
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(LETTERS):
        return LETTERS[label]
    if isinstance(label, str) and len(label.strip()) == 1 and label.strip().upper() in LETTERS:
        return label.strip().upper()
    raise BenchError(
        f"multiple_choice scorer: item {item.id} has no gold letter A-J (answer {item.answer!r}, meta label {label!r})"
    )


@SCORERS.register("multiple_choice", "the letter the output chose (A-J) equals the gold letter (or meta label index)")
class MultipleChoice(Scorer):
    needs = frozenset({"answer"})

    @classmethod
    def item_problem(cls, item: Item) -> str | None:
        try:
            gold_letter(item)
        except BenchError:
            return f"it has no gold letter A-J (answer {item.answer[:40]!r}, meta label {item.meta.get('label')!r})"
        return None

    def check(self, item: Item, output: str) -> Score:
        gold = gold_letter(item)
        got = chosen_letter(output)
        correct = got == gold
        return binary(correct, CORRECT if correct else NO_ANSWER if got is None else WRONG_ANSWER, got or "")
