"""Code sets (HumanEval, ARC-AGI-1, HumanEval+) scored the way users score them: `bench eval` on a
suite that names the sources, with the model's outputs chosen by the test (the answer-key backend,
tests/plugins/answer_key.py), read back from records.parquet; and the pass@k / reliability metrics."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.sandbox import ExecutionResult, Outcome
from plasticity_bench.harness.sandbox.passk import mean_pass_at_k, pass_at_k, reliability
from plasticity_bench.tasks import code_suites
from plasticity_bench.tasks.sources.code import arc_prompt
from tests.chat_model import build_chat_model
from tests.helpers import rejected
from tests.suite_files import write_jsonl

pytestmark = pytest.mark.xdist_group("code_suites")  # the module's shared runs are built once, on one worker


# --------------------------------------------------------------------------- pass@k
def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (the first c correct) containing a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 0, 5, 0.0),  # c = 0
        (5, 5, 1, 1.0),  # c = n
        (5, 2, 5, 1.0),  # n = k with a correct sample
        (3, 0, 3, 0.0),  # n = k without
        (4, 1, 1, 0.25),  # pass@1 = c / n
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
    ],
)
def test_pass_at_k_hand_worked_cases(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 4), (12, 5, 3), (9, 1, 8), (7, 6, 2)])
def test_pass_at_k_matches_subset_enumeration_and_closed_form(n: int, c: int, k: int) -> None:
    closed_form = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k))
    assert pass_at_k(n, c, k) == pytest.approx(closed_form)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(1000, 100) overflows a float; the product form does not.
    value = pass_at_k(1000, 3, 100)
    exact = 1 - math.comb(997, 100) / math.comb(1000, 100)  # exact integer arithmetic
    assert value == pytest.approx(exact, rel=1e-12)


def test_pass_at_k_rejects_impossible_inputs() -> None:
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_mean_pass_at_k_allows_different_sample_counts() -> None:
    problems = [(10, 3), (5, 0), (4, 4)]
    expected = (pass_at_k(10, 3, 2) + 0.0 + 1.0) / 3
    assert mean_pass_at_k(problems, 2) == pytest.approx(expected)
    with pytest.raises(ValueError):
        mean_pass_at_k([], 1)


def test_reliability_counts_programs_that_ran() -> None:
    def result(outcome: Outcome) -> ExecutionResult:
        return ExecutionResult(outcome=outcome, detail="", wall_seconds=0.0)

    results = [result(o) for o in (Outcome.PASS, Outcome.WRONG_ANSWER, Outcome.RUNTIME_ERROR, Outcome.TIMEOUT)]
    assert reliability(results) == 0.5
    assert reliability([result(Outcome.SYNTAX_ERROR)]) == 0.0


# --------------------------------------------------------------------------- through `bench eval`
PLUGIN = "tests.plugins.answer_key"
SUITE = """name: code-sets
description: HumanEval, ARC-AGI-1 and HumanEval+ graded by execution (tests)
eval_seed: 0
defaults:
  prompt: {chat: false}
families:
  programs: HumanEval, three samples per problem
  arc: ARC-AGI-1 training tasks
  plus: HumanEval+ from a local file, three samples per problem
eval:
  - {name: humaneval, family: programs, role: target, source: {kind: humaneval}, sampling: {n: 3, temperature: 1.0}}
  - {name: arc, split: training, family: arc, role: held-out, source: {kind: arc, split: training}}
  - name: humaneval-plus
    family: plus
    role: held-out
    source: {kind: evalplus, dataset: humaneval, path: HumanEvalPlus.jsonl}
    sampling: {n: 3, temperature: 1.0}
