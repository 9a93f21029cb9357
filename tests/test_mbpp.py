"""MBPP-shaped sets and MBPP+ (evalplus) sets from a user's own files, through the real CLI.

One `bench eval` of a tiny local chat model on a suite with a `kind: mbpp` set (four hand-written
problems) and a `kind: evalplus` MBPP+ set whose task ids coincide with real MBPP+ ids. The model's
random outputs are then replaced by known answers (right, wrong, hostile) and `bench score`
re-scores the run folder, also after the data files were moved away: the verdicts must come from
what the run folder holds, the user's files taken as written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.scorers import get_scorer
from tests.chat_model import build_chat_model

# Hand-written MBPP problems: the task, a reference solution and its asserts (MBPP's jsonl shape).
MBPP_ROWS = [
    {
        "task_id": 11,
        "text": "Write a function to add two integers.",
        "code": "def add(a, b):\n    return a + b\n",
        "test_list": ["assert add(1, 2) == 3", "assert add(-4, 4) == 0", "assert add(10, 5) == 15"],
    },
    {
        "task_id": 12,
        "text": "Write a function to reverse a list.",
        "code": "def rev(xs):\n    return xs[::-1]\n",
        "test_list": ["assert rev([1, 2, 3]) == [3, 2, 1]", "assert rev([]) == []"],
        "test_setup_code": "",
    },
    {
        "task_id": 13,
        "text": "Write a function for the area of a circle of radius r.",
        "code": "def area(r):\n    return math.pi * r * r\n",
        "test_list": [
            "assert math.isclose(area(1), 3.14159, rel_tol=1e-3)",
            "assert math.isclose(area(2), 12.566, rel_tol=1e-3)",
        ],
        "test_imports": ["import math"],
    },
    {
        "task_id": 14,
        "text": "Write a function that counts the vowels of a word.",
        "code": "def vowels(word):\n    return sum(c in VOWELS for c in word)\n",
        "test_setup_code": "VOWELS = 'aeiou'",
        "test_list": ["assert vowels('banana') == 3", "assert vowels(VOWELS) == 5"],
    },
]

# MBPP+ problems in evalplus's format under real MBPP+ ids (Mbpp/2 is similar_elements, Mbpp/124
# angle_complex, Mbpp/252 convert there): evalplus's loader would turn these lists into tuples and
# these strings into complex numbers. Here each problem is the user's own.
EVALPLUS_ROWS = [
    {
        "task_id": "Mbpp/2",
        "prompt": '"""\nWrite a function that returns a list reversed.\n"""\n',
        "canonical_solution": "def reverse_list(xs):\n    return xs[::-1]\n",
        "entry_point": "reverse_list",
        "contract": "",
        "base_input": [[[1, 2, 3]], [[4]]],
        "plus_input": [[[5, 6, 7, 8]]],
        "atol": 0,
    },
    {
        "task_id": "Mbpp/124",
        "prompt": '"""\nWrite a function that joins two strings.\n"""\n',
        "canonical_solution": "def join(a, b):\n    return a + b\n",
        "entry_point": "join",
        "contract": "",
        "base_input": [["1", "2"], ["ab", "c"]],
        "plus_input": [],
        "atol": 0,
    },
    {
        "task_id": "Mbpp/252",
        "prompt": '"""\nWrite a function that returns the length of a string.\n"""\n',
        "canonical_solution": "def size(s):\n    return len(s)\n",
        "entry_point": "size",
        "contract": "",
        "base_input": [["1+2j"], ["abc"]],
        "plus_input": [[""]],
        "atol": 0,
    },
]

SUITE = """name: my-code
description: a user's own code sets (tests)
families:
  mine: hand-written MBPP problems
  plus: MBPP+-format problems under real MBPP+ ids
defaults:
  prompt: {chat: false, enable_thinking: null, system: null}
  sampling: {max_new_tokens: 4}
eval:
  - name: mine
    family: mine
    role: target
    source: {kind: mbpp, path: data/mine.jsonl}
  - name: plus
    family: plus
    source: {kind: evalplus, dataset: mbpp, path: data/plus.jsonl}
