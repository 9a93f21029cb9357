"""Every scorer records the answer it parsed out of an output (`Score.answer`): the number, the
chosen letter, math-verify's extraction, the program it ran. A run keeps it in records.parquet's
`answer` column and the report's flipped items show it beside the output."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.evaluation.scoring import RECORD_COLUMNS
from plasticity_bench.tasks.arithmetic import final_answer
from plasticity_bench.tasks.base import get_task
from plasticity_bench.tasks.programs import ExpressionTask, program_source
from plasticity_bench.tasks.scorers import get_scorer
from plasticity_bench.tasks.scorers.base import without_thinking
from plasticity_bench.tasks.scorers.symbolic import MathVerify
from tests.test_lmeval_sets import sweep  # noqa: F401  (the fixture: `bench eval` of an lm-eval suite)


def item(answer: str, **meta: object) -> Item:
    return Item("q-1", "math", "t", "easy", "prompt", "", answer, dict(meta))


def answers(scorer: str, gold: Item, outputs: list[str]) -> list[str]:
    return [score.answer for score in get_scorer(scorer).score_generations([gold] * len(outputs), outputs)]


# ---------------------------------------------------------------- the run folder, through the CLI


def task_rule(task: str, output: str) -> str:
    """The answer the micro suite's task reads from an output, by the task's own rule."""
    text = without_thinking(output)
    if task == "chain_sum":
        return final_answer(text)
    if isinstance(get_task(task), ExpressionTask):
        return program_source(text.strip())  # the program it ran in the sandbox
    return text.strip()


def test_records_of_a_run_hold_the_parsed_answers(smoke_run: Path) -> None:
    records = pd.read_parquet(smoke_run / "records.parquet")
    assert list(records.columns) == RECORD_COLUMNS and RECORD_COLUMNS[-1] == "answer"
    assert records.answer.map(type).eq(str).all()
    expected = [task_rule(task, output) for task, output in zip(records.task, records.output)]
    assert list(records.answer) == expected
    assert len(records[records.task == "chain_sum"])
    code = records[records.family == "code"]
    assert len(code) and code.answer.str.startswith("def f(x):\n    return ").all()


def test_report_flipped_items_show_the_parsed_answer(bench, smoke_run: Path, tmp_path: Path) -> None:
    """One item made to flip in a copy of the smoke run: `bench report` shows its parsed answers."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(smoke_run / "checkpoints", run / "checkpoints", ignore=shutil.ignore_patterns("step-*"))
    records = pd.read_parquet(run / "records.parquet")
    start, final = int(records.step.min()), int(records.step.max())
    chosen = records[(records.step == start) & (records.task == "chain_sum")].item_id.iloc[0]
    at = (records.item_id == chosen) & (records.step == final)
    first = (records.item_id == chosen) & (records.step == start)
    records.loc[first, ["output", "answer", "correct"]] = ["1+2=3\nA: 3", "ANSWER-AT-START", False]
    records.loc[at, ["output", "answer", "correct"]] = ["1+2=3\nA: 4", "ANSWER-AT-END", True]
    records.to_parquet(run / "records.parquet", index=False)
    out = tmp_path / "report.html"
    done = bench("report", str(run), "-o", str(out))
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "parsed: <code class=answer>ANSWER-AT-START</code>" in page
    assert "parsed: <code class=answer>ANSWER-AT-END</code>" in page
    assert page.index("ANSWER-AT-START") < page.index("ANSWER-AT-END")  # each beside its own checkpoint's output


def test_lmeval_answer_is_lm_evals_filtered_response(sweep: dict[str, Path]) -> None:  # noqa: F811
    """lm-eval sets: the generate_until set's answer is what its `final_answer` filter (a regex,
    then take_first; lm-eval's fallback `[invalid]`) took out of the completion; the multiple
    choice set's is the chosen option's text."""
    records = pd.read_parquet(sweep["out"] / "records.parquet")
    arith = records[records.task == "arith"]
    assert len(arith)
    for output, answer in zip(arith.output, arith.answer):
        found = re.findall(r"#(-?\d+)$", output)  # tasks/lmeval/organism_arith.yaml's filter
        assert answer == (found[0] if found else "[invalid]")
    choice = records[records.task == "choice"]
    assert len(choice) and list(choice.answer) == list(choice.output)


# ---------------------------------------------------------------- per scorer: the answer is what was parsed


def test_numeric_answer_is_the_last_number_as_read() -> None:
    gold = item("1234")
    assert answers("numeric", gold, ["first 5, then 1,234.", "−7 left", "no number", "<think>9</think> 12"]) == [
        "1234",
        "-7",
        "",
        "12",
    ]


def test_exact_match_answer_is_the_normalised_output() -> None:
    assert answers("exact_match", item("Paris"), ["  PARIS \n", ""]) == ["paris", ""]


def test_multiple_choice_answer_is_the_chosen_letter() -> None:
    gold = item("C")
    assert answers("multiple_choice", gold, ["The answer is (c).", "B) because", "I think so", "\\boxed{D}"]) == [
        "C",
        "B",
        "",
        "D",
    ]


def test_math_verify_answer_is_its_extraction() -> None:
    scorer = MathVerify(workers=1)
    try:
        outputs = ["so \\boxed{\\frac{1}{2}} it is", "<think>2</think>the result is 3 apples", "none"]
        scores = scorer.score_generations([item("1/2"), item("3"), item("7")], outputs)
    finally:
        scorer.close()
    assert [(s.correct, s.answer) for s in scores] == [(True, "\\frac{1}{2}"), (True, "3"), (False, "")]


def test_program_scorer_answer_is_the_program_it_ran() -> None:
    gold = item("", test_list=["assert double(2) == 4"], test_imports=["import math"])
    outputs = ["Here:\n```python\ndef double(x):\n    return x * 2\n```\nDone.", "def double(x):\n    return x + 1\n"]
    scores = get_scorer("mbpp").score_generations([gold, gold], outputs)
    assert [s.outcome for s in scores] == ["pass", "wrong_answer"]
    # the fenced block, after the test's imports
    assert scores[0].answer == "import math\ndef double(x):\n    return x * 2\n"
    assert scores[1].answer == "import math\n" + outputs[1]


def test_chain_sum_answer_is_the_text_after_the_answer_mark() -> None:
    [made] = get_task("chain_sum").items("easy", 1, seed=0)
    [score] = get_scorer("task").score_generations([made], [made.target])
    assert score.correct and score.answer == made.answer != made.target


@pytest.mark.parametrize("task", ["reverse", "sort_letters"])
def test_generator_task_answer_is_the_stripped_output(task: str) -> None:
    [made] = get_task(task).items("easy", 1, seed=0)
    [score] = get_scorer("task").score_generations([made], [f"  {made.answer}\n"])
    assert score.correct and score.answer == made.answer