"""
PLUS_MARK = "# HumanEval+\n"  # opens the HumanEval+ prompts, so the key tells them from HumanEval's own

# HumanEval: the first sample of these problems is this completion, the other two the canonical solution
WRONG = {
    "HumanEval/0": "    return False\n",  # has_close_elements: always False
    "HumanEval/2": "    return number\n",  # truncate_number: forgets to truncate
    "HumanEval/4": "    return 0.0\n",
    "HumanEval/12": "    return strings[0] if strings else None\n",  # longest: first, not longest
    "HumanEval/13": "    return a * b\n",  # gcd
}
CRASHING = {"HumanEval/1": "    return paren_string.nonexistent()\n", "HumanEval/3": "    return 1 / 0\n"}
BROKEN_SYNTAX = {"HumanEval/5": "    return [\n"}
LOOPING = {"HumanEval/7": "    while True:\n        pass\n"}
# HumanEval/38's test checks decode_cyclic(encode_cyclic(s)) == s; a completion that also redefines
# encode_cyclic as the identity would agree with itself if the test used the program's helper.
SELF_CONSISTENT = {"HumanEval/38": "    return s\n\n\ndef encode_cyclic(s: str):\n    return s\n"}
FIRST_SAMPLE = {
    **{task: (text, Outcome.WRONG_ANSWER) for task, text in {**WRONG, **SELF_CONSISTENT}.items()},
    **{task: (text, Outcome.RUNTIME_ERROR) for task, text in CRASHING.items()},
    **{task: (text, Outcome.SYNTAX_ERROR) for task, text in BROKEN_SYNTAX.items()},
    **{task: (text, Outcome.TIMEOUT) for task, text in LOOPING.items()},
}
TRIES = ["    return 0\n", "    return -1\n"]  # HumanEval/23 (strlen): the canonical solution, then these

ARC_SOLUTIONS = {  # hand-written transforms for a few ARC-AGI-1 training tasks
    "67a3c6ac": "def transform(grid):\n    return [row[::-1] for row in grid]\n",  # mirror
    "68b16354": "def transform(grid):\n    return grid[::-1]\n",  # flip
    "74dd1130": "def transform(grid):\n    return [list(column) for column in zip(*grid)]\n",  # transpose
    "a416b8f3": "def transform(grid):\n    return [row + row for row in grid]\n",
    "c8f0f002": "def transform(grid):\n    return [[5 if c == 7 else c for c in row] for row in grid]\n",
    "007bbfb7": "import numpy as np\ndef transform(grid):\n    g = np.array(grid)\n    return np.kron(g != 0, g)\n",
    # rotate 180 in place: a program that changes its input is judged on the grid it returns
    "3c9b0459": "def transform(grid):\n    grid.reverse()\n    for row in grid:\n        row.reverse()\n"
    "    return grid\n",
}
ARC_WRONG = {
    "00d62c1b": ("def transform(grid):\n    return grid\n", Outcome.WRONG_ANSWER),  # identity: wrong grid
    "017c7c7b": ("def transform(grid):\n    return [[0]]\n", Outcome.WRONG_ANSWER),  # wrong shape
    "025d127b": ("def transfrom(grid):\n    return grid\n", Outcome.RUNTIME_ERROR),  # misspelled: no transform
    "045e512c": (
        "```python\ndef transform(grid):\n    return [row[:1] for row in grid]\n```",
        Outcome.WRONG_ANSWER,
    ),  # fenced, wrong
}


def humaneval_plus_rows(problems: dict) -> list[dict]:
    """A three-problem HumanEval+ file in evalplus's format (float tolerance, find_zero's oracle)."""

    def row(task_id: str, base: list, plus: list, atol: float = 0) -> dict:
        problem = problems[task_id]
        shared = {
            "prompt": PLUS_MARK + problem["prompt"],
            **{f: problem[f] for f in ("canonical_solution", "entry_point")},
        }
        return {"task_id": task_id, **shared, "contract": "", "base_input": base, "plus_input": plus, "atol": atol}

    return [
        row("HumanEval/0", [[[1.0, 2.0, 3.0], 0.5], [[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3]], [[[1.0, 1.05], 0.1]]),
        row("HumanEval/2", [[3.5], [1.33]], [[123.456]]),
        row("HumanEval/32", [[[1, 2]], [[-6, 11, -6, 1]]], [[[2, -3]]], atol=1e-6),
    ]


PLUS_TRIES = {  # HumanEval+: the three samples of each problem, and what each must score
    "HumanEval/0": [(None, Outcome.PASS)] * 3,  # None: the canonical solution
    "HumanEval/2": [
        (None, Outcome.PASS),
        ("    return number % 1.0 + 1e-9\n", Outcome.PASS),  # within the float tolerance
        ("    return number % 1.0 + 1e-3\n", Outcome.WRONG_ANSWER),  # beyond it
    ],
    "HumanEval/32": [
        (None, Outcome.PASS),
        ("    return 0.0\n", Outcome.WRONG_ANSWER),
        (None, Outcome.PASS),
    ],  # not a root
}


def answer_key(problems: dict) -> dict[str, list[str]]:
    """Each prompt's marker → the completions the answer-key backend gives it, sample by sample."""
    key = {}
    for task_id, problem in problems.items():
        canonical = problem["canonical_solution"]
        first = FIRST_SAMPLE.get(task_id)
        key[problem["prompt"]] = [first[0], canonical, canonical] if first else [canonical]
    key[problems["HumanEval/23"]["prompt"]] = [problems["HumanEval/23"]["canonical_solution"], *TRIES]
    tasks = code_suites.arc_tasks("training")
    programs = {**ARC_SOLUTIONS, **{task: text for task, (text, _) in ARC_WRONG.items()}}
    key.update({arc_prompt(tasks[task]): [program] for task, program in programs.items()})
    for task_id, tries in PLUS_TRIES.items():
        canonical = problems[task_id]["canonical_solution"]
        key[PLUS_MARK + problems[task_id]["prompt"]] = [text or canonical for text, _ in tries]
    return key