"""

HOSTILE = {
    "always-equal": (
        "class Yes:\n    def __eq__(self, other):\n        return True\n\ndef add(a, b):\n    return Yes()\n"
    ),
    "early-exit": "import os\nos._exit(0)\n",
    "lying-print": "print('pass')\nraise SystemExit(0)\n",
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_suite(folder: Path) -> Path:
    write_jsonl(folder / "data" / "mine.jsonl", MBPP_ROWS)
    write_jsonl(folder / "data" / "plus.jsonl", EVALPLUS_ROWS)
    (folder / "suite.yaml").write_text(SUITE)
    return folder / "suite.yaml"


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}```\n"


# What each problem is answered with, and whether that answer is right.
ANSWERS: dict[str, list[tuple[str, bool]]] = {
    "11": [
        (fenced(MBPP_ROWS[0]["code"]), True),
        ("def add(a, b):\n    return a - b\n", False),
        (HOSTILE["always-equal"], False),
        (HOSTILE["early-exit"], False),
        (HOSTILE["lying-print"], False),
    ],
    "12": [("def rev(xs):\n    return list(reversed(xs))\n", True), ("def rev(xs):\n    return xs\n", False)],
    "13": [
        ("import math\n\ndef area(r):\n    return math.pi * r ** 2\n", True),
        ("def area(r):\n    return 3 * r * r\n", False),
    ],
    "14": [
        ("def vowels(word):\n    return sum(c in 'aeiou' for c in word)\n", True),
        ("def vowels(word):\n    return len(word)\n", False),
    ],
    # Right for the user's inputs as written (lists, strings), wrong had they become tuples / complex numbers.
    "Mbpp/2": [
        ("def reverse_list(xs):\n    return list(reversed(xs))\n", True),
        ("def reverse_list(xs):\n    return xs\n", False),
    ],
    "Mbpp/124": [
        (fenced("def join(a, b):\n    return f'{a}{b}'\n"), True),
        ("def join(a, b):\n    return b + a\n", False),
    ],
    "Mbpp/252": [("def size(s):\n    return sum(1 for _ in s)\n", True), ("def size(s):\n    return 3\n", False)],
}


@pytest.fixture(scope="module")
def code_run(tmp_path_factory: pytest.TempPathFactory, bench) -> dict[str, Path]:
    """A suite on the user's files and one `bench eval` of a tiny chat model on it."""
    root = tmp_path_factory.mktemp("mbpp")
    suite = write_suite(root / "suite")
    model = build_chat_model(root / "model")
    out = root / "run"
    done = bench("eval", str(model), "--steps", "0", "--suite", str(suite), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"suite": suite, "run": out}


def answer_run(run: Path) -> dict[str, bool]:
    """Replace the run's generations by ANSWERS (one sample row each); return item id → expected verdict
    per (item id, sample)."""
    items = pd.read_parquet(run / "eval_items.parquet")
    task_ids = {row.id: json.loads(row.meta)["task_id"] for row in items.itertuples()}
    rows, expected = [], {}
    for item_id, task_id in task_ids.items():
        for sample, (output, right) in enumerate(ANSWERS[task_id]):
            rows.append({"item_id": item_id, "step": 0, "sample": sample, "output": output})
            expected[f"{item_id}#{sample}"] = right
    files = sorted((run / "generations").glob("step-*.parquet"))
    assert len(files) == 1
    pd.DataFrame(rows, columns=["item_id", "step", "sample", "output"]).to_parquet(files[0], index=False)
    return expected


def verdicts(run: Path) -> dict[str, bool]:
    records = pd.read_parquet(run / "records.parquet")
    return {f"{row.item_id}#{row.sample}": bool(row.correct) for row in records.itertuples()}


