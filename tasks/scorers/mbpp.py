"""`mbpp`: an MBPP-style problem's asserts, run against the model's program in the sandbox.

The program is the answer's first fenced code block (or the whole answer when it has none),
after the problem's `test_imports`. The test is `test_imports`, `test_setup_code` and the
`test_list` asserts, in that order; it runs in the sandbox's checker, where a name the test does
not define is the program's function of that name, called in the program's process with copies
of plain data (harness/sandbox/api.py). So `assert f(2) == 4` compares with the checker's own
`==`: an answer object whose `__eq__` always holds cannot cross, and an early `exit` fails.
Everything comes from the item's meta (tasks/sources/mbpp.py): re-scoring reads only the run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.sandbox import Job
from plasticity_bench.tasks.scorers.base import SCORERS, ProgramScorer
from plasticity_bench.tasks.scorers.programs import extract_code


def mbpp_test(meta: Mapping[str, Any]) -> str:
    parts = ["\n".join(meta.get("test_imports") or []), meta.get("test_setup_code") or "", "\n".join(meta["test_list"])]
    return "\n".join(part for part in parts if part.strip()) + "\n"


def mbpp_program(meta: Mapping[str, Any], output: str) -> str:
    code = extract_code(output)
    program = output if code is None else code
    imports = "\n".join(meta.get("test_imports") or [])  # MBPP ran them in the program's namespace too
    return f"{imports}\n{program}" if imports else program


@SCORERS.register("mbpp", "MBPP: the problem's asserts pass against the program (sandboxed)")
class MBPPScorer(ProgramScorer):
    needs_meta = frozenset({"test_list"})

    @classmethod
    def item_problem(cls, item: Item) -> str | None:
        """A `file` set may name `test_list` (and the others) under `meta:`: their shape is checked
        before generation."""
        tests, setup, imports = (
            item.meta.get("test_list"),
            item.meta.get("test_setup_code"),
            item.meta.get("test_imports"),
        )
        if not isinstance(tests, list) or not tests or not all(isinstance(test, str) for test in tests):
            return f"its test_list is not a non-empty list of assert statements ({tests!r:.60})"
        if setup is not None and not isinstance(setup, str):
            return "its test_setup_code is not a string"
        if imports is not None and (
            not isinstance(imports, list) or not all(isinstance(line, str) for line in imports)
        ):
            return "its test_imports is not a list of strings"
        try:
            compile(mbpp_test(item.meta), "test", "exec")
        except SyntaxError as error:
            return f"its tests are not valid Python ({error.msg}, line {error.lineno})"
        return None

    def job(self, item: Item, output: str) -> Job:
        if not item.meta.get("test_list"):
            raise BenchError(
                f"item {item.id} has no `test_list` in its meta: the mbpp scorer runs an MBPP problem's asserts"
            )
        return Job(mbpp_program(item.meta, output), mbpp_test(item.meta))
