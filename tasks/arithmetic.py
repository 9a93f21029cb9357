"""In-domain math: chained single-digit addition/subtraction, answered with worked steps.

Items come from reasoning-gym's `chain_sum` generator and are graded by its scorer; we only
re-render them compactly (a character-level organism pays for every prompt character) and add
the worked steps, evaluated left to right: ``5-3+6`` → ``5-3=2;2+6=8#8``.
The difficulty level is the number of terms: RPS trains on easy items first, then hard ones.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import reasoning_gym

from plasticity_bench.tasks.base import TASKS, Candidate, Item, Score, Task

# level -> (min_terms, max_terms). Hard items need longer chains than the foundation mix shows.
TERMS_BY_LEVEL: dict[str, tuple[int, int]] = {"easy": (2, 3), "hard": (4, 5)}
ANSWER_MARK = "#"


def worked_steps(expression: str) -> tuple[str, int]:
    """'5 - 3 + 6' -> ('5-3=2;2+6=8', 8): one step per operator, running total on the left."""
    tokens = expression.split()
    total = int(tokens[0])
    steps = []
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        new_total = total + int(operand) if op == "+" else total - int(operand)
        steps.append(f"{total}{op}{operand}={new_total}")
        total = new_total
    return ";".join(steps), total


STEP = re.compile(r"\s*(-?\d+)\s*([+-])\s*(\d+)\s*=\s*(-?\d+)\s*")


def rectify_steps(expression: str, output: str) -> str:
    """SPoT's oracle for chain sums: keep the model's steps up to the first wrong one, fix that
    step (keeping its left-hand side when that part is right) and rewrite what follows from it.

    '5+6=11;11+3=15;15-1=14#14' for '5 + 6 + 3 - 1' → '5+6=11;11+3=14;14-1=13#13'
    """
    steps, total = worked_steps(expression)
    correct = steps.split(";")
    model_steps = output.split(ANSWER_MARK, 1)[0].split(";")
    kept: list[str] = []
    for model_step, right in zip(model_steps, correct):
        parsed, expected = STEP.fullmatch(model_step), STEP.fullmatch(right)
        assert expected is not None, right  # the reference steps always parse
        if parsed and parsed.groups() == expected.groups():
            kept.append(model_step)  # correct: the model's own text, spacing and all
            continue
        if parsed and parsed.groups()[:3] == expected.groups()[:3]:
            kept.append(model_step[: model_step.index("=") + 1] + expected.group(4))  # only the result was wrong
        else:
            kept.append(right)
        break
    kept += correct[len(kept) :]
    return ";".join(kept) + f"{ANSWER_MARK}{total}"


def final_answer(output: str) -> str:
    """The text after the last answer mark (the whole output if there is none)."""
    return output.rsplit(ANSWER_MARK, 1)[-1].strip()


@TASKS.register("chain_sum", "chained single-digit +/- with worked steps (reasoning-gym chain_sum)")
class ChainSum(Task):
    family = "math"
    levels = tuple(TERMS_BY_LEVEL)
    max_new_tokens = 48

    def make(self, rng: random.Random, level: str, n: int) -> list[Candidate]:
        min_terms, max_terms = TERMS_BY_LEVEL[level]
        dataset = reasoning_gym.create_dataset(
            "chain_sum",
            size=n,
            seed=rng.randrange(2**31),
            min_terms=min_terms,
            max_terms=max_terms,
            min_digits=1,
            max_digits=1,
        )
        candidates = []
        for entry in dataset:
            expression = entry["metadata"]["expression"]
            steps, total = worked_steps(expression)
            assert str(total) == entry["answer"], (expression, entry["answer"])
            prompt = f"calc {expression.replace(' ', '')}\n"
            candidates.append(
                Candidate(prompt, f"{steps}{ANSWER_MARK}{total}", entry["answer"], {"expression": expression})
            )
        return candidates

    def rectify(self, item: Item, output: str) -> str | None:
        return rectify_steps(item.meta["expression"], output)

    def check_work(self, item: Item, output: str) -> bool:
        """Every step and the final answer as the reference computes them (whitespace aside): the
        right answer from wrong steps is a lucky guess (single-digit chains have few answers)."""
        return re.sub(r"\s+", "", output) == item.target

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        scorer = reasoning_gym.create_dataset("chain_sum", size=1, seed=0)
        scores = []
        for item, output in zip(items, outputs):
            answer = final_answer(output)
            value = float(scorer.score_answer(answer, {"answer": item.answer}))
            scores.append(Score(value, value >= 1.0, answer=answer))
        return scores