@pytest.mark.e2e
def test_user_mbpp_and_evalplus_sets_score_as_their_files_say_and_rescore_without_them(
    code_run: dict[str, Path], bench
) -> None:
    run = code_run["run"]
    items = pd.read_parquet(run / "eval_items.parquet")
    assert sorted(json.loads(m)["task_id"] for m in items.meta) == sorted(ANSWERS)
    mine = items[items.task == "mine"].set_index("id")
    first = mine[mine.meta.map(lambda m: json.loads(m)["task_id"]) == "11"].iloc[0]
    # The prompt: the task and its first test only; the reference solution is the target.
    assert (
        first.prompt
        == "Write a function to add two integers.\nYour code should pass this test:\n\nassert add(1, 2) == 3\n"
    )
    assert first.target == MBPP_ROWS[0]["code"]

    expected = answer_run(run)
    done = bench("score", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert verdicts(run) == expected
    outcomes = pd.read_parquet(run / "records.parquet").outcome
    assert {"pass", "wrong_answer", "runtime_error"} <= set(outcomes)
    aggregates = pd.read_parquet(run / "aggregates.parquet")
    whole = aggregates[(aggregates.slice == "all") & (aggregates.step == 0)].set_index("family")
    assert whole.reliability.notna().all()  # programs were executed

    # The user's data files moved away (and no MBPP_OVERRIDE_PATH anywhere): the run folder alone re-scores.
    before = pd.read_parquet(run / "records.parquet")
    (run / "records.parquet").unlink()
    shutil.move(code_run["suite"].parent / "data", code_run["suite"].parent / "moved-away")
    try:
        again = bench("score", str(run))
    finally:
        shutil.move(code_run["suite"].parent / "moved-away", code_run["suite"].parent / "data")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(run / "records.parquet"), before)


