"""Program synthesis: infer a Python expression in `x` from input/output examples.

The model writes only the expression (``3*x+1``); the harness wraps it as ``def f(x): return
<expr>`` and grades it by *executing* it against held-out inputs in the sandbox (generated code
is hostile). Our own generators: reasoning-gym's code tasks (codeio, ...) have long natural-
language prompts that a character-level organism cannot read within its budget.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from typing import Any

from plasticity_bench.harness.sandbox import Job, SandboxLimits, run_programs
from plasticity_bench.tasks.base import TASKS, Candidate, Item, Score, Task

# Tight limits: a correct answer here is one arithmetic or string expression.
PROGRAM_LIMITS = SandboxLimits(cpu_seconds=1.0, wall_seconds=3.0, memory_mb=256)


def program_source(expression: str) -> str:
    return f"def f(x):\n    return {expression}\n"


def test_source(cases: Sequence[tuple[Any, Any]]) -> str:
    return "".join(f"assert f({x!r}) == {y!r}\n" for x, y in cases)


class ExpressionTask(Task):
    """Shared scoring: run each output as the body of `f` against the item's held-out cases."""

    family = "code"
    max_new_tokens = 16
    executes_programs = True

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        jobs = [Job(program_source(out.strip()), test_source(item.meta["tests"])) for item, out in zip(items, outputs)]
        results = run_programs(jobs, PROGRAM_LIMITS)
        return [Score(float(r.passed), r.passed, r.outcome.value, job.program) for job, r in zip(jobs, results)]


@TASKS.register("affine", "find a*x+b from three input/output pairs; graded by execution")
class Affine(ExpressionTask):
    def make(self, rng: random.Random, level: str, n: int) -> list[Candidate]:
        candidates = []
        for _ in range(n):
            a, b = rng.randint(1, 9), rng.randint(0, 9)
            shown = [(x, a * x + b) for x in (0, 1, 2)]
            rng.shuffle(shown)
            held_out = [(x, a * x + b) for x in rng.sample(range(3, 30), 3)]
            prompt = "prog " + " ".join(f"f({x})={y}" for x, y in shown) + "\n"
            expression = f"{a}*x+{b}"
            candidates.append(Candidate(prompt, expression, expression, {"tests": held_out}))
        return candidates


# Named one-argument string functions the model must identify from two examples.
STRING_FUNCTIONS: dict[str, Callable[[str], Any]] = {
    "x[::-1]": lambda x: x[::-1],
    "x.upper()": lambda x: x.upper(),
    "x*2": lambda x: x * 2,
    "x[0]": lambda x: x[0],
    "x[-1]": lambda x: x[-1],
    "x[1:]": lambda x: x[1:],
    "x[:-1]": lambda x: x[:-1],
    "len(x)": lambda x: len(x),
}


def _random_word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 4)))


@TASKS.register("string_fn", "identify a string function from two examples; graded by execution")
class StringFunction(ExpressionTask):
    def make(self, rng: random.Random, level: str, n: int) -> list[Candidate]:
        candidates = []
        for _ in range(n):
            expression, fn = rng.choice(sorted(STRING_FUNCTIONS.items()))
            words = [_random_word(rng) for _ in range(5)]
            prompt = "prog " + " ".join(f"f({w})={fn(w)}" for w in words[:2]) + "\n"
            held_out = [(w, fn(w)) for w in words[2:]]
            candidates.append(Candidate(prompt, expression, expression, {"tests": held_out}))
        return candidates
