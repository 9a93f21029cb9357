"""Code suites scored through the sandbox, and the pass@k / reliability metrics."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from plasticity_bench.harness.sandbox import ExecutionResult, Outcome, SandboxLimits, run_programs
from plasticity_bench.harness.sandbox.passk import mean_pass_at_k, pass_at_k, reliability
from plasticity_bench.tasks import code_suites
from plasticity_bench.tasks.code_suites import SuiteDataMissing

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=2)


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


# --------------------------------------------------------------------------- HumanEval
@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass() -> None:
    problems = code_suites.humaneval_problems()
    assert len(problems) == 164
    completions = [(task_id, problem["canonical_solution"]) for task_id, problem in problems.items()]
    score = code_suites.score_humaneval(completions)
    failed = {t.task_id: t.results[0] for t in score.tasks if t.correct != 1}
    assert failed == {}
    assert score.pass_at(1) == 1.0
    assert score.reliability == 1.0


def test_wrong_humaneval_solutions_fail() -> None:
    problems = code_suites.humaneval_problems()
    wrong = [
        ("HumanEval/0", "    return False\n"),  # has_close_elements: always False
        ("HumanEval/2", "    return number\n"),  # truncate_number: forgets to truncate
        ("HumanEval/4", "    return 0.0\n"),
        ("HumanEval/12", "    return strings[0] if strings else None\n"),  # longest: first, not longest
        ("HumanEval/13", "    return a * b\n"),  # gcd
        ("HumanEval/23", "    return len(string) + 1\n"),  # strlen off by one
        ("HumanEval/55", "    return n\n"),  # fib
        ("HumanEval/0", "    return None\n"),
    ]
    crashing = [
        ("HumanEval/1", "    return paren_string.nonexistent()\n"),
        ("HumanEval/3", "    return 1 / 0\n"),
    ]
    broken_syntax = [("HumanEval/5", "    return [\n")]
    looping = [("HumanEval/7", "    while True:\n        pass\n")]
    jobs = code_suites.humaneval_jobs(wrong + crashing + broken_syntax + looping, problems)
    outcomes = [r.outcome for r in run_programs(jobs, FAST)]
    assert outcomes == (
        [Outcome.WRONG_ANSWER] * len(wrong)
        + [Outcome.RUNTIME_ERROR] * len(crashing)
        + [Outcome.SYNTAX_ERROR, Outcome.TIMEOUT]
    )


def test_humaneval_helpers_the_test_calls_come_from_the_prompt_not_the_completion() -> None:
    # HumanEval/38's test checks decode_cyclic(encode_cyclic(s)) == s; a completion that also
    # redefines encode_cyclic as the identity would agree with itself if the test used the program's.
    problems = code_suites.humaneval_problems()
    self_consistent = "    return s\n\n\ndef encode_cyclic(s: str):\n    return s\n"
    canonical = problems["HumanEval/38"]["canonical_solution"]
    jobs = code_suites.humaneval_jobs([("HumanEval/38", self_consistent), ("HumanEval/38", canonical)], problems)
    assert "def encode_cyclic" in jobs[0].test and "def decode_cyclic" not in jobs[0].test
    assert [r.outcome for r in run_programs(jobs, FAST)] == [Outcome.WRONG_ANSWER, Outcome.PASS]
    assert code_suites.humaneval_test(problems["HumanEval/0"]).endswith("check(program.has_close_elements)\n")


def test_humaneval_score_groups_attempts_per_task() -> None:
    canonical = code_suites.humaneval_problems()["HumanEval/23"]["canonical_solution"]
    attempts = [("HumanEval/23", canonical), ("HumanEval/23", "    return 0\n"), ("HumanEval/23", "    return -1\n")]
    score = code_suites.score_humaneval(attempts, FAST)
    (task,) = score.tasks
    assert (task.samples, task.correct) == (3, 1)
    assert score.pass_at(1) == pytest.approx(1 / 3)
    assert score.pass_at(2) == pytest.approx(2 / 3)
    with pytest.raises(KeyError, match="unknown task"):
        code_suites.humaneval_jobs([("HumanEval/999", "    pass\n")])


# --------------------------------------------------------------------------- ARC-AGI-1
ARC_SOLUTIONS = {  # hand-written transforms for a few ARC-AGI-1 training tasks
    "3c9b0459": "def transform(grid):\n    return [row[::-1] for row in grid[::-1]]\n",  # rotate 180
    "67a3c6ac": "def transform(grid):\n    return [row[::-1] for row in grid]\n",  # mirror
    "68b16354": "def transform(grid):\n    return grid[::-1]\n",  # flip
    "74dd1130": "def transform(grid):\n    return [list(column) for column in zip(*grid)]\n",  # transpose
    "a416b8f3": "def transform(grid):\n    return [row + row for row in grid]\n",
    "c8f0f002": "def transform(grid):\n    return [[5 if c == 7 else c for c in row] for row in grid]\n",
    "007bbfb7": "import numpy as np\ndef transform(grid):\n    g = np.array(grid)\n    return np.kron(g != 0, g)\n",
}


@pytest.mark.slow
def test_hand_written_arc_transforms_pass() -> None:
    score = code_suites.score_arc({task: [program] for task, program in ARC_SOLUTIONS.items()}, split="training")
    assert {t.task_id: t.results[0].outcome for t in score.tasks} == {task: Outcome.PASS for task in ARC_SOLUTIONS}


def test_wrong_arc_transforms_fail() -> None:
    attempts = {
        "3c9b0459": [
            "def transform(grid):\n    return grid\n",  # identity: wrong grid
            "def transform(grid):\n    return [row[::-1] for row in grid]\n",  # mirror only
            "def transform(grid):\n    return [[0]]\n",  # wrong shape
            "def transfrom(grid):\n    return grid\n",  # misspelled: no transform
            ARC_SOLUTIONS["3c9b0459"],
        ]
    }
    score = code_suites.score_arc(attempts, split="training", limits=FAST)
    (task,) = score.tasks
    assert [r.outcome for r in task.results] == [Outcome.WRONG_ANSWER] * 3 + [Outcome.RUNTIME_ERROR, Outcome.PASS]
    assert (task.samples, task.correct) == (5, 1)
    assert score.pass_at(5) == 1.0
    assert score.reliability == pytest.approx(4 / 5)


@pytest.mark.slow
def test_arc_transform_mutating_its_input_is_still_judged_on_its_output() -> None:
    program = "def transform(grid):\n    grid.reverse()\n    for row in grid:\n        row.reverse()\n    return grid\n"
    score = code_suites.score_arc({"3c9b0459": [program]}, split="training", limits=FAST)
    assert score.tasks[0].results[0].outcome is Outcome.PASS


def test_arc_evaluation_split_loads_offline() -> None:
    tasks = code_suites.arc_tasks("evaluation")
    assert len(tasks) == 400
    with pytest.raises(ValueError, match="split"):
        code_suites.arc_tasks("test")


# --------------------------------------------------------------------------- evalplus
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def humaneval_plus_file(tmp_path: Path) -> Path:
    """A three-problem HumanEval+ file in evalplus's format (float tolerance, find_zero oracle)."""
    problems = code_suites.humaneval_problems()

    def row(task_id: str, base: list, plus: list, atol: float = 0) -> dict:
        problem = problems[task_id]
        shared = {field: problem[field] for field in ("prompt", "canonical_solution", "entry_point")}
        return {"task_id": task_id, **shared, "contract": "", "base_input": base, "plus_input": plus, "atol": atol}

    return write_jsonl(
        tmp_path / "HumanEvalPlus.jsonl",
        [
            row("HumanEval/0", [[[1.0, 2.0, 3.0], 0.5], [[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3]], [[[1.0, 1.05], 0.1]]),
            row("HumanEval/2", [[3.5], [1.33]], [[123.456]]),
            row("HumanEval/32", [[[1, 2]], [[-6, 11, -6, 1]]], [[[2, -3]]], atol=1e-6),
        ],
    )


def test_humaneval_plus_from_a_local_file(humaneval_plus_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(humaneval_plus_file))
    problems = code_suites.evalplus_problems("humaneval")
    canonical = [(task_id, p["prompt"] + p["canonical_solution"]) for task_id, p in problems.items()]
    prompt_2, prompt_32 = problems["HumanEval/2"]["prompt"], problems["HumanEval/32"]["prompt"]
    others = [
        ("HumanEval/2", prompt_2 + "    return number % 1.0 + 1e-9\n"),  # within the float tolerance
        ("HumanEval/2", prompt_2 + "    return number % 1.0 + 1e-3\n"),  # beyond it
        ("HumanEval/32", prompt_32 + "    return 0.0\n"),  # not a root: the oracle catches it
    ]
    score = code_suites.score_evalplus("humaneval", canonical + others, limits=FAST)
    outcomes = {t.task_id: [r.outcome for r in t.results] for t in score.tasks}
    assert outcomes == {
        "HumanEval/0": [Outcome.PASS],
        "HumanEval/2": [Outcome.PASS, Outcome.PASS, Outcome.WRONG_ANSWER],
        "HumanEval/32": [Outcome.PASS, Outcome.WRONG_ANSWER],
    }


def test_mbpp_plus_from_a_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mbpp_2 = {  # a set-comparison task: any order of the shared elements is right
        "task_id": "Mbpp/2",
        "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\n"""\n',
        "canonical_solution": "def similar_elements(a, b):\n  return tuple(set(a) & set(b))\n",
        "entry_point": "similar_elements",
        "contract": "",
        "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]]],
        "plus_input": [[[1, 2], [3]]],
        "atol": 0,
    }
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(write_jsonl(tmp_path / "MbppPlus.jsonl", [mbpp_2])))
    solutions = [
        ("Mbpp/2", "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n"),
        ("Mbpp/2", "def similar_elements(a, b):\n    return ()\n"),
    ]
    score = code_suites.score_evalplus("mbpp", solutions, limits=FAST)
    assert [r.outcome for r in score.tasks[0].results] == [Outcome.PASS, Outcome.WRONG_ANSWER]


@pytest.mark.parametrize("dataset", ["humaneval", "mbpp"])
def test_evalplus_without_local_data_says_so_in_one_line(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = code_suites.EVALPLUS_OVERRIDES[dataset]
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SuiteDataMissing, match=variable) as missing:
        code_suites.evalplus_problems(dataset)
    assert "\n" not in str(missing.value)
    assert isinstance(missing.value, ValueError)
    monkeypatch.setenv(variable, str(tmp_path / "does-not-exist.jsonl"))
    with pytest.raises(SuiteDataMissing, match="never downloaded"):
        code_suites.evalplus_problems(dataset)
