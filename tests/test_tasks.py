"""The micro suite: evaluation sets are fixed, large enough, held out, and scored correctly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import plasticity_bench.tasks.suites
from plasticity_bench.tasks import content_hash, get_task
from plasticity_bench.tasks.arithmetic import worked_steps
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.items import foundation_items, generator_items, load_eval_items, training_items

MICRO = load_suite("micro")


def eval_items(suite: plasticity_bench.tasks.suites.Suite) -> tuple:
    return load_eval_items(suite).items


def test_eval_sets_are_fixed_and_large_enough() -> None:
    items = eval_items(MICRO)
    assert content_hash(items) == content_hash(eval_items(MICRO))  # loaded again from scratch: same bytes
    per_family = {family: sum(item.family == family for item in items) for family in MICRO.families}
    assert all(n >= 200 for n in per_family.values()), per_family
    assert len({item.id for item in items}) == len(items)


def test_training_data_never_contains_an_evaluation_prompt() -> None:
    eval_prompts = load_eval_items(MICRO).prompts
    for task, level, _weight in MICRO.foundation:
        train = generator_items(MICRO, task, level, 3000, 0, eval_prompts)
        assert not eval_prompts & {item.prompt for item in train}, task
    for train_set in (MICRO.easy, MICRO.hard):
        assert train_set is not None
        train = training_items(MICRO, train_set, 3000, 0, eval_prompts)
        assert len(train) == 3000 and not eval_prompts & {item.prompt for item in train}, train_set.name


def test_the_foundation_mix_follows_its_weights() -> None:
    mix = foundation_items(MICRO, 5000, 0, load_eval_items(MICRO).prompts)
    total = sum(weight for _, _, weight in MICRO.foundation)
    for task, level, weight in MICRO.foundation:
        count = sum(item.task == task and item.level == level for item in mix)
        assert count == max(1, round(5000 * weight / total)), (task, level, count)
    assert any(weight < 1 for _, _, weight in MICRO.foundation)  # the micro organism sees a little of the hard target


def test_hard_items_need_longer_chains_than_easy() -> None:
    easy = get_task("chain_sum").items("easy", 50, seed=1)
    hard = get_task("chain_sum").items("hard", 50, seed=1)
    assert max(item.target.count(";") for item in easy) < min(item.target.count(";") for item in hard)


@pytest.mark.parametrize("expression", ["5 - 3 + 6", "0 - 9 - 9 + 1 - 2", "7 + 2"])
def test_worked_steps_agree_with_python(expression: str) -> None:
    steps, total = worked_steps(expression)
    assert total == eval(expression)
    assert steps.count("=") == expression.count("+") + expression.count("-")


@pytest.mark.parametrize("task_name", ["chain_sum", "reverse", "sort_letters", "affine", "string_fn"])
def test_reference_completions_score_correct_and_wrong_ones_do_not(task_name: str) -> None:
    task = get_task(task_name)
    items = task.items(task.levels[-1], 20, seed=7)
    right = task.score(items, [item.target for item in items])
    assert all(s.correct and s.score == 1.0 for s in right)
    wrong = task.score(items, ["zz" + item.answer[::-1] + "9)" for item in items])
    assert not any(s.correct for s in wrong)


@pytest.mark.slow
def test_program_outputs_are_executed_not_string_matched() -> None:
    task = get_task("affine")
    item = next(i for i in task.items("easy", 30, seed=3) if i.answer.endswith("+0") is False)
    a, b = item.answer.split("*x+")
    equivalent = f"{b}+x*{a}"  # different text, same function
    assert task.score([item], [equivalent])[0].correct
    scores = task.score(
        [item] * 4, ["while True: pass", "1/0", "sum(1 for _ in iter(int, 1))", "x*0"]
    )  # a CPU loop that allocates nothing
    assert [s.outcome for s in scores] == ["syntax_error", "runtime_error", "timeout", "wrong_answer"]


# The micro suite's hard target set has 600 items (on 200, one run's 95% interval is about ±6 points,
# too coarse to resolve the RL methods' gains: BENCHMARKS §14.2). Its first 200 are pinned as well,
# because BENCHMARKS reports hard math on those 200 items beside the 600 (§14.2, §14.4).
MICRO_200_EVAL_SET_SHA256 = "3f82fef78d3a75b7d1ef5e59872d00e97e783106d469be4e90db8e1b19631af1"
MICRO_EVAL_SET_SHA256 = "c57b44c7c9985a714c15563ec308e6cc9893bc87b6433e0bc929342096405ef7"


def test_the_micro_suite_evaluation_sets_are_pinned() -> None:
    assert content_hash(eval_items(MICRO)) == MICRO_EVAL_SET_SHA256


def test_the_600_item_target_set_begins_with_the_200_items_benchmarks_reports() -> None:
    items = eval_items(MICRO)
    hard = [item for item in items if (item.task, item.level) == ("chain_sum", "hard")]
    assert len(hard) == 600
    first_200 = [item for item in items if (item.task, item.level) != ("chain_sum", "hard") or item in hard[:200]]
    assert content_hash(first_200) == MICRO_200_EVAL_SET_SHA256


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("[chain_sum, easy, -1]", "foundation weight must be a positive number"),
        ("[chain_sum, easy, heavy]", "foundation weight must be a positive number"),
        ("[chain_sum]", "each foundation entry is [task, level] or [task, level, weight]"),
    ],
)
def test_bad_foundation_entries_are_clear_errors(tmp_path: Path, entry: str, message: str) -> None:
    from plasticity_bench.harness.core.errors import BenchError
    from plasticity_bench.tasks.suites import load_suite

    text = (Path(plasticity_bench.tasks.suites.__file__).parent / "micro.yaml").read_text()
    path = tmp_path / "suite.yaml"
    path.write_text(text.split("\nfoundation:")[0] + f"\nfoundation: [{entry}]\n")
    with pytest.raises(BenchError, match=re.escape(message)):
        load_suite(str(path))


def test_training_reward_checks_the_worked_steps_where_the_task_can() -> None:
    """The eval scorer grades the final answer; the RL/preference reward also needs every step
    right (chain_sum can check them), so a lucky answer from wrong steps earns nothing."""
    from plasticity_bench.tasks.verify import reward_scores, rewards

    item = get_task("chain_sum").items("hard", 1, seed=3)[0]
    steps = item.target.split("#")[0].split(";")
    wrong_first = re.sub(
        r"=(-?\d+)$", lambda m: f"={int(m.group(1)) + 1}", steps[0]
    )  # 1 off in step 1, the rest as given
    lucky = ";".join([wrong_first, *steps[1:]]) + f"#{item.answer}"
    outputs = [
        item.target,
        lucky,
        f"{item.target.split('#')[0]}#{int(item.answer) + 1}",
        " " + item.target.replace(";", "; "),
    ]
    assert [s.correct for s in reward_scores([item] * 4, outputs)] == [
        True,
        True,
        False,
        True,
    ]  # the scorer sees answers only
    assert rewards([item] * 4, outputs) == [1.0, 0.0, 0.0, 1.0]  # whitespace aside, the work must be right
    other = get_task("reverse").items("easy", 1, seed=3)[0]  # no work to check: the reward is the scorer's score
    assert rewards([other, other], [other.target, "zz"]) == [
        s.score for s in reward_scores([other, other], [other.target, "zz"])
    ]
