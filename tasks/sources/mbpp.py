"""`kind: mbpp`: MBPP-style problems from a local file, graded by running their asserts in the sandbox.

    source:
      kind: mbpp
      path: my_mbpp.jsonl        # jsonl, json, parquet or csv; relative to the suite file
      prompt_tests: 1            # optional: how many of each problem's tests the prompt shows (default 1)

Each row is a problem as in the original MBPP jsonl: `text` (the task; sanitized MBPP's `prompt`
is read the same way), `code` (a reference solution: the SFT target), `test_list` (a list of
assert statements), and optionally `task_id`, `test_setup_code` (run before the asserts) and
`test_imports` (sanitized MBPP's import lines). The prompt is the task and its first test, the
shape of MBPP's own prompt ("... Your code should pass these tests:") with one test, as evalplus's
MBPP+ shows one: it names the function and its signature, while the other tests stay unseen.

Every test runs in the sandbox's checker against the model's program (scorer `mbpp`), never in
the interpreter that runs the program; each item keeps its tests in its meta, so re-scoring reads
only the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.sources import SOURCES, Source, dedupe, item_id
from plasticity_bench.tasks.sources.files import FORMATS, load_table

MBPP_STOPS = ("\nif __name__", "\nprint(", "\nassert ")  # a program may define several functions: no "\ndef " stop
MBPP_META = frozenset({"task_id", "test_list", "test_setup_code", "test_imports"})


@SOURCES.register(
    "mbpp", "MBPP-style problems (text, code, test_list of asserts) from a local file, graded by execution"
)
class MBPP(Source):
    required = ("path",)
    optional = ("prompt_tests",)
    default_scorer = "mbpp"
    provides, meta_keys = frozenset(), MBPP_META  # no gold answer: graded by execution
    requires = ("datasets",)  # it parses the rows
    default_max_new_tokens = 512
    default_stop = MBPP_STOPS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shown = self.options.get("prompt_tests", 1)
        if not isinstance(shown, int) or isinstance(shown, bool) or shown < 0:
            raise BenchError(f"{self.where}: prompt_tests must be a whole number ≥ 0, got {shown!r}")
        self.prompt_tests = shown

    def data_files(self) -> list[Path]:
        return [self.path_option("path")]

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        path = self.path_option("path")
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise BenchError(f"{self.where}: {path} is not a data file this reads ({', '.join(FORMATS)})")
        items = [
            self.item(name, split, family, row, index) for index, row in enumerate(load_table(kind, path, self.where))
        ]
        return dedupe(items, self.where)

    def item(self, name: str, split: str, family: str, row: dict[str, Any], index: int) -> Item:
        where = f"{self.where}: row {index}"
        text = row.get("text") if row.get("text") is not None else row.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise BenchError(f"{where}: an MBPP row needs `text` (the task), a non-empty string")
        code = row.get("code")
        if not isinstance(code, str) or not code.strip():
            raise BenchError(f"{where}: an MBPP row needs `code` (a reference solution), a non-empty string")
        tests = row.get("test_list")
        if (
            not isinstance(tests, list)
            or not tests
            or not all(isinstance(test, str) and test.strip() for test in tests)
        ):
            raise BenchError(
                f"{where}: `test_list` must be a non-empty list of assert statements (strings), got {tests!r:.80}"
            )
        setup = row.get("test_setup_code") or ""
        imports = row.get("test_imports") or []
        if (
            not isinstance(setup, str)
            or not isinstance(imports, list)
            or not all(isinstance(line, str) for line in imports)
        ):
            raise BenchError(f"{where}: `test_setup_code` must be a string and `test_imports` a list of strings")
        for label, source in [
            *((f"test_list[{k}]", test) for k, test in enumerate(tests)),
            ("test_setup_code", setup),
            ("test_imports", "\n".join(imports)),
        ]:
            try:  # a test that does not compile would fail every checkpoint: refuse it before any generation
                compile(source, label, "exec")
            except SyntaxError as error:
                raise BenchError(f"{where}: {label} is not valid Python ({error.msg}, line {error.lineno})") from None
        task_id = row.get("task_id")
        key = str(task_id) if task_id is not None else text
        meta = {"task_id": key, "test_list": list(tests), "test_setup_code": setup, "test_imports": list(imports)}
        # The answer is what dedupe compares: two rows of one id with different tests are a conflict.
        return Item(
            item_id(name, split, key),
            family,
            name,
            split,
            mbpp_prompt(text, tests[: self.prompt_tests]),
            code,
            "\n".join(tests),
            meta,
        )


def mbpp_prompt(text: str, shown_tests: list[str]) -> str:
    if not shown_tests:
        return f"{text.strip()}\n"
    heading = "Your code should pass this test:" if len(shown_tests) == 1 else "Your code should pass these tests:"
    return f"{text.strip()}\n{heading}\n\n" + "\n".join(test.strip() for test in shown_tests) + "\n"
