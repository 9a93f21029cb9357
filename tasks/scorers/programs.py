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

import re
from collections.abc import Sequence

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


@SCORERS.register("humaneval", "HumanEval: the program passes the problem's check (sandboxed)")
class HumanEvalScorer(Scorer):
    executes_programs = True
    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        from tasks.code_suites import humaneval_problems, humaneval_test

        check_batch(items, outputs)
        problems = humaneval_problems()
        tests = {task_id: humaneval_test(problems[task_id]) for task_id in dict.fromkeys(item.meta["task_id"] for item in items)}
        jobs = [Job(humaneval_program(problems[item.meta["task_id"]]["prompt"], output), tests[item.meta["task_id"]])
                for item, output in zip(items, outputs)]
        return scores(run_programs(jobs))


@SCORERS.register("evalplus", "HumanEval+ / MBPP+: evalplus's comparisons on base and plus inputs (sandboxed)")
class EvalPlusScorer(Scorer):
    executes_programs = True
    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        from tasks.code_suites import evalplus_jobs, evalplus_problems

        check_batch(items, outputs)
        results: list[Score | None] = [None] * len(items)
        for dataset in sorted({item.meta["dataset"] for item in items}):
            indices = [i for i, item in enumerate(items) if item.meta["dataset"] == dataset]
            problems = evalplus_problems(dataset)
            solutions = [(items[i].meta["task_id"], extract_code(outputs[i]) or problems[items[i].meta["task_id"]]["prompt"] + outputs[i])
                         for i in indices]
            for i, value in zip(indices, scores(run_programs(evalplus_jobs(dataset, solutions, problems)))):
                results[i] = value
        return [s for s in results if s is not None]


@SCORERS.register("arc_program", "ARC-AGI-1: transform(grid) reproduces every test output grid (sandboxed)")
class ARCProgramScorer(Scorer):
    executes_programs = True
    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        from tasks.code_suites import arc_tasks, arc_test

        check_batch(items, outputs)
        tasks_by_split = {split: arc_tasks(split) for split in {item.meta["arc_split"] for item in items}}
        jobs = [Job(extract_code(output) or output, arc_test(tasks_by_split[item.meta["arc_split"]][item.meta["arc_id"]], item.meta.get("arc_test_index")))
                for item, output in zip(items, outputs)]
        return scores(run_programs(jobs))


@SCORERS.register("lmeval", "lm-eval's own per-document metric, computed while generating")
class LMEvalScorer(Scorer):
    def score(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        from harness.core.errors import BenchError

        raise BenchError("lm-eval sets are scored by lm-eval while generating; re-generate the run to re-score them")

    def score_generations(self, items: Sequence[Item], outputs: Sequence[str], precomputed: Sequence[float] | None = None) -> list[Score]:
        if precomputed is None:
            return self.score(items, outputs)
        return [Score(float(value), float(value) >= 1.0, "") for value in precomputed]
