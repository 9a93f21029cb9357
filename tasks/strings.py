"""Out-of-domain reasoning: string and list manipulation, nothing to do with arithmetic.

`reverse` uses reasoning-gym's `spell_backward` generator and scorer (its word list, its partial
credit), re-rendered with a short prompt. `sort_letters` is our own: reasoning-gym's sorting
tasks (`word_sorting`, `number_sorting`) have ~300-character instructions and multi-word answers,
far beyond a character-level organism's context budget.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence

import reasoning_gym

from plasticity_bench.tasks.base import TASKS, Candidate, Item, Score, Task


@TASKS.register("reverse", "spell a word backward (reasoning-gym spell_backward)")
class Reverse(Task):
    family = "reasoning"
    max_new_tokens = 12

    def make(self, rng: random.Random, level: str, n: int) -> list[Candidate]:
        dataset = reasoning_gym.create_dataset(
            "spell_backward", size=n, seed=rng.randrange(2**31), min_word_len=3, max_word_len=6
        )
        return [
            Candidate(f"rev {e['metadata']['word']}\n", e["answer"], e["answer"], {"word": e["metadata"]["word"]})
            for e in dataset
        ]

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        scorer = reasoning_gym.create_dataset("spell_backward", size=1, seed=0)
        answers = [out.strip() for out in outputs]
        values = [float(scorer.score_answer(answer, {"answer": item.answer})) for item, answer in zip(items, answers)]
        return [Score(value, value >= 1.0, answer=answer) for value, answer in zip(values, answers)]


@TASKS.register("sort_letters", "sort the letters of a random string")
class SortLetters(Task):
    family = "reasoning"
    max_new_tokens = 12

    def make(self, rng: random.Random, level: str, n: int) -> list[Candidate]:
        candidates = []
        for _ in range(n):
            letters = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 6)))
            answer = "".join(sorted(letters))
            candidates.append(Candidate(f"sort {letters}\n", answer, answer, {}))
        return candidates

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        return [
            Score(float(out.strip() == item.answer), out.strip() == item.answer, answer=out.strip())
            for item, out in zip(items, outputs)
        ]