def write_code_suite(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    problems = code_suites.humaneval_problems()
    write_jsonl(folder / "HumanEvalPlus.jsonl", humaneval_plus_rows(problems))
    (folder / "answers.json").write_text(json.dumps(answer_key(problems)))
    (folder / "code.yaml").write_text(SUITE)
    return folder / "code.yaml"


def bench_eval(bench, folder: Path, suite: Path, out: Path) -> subprocess.CompletedProcess:
    """`bench eval` of a tiny model on `suite`, its outputs given by the answer key beside the suite."""
    model = build_chat_model(folder / "model", max_positions=32768)  # never loaded: the key answers
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLASTICITY_BENCH_PLUGINS", PLUGIN)
        patch.setenv("ANSWER_KEY_FILE", str(suite.parent / "answers.json"))
        return bench(
            "eval",
            str(model),
            "--steps",
            "0",
            "--suite",
            str(suite),
            "--backend",
            "answer-key",
            "--out",
            str(out),
            "-q",
        )


@pytest.fixture(scope="module")
def code_folder(bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of `bench eval` on the code suite."""
    folder = tmp_path_factory.mktemp("code-sets")
    done = bench_eval(bench, folder, write_code_suite(folder / "suite"), folder / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run"


@pytest.fixture(scope="module")
def code_run(code_folder: Path) -> pd.DataFrame:
    """Its records.parquet, with each item's task_id and arc_id."""
    items = pd.read_parquet(code_folder / "eval_items.parquet")
    meta = [m if isinstance(m, dict) else json.loads(m) for m in items.meta]
    ids = items.assign(task_id=[m.get("task_id") for m in meta], arc_id=[m.get("arc_id") for m in meta])
    records = pd.read_parquet(code_folder / "records.parquet")
    return records.merge(ids[["id", "task_id", "arc_id"]], left_on="item_id", right_on="id")


def outcomes(records: pd.DataFrame, task: str, key: str) -> dict[str, list[str]]:
    """key (task_id or arc_id) → the outcomes of its samples, in sample order."""
    rows = records[records.task == task].sort_values("sample")
    return {name: list(group.outcome) for name, group in rows.groupby(key)}


def test_every_humaneval_canonical_solution_passes(code_run: pd.DataFrame) -> None:
    problems = code_suites.humaneval_problems()
    humaneval = code_run[code_run.task == "humaneval"]
    assert humaneval.task_id.nunique() == 164 and len(humaneval) == 3 * 164
    canonical = humaneval[[o == problems[t]["canonical_solution"] for t, o in zip(humaneval.task_id, humaneval.output)]]
    assert canonical.task_id.nunique() == 164
    assert set(canonical.outcome) == {"pass"} and canonical.correct.all()


def test_wrong_crashing_broken_and_looping_humaneval_programs_fail_as_such(code_run: pd.DataFrame) -> None:
    first = {task: tries[0] for task, tries in outcomes(code_run, "humaneval", "task_id").items()}
    assert {task: first[task] for task in FIRST_SAMPLE} == {task: o.value for task, (_, o) in FIRST_SAMPLE.items()}
    assert {first[task] for task in set(first) - set(FIRST_SAMPLE)} == {"pass"}


def test_humaneval_attempts_count_per_problem_in_the_aggregates(code_run: pd.DataFrame, code_folder: Path) -> None:
    assert outcomes(code_run, "humaneval", "task_id")["HumanEval/23"] == ["pass", "wrong_answer", "wrong_answer"]
    aggregates = pd.read_parquet(code_folder / "aggregates.parquet")
    (humaneval,) = aggregates[aggregates.slice == "humaneval/test"].itertuples()
    # per problem: 3 samples; the first wrong in FIRST_SAMPLE's 10 (2 of 3 right), 1 of 3 right in HumanEval/23
    assert humaneval.n == 164 and humaneval.samples == 3
    assert humaneval.score == pytest.approx(100 * (153 + 10 * 2 / 3 + 1 / 3) / 164)
    assert humaneval.pass_at_n == 100.0  # every problem has a right sample
    stopped = len(CRASHING) + len(BROKEN_SYNTAX) + len(LOOPING)  # attempts that did not run to completion
    assert humaneval.reliability == pytest.approx(100 * (3 * 164 - stopped) / (3 * 164))


def test_hand_written_arc_transforms_pass_and_wrong_ones_fail(code_run: pd.DataFrame) -> None:
    arc = outcomes(code_run, "arc", "arc_id")
    assert len(arc) == 400
    assert {task: arc[task] for task in ARC_SOLUTIONS} == {task: ["pass"] for task in ARC_SOLUTIONS}
    assert {task: arc[task] for task in ARC_WRONG} == {task: [o.value] for task, (_, o) in ARC_WRONG.items()}
    unanswered = set(arc) - set(ARC_SOLUTIONS) - set(ARC_WRONG)
    assert not code_run[code_run.arc_id.isin(unanswered)].correct.any()  # an empty answer defines no transform


def test_humaneval_plus_from_a_local_file(code_run: pd.DataFrame) -> None:
    expected = {task: [o.value for _, o in tries] for task, tries in PLUS_TRIES.items()}
    assert outcomes(code_run, "humaneval-plus", "task_id") == expected


def test_an_evalplus_set_without_its_local_file_is_one_line(bench, tmp_path: Path) -> None:
    suite = write_code_suite(tmp_path / "suite")
    (suite.parent / "HumanEvalPlus.jsonl").unlink()
    done = bench_eval(bench, tmp_path, suite, tmp_path / "run")
    rejected(done, "HumanEvalPlus.jsonl")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the sources' own pieces
def test_the_humaneval_test_calls_the_entry_point_of_the_program() -> None:
    problems = code_suites.humaneval_problems()
    assert code_suites.humaneval_test(problems["HumanEval/0"]).endswith("check(program.has_close_elements)\n")
    assert "def encode_cyclic" in code_suites.humaneval_test(problems["HumanEval/38"])  # the prompt's helper


def test_arc_evaluation_split_loads_offline() -> None:
    tasks = code_suites.arc_tasks("evaluation")
    assert len(tasks) == 400
    with pytest.raises(ValueError, match="split"):
        code_suites.arc_tasks("test")
