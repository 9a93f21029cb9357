"""Scorers by name: math_verify's equivalences and its time bound (also from a worker thread),
exact_match, numeric, multiple_choice, and the registry."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.scorers import SCORERS, Scorer, get_scorer, symbolic
from plasticity_bench.tasks.scorers.choice import chosen_letter
from plasticity_bench.tasks.scorers.numeric import last_number
from plasticity_bench.tasks.scorers.symbolic import MathVerify, prepare_gold, shared_pool


def item(answer: str, meta: dict | None = None, item_id: str = "i") -> Item:
    return Item(item_id, "math", "t", "x", "", "", answer, meta or {})


def score_pairs(scorer: Scorer, pairs: list[tuple[str, str]]) -> list[Score]:
    return scorer.score([item(gold, item_id=str(k)) for k, (gold, _) in enumerate(pairs)], [out for _, out in pairs])


# (gold, an output that must score correct, an output that must score wrong), checked against
# math-verify 0.9.0. Where the library disagrees with intuition, the case says so; cases whose
# right answer is debatable were left out (see MATH_VERIFY_SURPRISES below).
EQUIVALENCES: list[tuple[str, str, str]] = [
    # fractions, plain and LaTeX, both ways
    ("3/4", r"\boxed{\frac{3}{4}}", r"\boxed{\frac{4}{3}}"),
    (r"\frac{3}{4}", "The answer is 3/4", "The answer is 3/5"),
    (r"\dfrac{3}{4}", r"\boxed{\tfrac34}", r"\boxed{\tfrac43}"),
    (r"3\frac{1}{2}", r"\boxed{\frac{7}{2}}", r"\boxed{\frac{3}{2}}"),  # a mixed number is 7/2, not 3·1/2
    # decimals vs fractions (float_rounding=6: 0.333333 equals 1/3, 0.333 does not)
    ("0.75", r"\boxed{\frac{3}{4}}", r"\boxed{\frac{3}{5}}"),
    (r"\frac{1}{2}", r"\boxed{0.5}", r"\boxed{0.25}"),
    ("1/3", "0.333333", "0.333"),
    # \boxed{} in the gold, and the boxed answer winning over later numbers in the output
    (r"\boxed{7}", "so we get $7$", "so we get $8$"),
    ("10", r"\boxed{10}. Check: 5+6=11", r"\boxed{11}. Check: 5+5=10"),
    # the last expression when nothing is boxed
    ("10", "First 3+4=7, then 7+3 = 10", "First 3+4=7, then 7+3 = 11"),
    ("42", "The answer is 42.", "The answer is 43."),
    # thousands separators; an unescaped $ before the number is fine (but see \$ in the surprises)
    ("1,234", r"\boxed{1234}", r"\boxed{1243}"),
    ("1234", "So she earns $1,234.", "So she earns $1,324."),
    (r"\$12.50", r"\boxed{12.5}", r"\boxed{12.05}"),
    # negative numbers
    ("-3", r"\boxed{-3}", r"\boxed{3}"),
    (r"-\frac{1}{2}", r"\boxed{-0.5}", r"\boxed{0.5}"),
    # units are dropped, in the gold and in the output
    (r"5\text{ cm}", r"\boxed{5}", r"\boxed{6}"),
    ("5 cm", r"\boxed{5 \text{ cm}}", r"\boxed{6 \text{ cm}}"),
    ("12", r"The length is \boxed{12\text{ meters}}", r"The length is \boxed{13\text{ meters}}"),
    # intervals
    ("(0, 1]", r"\boxed{\left(0,1\right]}", r"\boxed{(0,1)}"),
    ("[0,1]", r"\boxed{[0, 1]}", r"\boxed{(0,1]}"),
    (r"(-\infty, 2)", r"\boxed{(-\infty,2)}", r"\boxed{(-\infty,2]}"),
    (r"x \in [1, 2]", r"\boxed{[1,2]}", r"\boxed{[1,3]}"),
    # percentages; the library also accepts the bare number (50 and 0.5 both match 50\%)
    (r"50\%", r"\boxed{50\%}", r"\boxed{5\%}"),
    (r"50\%", r"\boxed{50}", r"\boxed{25}"),
    # roots
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}", r"\boxed{\sqrt{2}}"),
    (r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{1}{2}\sqrt{3}}", r"\boxed{\frac{\sqrt{2}}{2}}"),
    (r"\sqrt[3]{8}", r"\boxed{2}", r"\boxed{3}"),
    # pi: symbolic equality; 3.14 (and even 3.14159) is not pi at 6 decimal places
    (r"2\pi", r"\boxed{\pi \cdot 2}", r"\boxed{\pi}"),
    (r"\pi", r"\boxed{\pi}", r"\boxed{3.14}"),
    # sets (unordered), tuples (ordered), bare comma lists (compared unordered)
    (r"\{1,2,3\}", r"\boxed{\{3,2,1\}}", r"\boxed{\{1,2\}}"),
    ("(1, 2, 3)", r"\boxed{(1,2,3)}", r"\boxed{(3,2,1)}"),
    ("2, 1", r"\boxed{1, 2}", r"\boxed{1,3}"),
    # degrees are dropped like units
    (r"90^\circ", r"\boxed{90}", r"\boxed{45^\circ}"),
    # scientific notation: LaTeX, and a plain gold (which prepare_gold rewrites)
    (r"1.5\times 10^{3}", r"\boxed{1500}", r"\boxed{150}"),
    ("2.5e-3", r"\boxed{0.0025}", r"\boxed{0.025}"),
    (r"10^{-5}", "0.00001", "0.0001"),
    ("2^{10}", "1024", "1000"),
    # expressions, equations, logs, infinity, complex numbers, matrices, text answers
    ("x^2+2x+1", r"\boxed{(x+1)^2}", r"\boxed{(x-1)^2}"),
    (r"\frac{1}{x}", r"\boxed{x^{-1}}", r"\boxed{-x}"),
    ("x=2", r"\boxed{2}", r"\boxed{3}"),  # a gold equation x=2 accepts the bare value
    ("y = 2x + 1", r"\boxed{y=1+2x}", r"\boxed{y=2x-1}"),
    (r"\log_2 8", r"\boxed{3}", r"\boxed{4}"),
    (r"\infty", r"\boxed{\infty}", r"\boxed{-\infty}"),
    ("3+4i", r"\boxed{4i+3}", r"\boxed{3-4i}"),
    (
        r"\begin{pmatrix}1\\2\end{pmatrix}",
        r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}",
        r"\boxed{\begin{pmatrix}2\\1\end{pmatrix}}",
    ),
    (r"\text{(B)}", r"\boxed{B}", r"\boxed{C}"),
]

# What math-verify 0.9.0 does that intuition would not, found while building the table above; kept
# as a test so that a library upgrade that changes any of them is noticed. (gold, output, outcome)
MATH_VERIFY_SURPRISES: list[tuple[str, str, str]] = [
    ("1234", r"So she earns \$1,234.", "no_answer"),  # an escaped dollar before a number hides it
    ("18", r"It costs \$18.", "no_answer"),
    ("1500", "1.5e3", "wrong_answer"),  # plain scientific notation in an output is read as 1.5
    ("i", r"\boxed{\sqrt{-1}}", "wrong_answer"),  # sqrt(-1) is not simplified to i
    (
        "[1,2]",
        r"\boxed{1 \le x \le 2}",
        "wrong_answer",
    ),  # an inequality is not an interval (allow_set_relation_comp=False)
    (r"\pi", r"\boxed{3.14159}", "wrong_answer"),  # compared at 6 decimal places
    (r"\text{hello}", "hello", "no_answer"),  # a word is not an answer
]


@pytest.fixture(scope="module")
def table_scores() -> list[Score]:
    """The whole table scored in one batch (one pool start), wrong and right outputs interleaved."""
    pairs = [(gold, out) for gold, right, wrong in EQUIVALENCES for out in (right, wrong)]
    pairs += [(gold, out) for gold, out, _ in MATH_VERIFY_SURPRISES]
    return score_pairs(get_scorer("math_verify"), pairs)


def test_the_table_is_big_enough() -> None:
    assert len(EQUIVALENCES) >= 30


@pytest.mark.parametrize("case", range(len(EQUIVALENCES)), ids=[gold for gold, _, _ in EQUIVALENCES])
@pytest.mark.slow
def test_math_verify_equivalences(table_scores: list[Score], case: int) -> None:
    gold, right, wrong = EQUIVALENCES[case]
    got_right, got_wrong = table_scores[2 * case], table_scores[2 * case + 1]
    assert (got_right.correct, got_right.score, got_right.outcome) == (True, 1.0, "correct"), (gold, right)
    assert (got_wrong.correct, got_wrong.score) == (False, 0.0), (gold, wrong)
    assert got_wrong.outcome == "wrong_answer", (gold, wrong, got_wrong.outcome)


@pytest.mark.parametrize("case", range(len(MATH_VERIFY_SURPRISES)), ids=[out for _, out, _ in MATH_VERIFY_SURPRISES])
def test_math_verify_surprises_stay_as_documented(table_scores: list[Score], case: int) -> None:
    got = table_scores[2 * len(EQUIVALENCES) + case]
    assert (got.correct, got.outcome) == (False, MATH_VERIFY_SURPRISES[case][2])


@pytest.mark.parametrize(
    ("answer", "prepared"),
    [
        ("42", "$42$"),
        (" 3/4 ", "$3/4$"),
        (r"\frac{3}{4}", r"$\frac{3}{4}$"),
        (r"\boxed{5}", r"\boxed{5}"),
        ("$x+1$", "$x+1$"),
        (r"\(x\)", r"\(x\)"),
        (r"\$12.50", r"$\$12.50$"),  # an escaped dollar is not a delimiter
        ("2.5e-3", r"$2.5\times 10^{-3}$"),
        ("1E6", r"$1\times 10^{6}$"),
    ],
)
def test_prepare_gold(answer: str, prepared: str) -> None:
    assert prepare_gold(answer) == prepared


def test_each_gold_is_parsed_once_and_then_cached() -> None:
    scorer = MathVerify(workers=2)
    pool = shared_pool(2)
    before = pool.gold_parses
    golds = [r"\frac{7}{3}", "19"]
    scores = scorer.score(
        [item(golds[k % 2]) for k in range(200)], [r"\boxed{\frac{14}{6}}" if k % 2 == 0 else "19" for k in range(200)]
    )
    assert all(s.correct for s in scores)
    assert pool.gold_parses - before <= len(golds) * pool.size  # 200 items: at most once per gold per worker
    after_first = pool.gold_parses
    again = scorer.score([item(golds[0]), item(golds[1])], ["2", "19"])
    assert [s.correct for s in again] == [False, True]
    assert pool.gold_parses == after_first  # each gold is served from its own worker's cache


def test_unparseable_gold_scores_wrong_with_its_own_outcome() -> None:
    assert [(s.correct, s.outcome) for s in score_pairs(get_scorer("math_verify"), [("", "5"), ("5", "")])] == [
        (False, "gold_unparsed"),
        (False, "no_answer"),
    ]


# A tower of powers hangs sympy inside one C-level integer power (signal.alarm could not stop it
# either); deep nesting makes the LaTeX parser crawl.
PATHOLOGICAL = [r"\boxed{9^{9^{9^{9}}}}", "9^9^9", r"\boxed{" + r"\frac{1}{" * 500 + "2" + "}" * 500 + "}"]


def mixed_batch() -> tuple[list[Item], list[str]]:
    pairs = [
        ("3/4", r"\boxed{0.75}"),
        ("5", PATHOLOGICAL[0]),
        ("42", "42"),
        ("5", PATHOLOGICAL[1]),
        ("7", "8"),
        ("5", PATHOLOGICAL[2]),
        (r"\sqrt{2}", r"\boxed{\frac{2}{\sqrt{2}}}"),
    ]
    return [item(gold, item_id=str(k)) for k, (gold, _) in enumerate(pairs)], [out for _, out in pairs]


EXPECTED_MIXED = [
    (True, "correct"),
    (False, "timeout"),
    (True, "correct"),
    (False, "timeout"),
    (False, "wrong_answer"),
    (False, "timeout"),
    (True, "correct"),
]


@pytest.mark.slow
def test_pathological_outputs_time_out_as_wrong_in_bounded_time() -> None:
    scorer = MathVerify(timeout_s=1.0)
    items, outputs = mixed_batch()
    started = time.monotonic()
    scores = scorer.score(items, outputs)
    elapsed = time.monotonic() - started
    assert [(s.correct, s.outcome) for s in scores] == EXPECTED_MIXED
    assert all(s.score == 0.0 for s in scores if not s.correct)
    # three timeouts of 1 s each over 2+ workers, plus worker (re)starts; a hang would be minutes
    assert elapsed < 30, elapsed
    assert [s.correct for s in scorer.score([item("2")], ["1+1"])] == [True]  # the pool recovered


@pytest.mark.slow
def test_a_gold_that_hangs_is_tried_once_and_its_items_time_out() -> None:
    scorer = MathVerify(timeout_s=1.0)
    hanging = PATHOLOGICAL[2]
    started = time.monotonic()
    scores = scorer.score([item(hanging, item_id=str(k)) for k in range(6)] + [item("4")], ["2"] * 6 + ["4"])
    assert [s.outcome for s in scores] == ["timeout"] * 6 + ["correct"]
    assert time.monotonic() - started < 20  # six items share the gold: one timeout (per worker at most), not six


@pytest.mark.slow
def test_timeouts_work_from_a_worker_thread_as_from_the_main_thread() -> None:
    scorer = MathVerify(timeout_s=1.0)
    items, outputs = mixed_batch()
    in_main = scorer.score(items, outputs)
    with ThreadPoolExecutor(max_workers=1) as executor:
        in_thread = executor.submit(scorer.score, items, outputs).result(timeout=120)
    assert in_thread == in_main
    assert [(s.correct, s.outcome) for s in in_thread] == EXPECTED_MIXED


@pytest.mark.slow
def test_concurrent_calls_from_two_threads_get_their_own_results() -> None:
    scorer = get_scorer("math_verify")
    batches = [
        ([item(str(n)) for n in range(k, k + 20)], [f"\\boxed{{{n}}}" for n in range(k, k + 20)]) for k in (0, 100)
    ]
    with ThreadPoolExecutor(max_workers=2) as executor:
        results = list(executor.map(lambda batch: scorer.score(*batch), batches))
    assert all(s.correct for scores in results for s in scores)


@pytest.mark.slow
def test_dead_workers_are_replaced() -> None:
    """Workers killed from outside (say by the OOM killer) while idle or while starting."""
    scorer = MathVerify(workers=2)
    scorer.start()
    pool = shared_pool(2)
    assert len(pool.workers) == 2 and all(w.ready for w in pool.workers)
    for worker in pool.workers:
        worker.process.kill()
        worker.process.wait()
    pool.slots[0] = symbolic._start_worker(0)  # one still starting (not ready) when it dies
    pool.slots[0].process.kill()
    pool.slots[0].process.wait()
    assert [s.correct for s in scorer.score([item(str(k)) for k in range(8)], [str(k % 2) for k in range(8)])] == [
        k < 2 for k in range(8)
    ]


@pytest.mark.slow
def test_close_stops_the_workers_and_the_scorer_still_works() -> None:
    scorer = MathVerify(workers=1)
    assert scorer.score([item("1")], ["1"])[0].correct
    processes = [w.process for w in shared_pool(1).workers]
    scorer.close()
    assert processes and all(p.poll() is not None for p in processes)
    assert scorer.score([item("1")], ["1"])[0].correct
    scorer.close()


def test_empty_batch_and_length_mismatch() -> None:
    scorer = get_scorer("math_verify")
    assert scorer.score([], []) == []
    with pytest.raises(ValueError, match="2 items but 1 outputs"):
        scorer.score([item("1"), item("2")], ["1"])


# ---- exact_match, numeric, multiple_choice ----


@pytest.mark.parametrize(
    ("gold", "output", "correct", "outcome"),
    [
        ("Paris", "Paris", True, "correct"),
        ("Paris", "  paris \n", True, "correct"),
        ("New York City", "new   york\tcity", True, "correct"),
        ("Paris", "Paris.", False, "wrong_answer"),
        ("Paris", "London", False, "wrong_answer"),
        ("New York", "NewYork", False, "wrong_answer"),
        ("Paris", "   ", False, "no_answer"),
    ],
)
def test_exact_match(gold: str, output: str, correct: bool, outcome: str) -> None:
    [got] = get_scorer("exact_match").score([item(gold)], [output])
    assert (got.correct, got.score, got.outcome) == (correct, float(correct), outcome)


@pytest.mark.parametrize(
    ("gold", "output", "correct", "outcome"),
    [
        ("72", "Natalia sold 48/2 = 24 clips in May, so 48+24 = 72 in total.", True, "correct"),
        ("72", "The answer is 72.", True, "correct"),
        ("1,234", "She earns $1234", True, "correct"),
        ("1234", "She earns $1,234.00 in total", True, "correct"),
        ("#### 1,234,567", "1,234,567", True, "correct"),
        ("-5", "The temperature drops to -5 degrees", True, "correct"),
        ("0.5", "that is 1/2 = 0.5000001", True, "correct"),  # within 1e-6 relative
        ("10", "It is 10.0", True, "correct"),
        ("72", "48+24 = 72, so 73", False, "wrong_answer"),  # the last number counts
        ("5", "10-5", True, "correct"),  # a dash between numbers is not a minus sign
        ("-5", "10-5", False, "wrong_answer"),
        ("0.5", "0.5001", False, "wrong_answer"),
        ("4", "3,4", True, "correct"),  # a comma not followed by three digits separates numbers
        ("72", "I don't know", False, "no_answer"),
        ("72", "", False, "no_answer"),
    ],
)
def test_numeric(gold: str, output: str, correct: bool, outcome: str) -> None:
    [got] = get_scorer("numeric").score([item(gold)], [output])
    assert (got.correct, got.score, got.outcome) == (correct, float(correct), outcome)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("a 1,234,567.5 b", 1234567.5),
        ("x=\u22123", -3.0),
        ("1e3 apples", 1000.0),
        ("(2)-3", 3.0),
        ("none", None),
        (".5", 0.5),
    ],
)
def test_last_number(text: str, number: float | None) -> None:
    assert last_number(text) == number


def test_numeric_gold_without_a_number_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match="has no number"):
        get_scorer("numeric").score([item("seventy")], ["70"])


@pytest.mark.parametrize(
    ("output", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B) foo", "B"),
        ("B. because it is", "B"),
        ("[C]", "C"),
        ("The answer is B.", "B"),
        ("Answer: b", "B"),
        ("b", "B"),
        ("answer: (D)", "D"),
        ("The correct option is E", "E"),
        ("I think the answer is (C) here", "C"),
        ("Is it A? No: the answer is J", "J"),
        (r"\boxed{F}", "F"),
        ("Considering both, (A) is wrong and (G) fits", "G"),
        ("I am not sure", None),  # "I" is a valid letter but not a choice in prose
        ("A dog is an animal", None),
        ("The answer is a bit unclear", None),
        ("", None),
    ],
)
def test_chosen_letter(output: str, letter: str | None) -> None:
    assert chosen_letter(output) == letter


@pytest.mark.parametrize(
    ("gold", "meta", "output", "correct", "outcome"),
    [
        ("B", {}, "The answer is B.", True, "correct"),
        ("b", {}, "(B)", True, "correct"),
        ("(C)", {}, "C) 42", True, "correct"),
        ("B", {}, "Answer: c", False, "wrong_answer"),
        ("B", {}, "I cannot tell", False, "no_answer"),
        ("", {"label": 2}, "Answer: C", True, "correct"),
        ("", {"label": 2}, "Answer: B", False, "wrong_answer"),
        ("", {"label": "3"}, "D", True, "correct"),
        ("", {"label": 9}, "J", True, "correct"),
    ],
)
def test_multiple_choice(gold: str, meta: dict, output: str, correct: bool, outcome: str) -> None:
    [got] = get_scorer("multiple_choice").score([item(gold, meta)], [output])
    assert (got.correct, got.score, got.outcome) == (correct, float(correct), outcome)


def test_multiple_choice_without_a_gold_letter_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match="no gold letter"):
        get_scorer("multiple_choice").score([item("42")], ["A"])


# ---- the registry ----


def test_scorers_are_registered_by_name() -> None:
    for name in ("math_verify", "exact_match", "numeric", "multiple_choice"):
        scorer = get_scorer(name)
        assert isinstance(scorer, Scorer) and scorer.name == name and name in SCORERS


def test_an_unknown_scorer_names_the_known_ones() -> None:
    with pytest.raises(BenchError) as error:
        get_scorer("maths")
    message = str(error.value)
    assert "unknown scorer 'maths'" in message
    for name in ("exact_match", "math_verify", "multiple_choice", "numeric"):
        assert name in message