def test_mbpp_scorer_runs_the_asserts_in_the_checker_not_in_the_program() -> None:
    """The scorer alone, on one problem: an answer that redefines what the test relies on
    (`VOWELS`, the test's own `math`) or forges its result cannot pass."""
    meta = {
        "task_id": "14",
        "test_list": MBPP_ROWS[3]["test_list"],
        "test_setup_code": "VOWELS = 'aeiou'",
        "test_imports": [],
    }
    item = Item("mine-14", "mine", "mine", "test", "...", "", "", meta)
    outputs = [
        "def vowels(word):\n    return sum(c in 'aeiou' for c in word)\n",
        "VOWELS = ''\ndef vowels(word):\n    return 0\n",  # the test's VOWELS is its own
        "import builtins\nbuiltins.AssertionError = None\ndef vowels(word):\n    return -1\n",
        "def vowels(word):\n    return type('Any', (), {'__eq__': lambda s, o: True})()\n",
    ]
    scores = get_scorer("mbpp").score([item] * len(outputs), outputs)
    assert [s.correct for s in scores] == [True, False, False, False]


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"text": "t", "code": "def f(): pass", "test_list": []}, "test_list"),
        ({"text": "t", "code": "def f(): pass", "test_list": ["assert f( =="]}, "test_list[0] is not valid Python"),
        ({"text": "", "code": "def f(): pass", "test_list": ["assert f() is None"]}, "needs `text`"),
        ({"text": "t", "test_list": ["assert f() is None"]}, "needs `code`"),
    ],
)
def test_malformed_mbpp_rows_are_one_line_errors(tmp_path: Path, bench, row: dict, fragment: str) -> None:
    write_jsonl(tmp_path / "data" / "mine.jsonl", [row])
    (tmp_path / "suite.yaml").write_text(SUITE.split("  - name: plus")[0])
    done = bench(
        "eval",
        str(tmp_path / "no-model"),
        "--steps",
        "0",
        "--suite",
        str(tmp_path / "suite.yaml"),
        "--out",
        str(tmp_path / "run"),
        "-q",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert fragment in done.stderr and "Traceback" not in done.stderr


def test_loading_an_evalplus_set_leaves_the_environment_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plasticity_bench.tasks.sources import SOURCES

    monkeypatch.delenv("MBPP_OVERRIDE_PATH", raising=False)
    path = write_jsonl(tmp_path / "plus.jsonl", EVALPLUS_ROWS)
    items = SOURCES.get("evalplus")({"dataset": "mbpp", "path": str(path)}, "test", tmp_path).eval_items(
        "plus", "test", "plus", 0
    )
    assert "MBPP_OVERRIDE_PATH" not in os.environ
    assert [item.meta["evalplus_cases"]["special_oracles"] for item in items] == [False, False, False]
    outputs = [answers[0][0] for answers in (ANSWERS["Mbpp/2"], ANSWERS["Mbpp/124"], ANSWERS["Mbpp/252"])]
    assert [s.correct for s in get_scorer("evalplus").score(items, outputs)] == [True, True, True]


def test_humaneval_and_arc_items_carry_their_tests(tmp_path: Path) -> None:
    """Every code kind re-scores from the run folder: HumanEval's check and ARC's test grids are in the meta."""
    from plasticity_bench.tasks.sources import SOURCES

    humaneval = SOURCES.get("humaneval")({"n": 2}, "test", tmp_path).eval_items("he", "test", "code", 0)
    assert all("def check(" in item.meta["humaneval_test"] for item in humaneval)
    arc = SOURCES.get("arc")({"split": "evaluation", "n": 1}, "test", tmp_path).eval_items("arc", "test", "arc", 0)
    pairs = arc[0].meta["arc_pairs"]
    # A "program" that answers each test input from a table of the stored outputs passes only if the meta is what
    # is tested.
    table = {json.dumps(grid_in): grid_out for grid_in, grid_out in pairs}
    program = f"import json\nTABLE = {table!r}\ndef transform(grid):\n    return TABLE[json.dumps(grid)]\n"
    assert [
        s.correct
        for s in get_scorer("arc_program").score(arc * 2, [program, "def transform(grid):\n    return grid\n"])
    ] == [True, False]


FILE_SUITE = """name: as-file
families: {mine: MBPP rows read by the generic file source}
eval:
  - name: mine
    family: mine
    role: target
    source: {kind: file, path: data/mine.jsonl, fields: {prompt: text, answer: code}, meta: [test_list]}
    scorer: mbpp
"""


def test_a_file_set_scored_by_mbpp_refuses_a_row_without_asserts_before_generation(tmp_path: Path, bench) -> None:
    rows = [{**row, "test_list": row["test_list"][0]} for row in MBPP_ROWS[:2]]  # a string, not a list
    write_jsonl(tmp_path / "data" / "mine.jsonl", rows)
    (tmp_path / "suite.yaml").write_text(FILE_SUITE)
    done = bench(
        "eval",
        str(tmp_path / "no-model"),
        "--steps",
        "0",
        "--suite",
        str(tmp_path / "suite.yaml"),
        "--out",
        str(tmp_path / "run"),
        "-q",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "scorer mbpp cannot score item" in done.stderr and "test_list" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            {"canonical_solution": "def reverse_list(xs):\n    return xs.nope()\n"},
            "Mbpp/2: the canonical solution fails",
        ),
        ({"entry_point": "not a name"}, "is not a Python name"),
    ],
)
def test_a_broken_evalplus_file_is_one_line_naming_the_problem(tmp_path: Path, change: dict, fragment: str) -> None:
    from plasticity_bench.harness.core.errors import BenchError
    from plasticity_bench.tasks.sources import SOURCES

    path = write_jsonl(tmp_path / "plus.jsonl", [{**EVALPLUS_ROWS[0], **change}])
    with pytest.raises(BenchError, match=fragment) as error:
        SOURCES.get("evalplus")(
            {"dataset": "mbpp", "path": str(path)}, "suite s.yaml, eval set 1", tmp_path
        ).eval_items("p", "test", "p", 0)
    assert "\n" not in str(error.value)


def test_an_evalplus_row_missing_a_field_is_one_line(tmp_path: Path) -> None:
    from plasticity_bench.harness.core.errors import BenchError
    from plasticity_bench.tasks.sources import SOURCES

    row = {key: value for key, value in EVALPLUS_ROWS[0].items() if key != "plus_input"}
    path = write_jsonl(tmp_path / "plus.jsonl", [row])
    with pytest.raises(BenchError, match="line 1: an evalplus problem needs plus_input"):
        SOURCES.get("evalplus")(
            {"dataset": "mbpp", "path": str(path)}, "suite s.yaml, eval set 1", tmp_path
        ).eval_items("p", "test", "p", 0)
