"""Throughput of the scorers: 1000 GSM8K-style answers and 500 MATH-style LaTeX answers.

The items are generated here (seeded): GSM8K-style golds are integers (some written ``1,234``),
outputs a few worked steps ending in the answer; MATH-style golds are LaTeX (fractions, roots,
multiples of pi, intervals, polynomials, percentages, degrees, integers), outputs a sentence
ending in ``\\boxed{...}`` written in an equivalent but different form. About 70 % of outputs are
right. Each set is scored by:

- ``math_verify`` with 1 worker process and with N: "fresh" (workers started and ready, no gold
  of the set parsed yet) and "golds cached" (workers that scored the same items once, scoring
  other outputs for them, as at a later checkpoint); the workers' start is timed separately;
- math-verify called directly in this process, one item after another, timeouts off (what the
  scorer would cost without its time bound; it cannot stop a hang);
- ``numeric`` on the GSM8K-style set, for scale.

The count of outputs judged correct is checked against what the generator intended. Prints a
markdown report; ``--output PATH`` also writes it to a file.

Usage: python benchmarks/bench_scorers.py [--repeats 3] [--workers N (compared with 1)] [--output benchmarks/results/scorers.md]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plasticity_bench.harness.core.items import Item  # noqa: E402 (after the sys.path insert)
from plasticity_bench.tasks.scorers import Scorer, get_scorer  # noqa: E402
from plasticity_bench.tasks.scorers.symbolic import MathVerify, close_pool, default_workers, prepare_gold  # noqa: E402

RIGHT_SHARE = 0.7


def with_commas(n: int, rng: random.Random) -> str:
    return f"{n:,}" if n >= 1000 and rng.random() < 0.5 else str(n)


def gsm8k_items(n: int, output_seed: int = 0) -> tuple[list[Item], list[str], int]:
    """The items are the same for every `output_seed`; which outputs are right, and how they are written, vary with it."""
    out_rng = random.Random(output_seed)
    items, outputs, right = [], [], 0
    for k in range(n):
        item_rng = random.Random(f"gsm/{k}")
        a, b, c = item_rng.randint(2, 400), item_rng.randint(2, 400), item_rng.randint(2, 30)
        gold = (a + b) * c
        items.append(Item(f"gsm-{k}", "math", "gsm8k_like", "test", "", "", with_commas(gold, item_rng)))
        is_right = out_rng.random() < RIGHT_SHARE
        right += is_right
        answer = gold if is_right else gold + out_rng.choice([-1, 1]) * out_rng.randint(1, 50)
        shown = with_commas(answer, out_rng)
        ending = out_rng.choice([f"The answer is {shown}.", f"#### {shown}", f"So she has ${shown} left."])
        outputs.append(
            f"First she buys {a} + {b} = {a + b} items. Each costs {c} dollars, so {a + b} * {c} = {with_commas(answer, out_rng)}. {ending}"
        )
    return items, outputs, right


def math_case(rng: random.Random) -> tuple[str, str, str]:
    """(gold, an equivalent output form, a wrong one)."""
    kind = rng.randrange(8)
    p, q = rng.randint(1, 40), rng.randint(2, 40)
    if kind == 0:
        while math.gcd(p, q) != 1:
            p += 1
        return rf"\frac{{{p}}}{{{q}}}", rf"\frac{{{2 * p}}}{{{2 * q}}}", rf"\frac{{{p + 1}}}{{{q}}}"
    if kind == 1:
        b = rng.choice([2, 3, 5, 6, 7])
        return rf"{p}\sqrt{{{b}}}", rf"\sqrt{{{p * p * b}}}", rf"{p + 1}\sqrt{{{b}}}"
    if kind == 2:
        return rf"\frac{{{p}\pi}}{{{q}}}", rf"\frac{{{p}}}{{{q}}}\pi", rf"\frac{{{p}}}{{{q + 1}}}\pi"
    if kind == 3:
        return rf"({-p}, {q}]", rf"\left({-p},{q}\right]", rf"[{-p},{q}]"
    if kind == 4:
        return f"x^2+{p + q}x+{p * q}", f"(x+{p})(x+{q})", f"(x+{p})(x+{q + 1})"
    if kind == 5:
        return rf"{p}\%", rf"{p}\%", rf"{p + 1}\%"
    if kind == 6:
        return rf"{p * 5}^\circ", f"{p * 5}", f"{p * 5 + 5}"
    return str(p * q), str(p * q), str(p * q + 1)


def math_items(n: int, output_seed: int = 0) -> tuple[list[Item], list[str], int]:
    """The items are the same for every `output_seed`; which outputs are right varies with it."""
    out_rng = random.Random(output_seed)
    items, outputs, right = [], [], 0
    for k in range(n):
        gold, equivalent, wrong = math_case(random.Random(f"math/{k}"))
        items.append(Item(f"math-{k}", "math", "math_like", "test", "", "", gold))
        is_right = out_rng.random() < RIGHT_SHARE
        right += is_right
        outputs.append(
            f"We simplify step by step and check the conditions. Therefore the answer is $\\boxed{{{equivalent if is_right else wrong}}}$."
        )
    return items, outputs, right


def direct_math_verify(items: list[Item], outputs: list[str]) -> int:
    """math-verify in this process, no time bound: each distinct gold parsed once."""
    from math_verify import parse, verify

    golds: dict[str, list] = {}
    correct = 0
    for item, output in zip(items, outputs):
        text = prepare_gold(item.answer)
        if text not in golds:
            golds[text] = parse(text, parsing_timeout=None)
        correct += bool(golds[text]) and verify(golds[text], parse(output, parsing_timeout=None), timeout_seconds=None)
    return correct


def direct_in_child(label: str) -> tuple[float, int]:
    """`direct_math_verify` on one set in a fresh interpreter (sympy's caches cold, as in a fresh worker), after a warm-up item."""
    child = subprocess.run(
        [sys.executable, __file__, "--direct-child", label], capture_output=True, text=True, check=True
    )
    elapsed, correct = json.loads(child.stdout.strip().splitlines()[-1])
    return elapsed, correct


def machine_description() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"- CPU: {models[0] if models else platform.processor()}, {os.cpu_count()} cores, {memory} GiB, no GPU",
        f"- Python {platform.python_version()}, math-verify {importlib.metadata.version('math-verify')}, "
        f"sympy {importlib.metadata.version('sympy')}, {platform.system()} {platform.release()}",
        f"- load average (1/5/15 min) when the benchmark started: {load} (other work on the cores slows every row alike)",
    ]


class Variant(NamedTuple):
    name: str
    run: Callable[[], tuple[float, int]]  # (seconds, judged correct)
    intended: int


def variants(label: str, worker_counts: list[int]) -> list[Variant]:
    """The ways one set is scored; each `run` does its own untimed set-up."""
    items, outputs, intended = SETS[label](0)
    _, other_outputs, other_intended = SETS[label](1)  # the same items, other outputs: a later checkpoint

    def timed(scorer: Scorer, answers: list[str]) -> tuple[float, int]:
        started = time.perf_counter()
        correct = sum(score.correct for score in scorer.score(items, answers))
        return time.perf_counter() - started, correct

    def fresh(workers: int) -> tuple[float, int]:  # workers started and ready, no gold of the set cached yet
        scorer = MathVerify(workers=workers)
        scorer.close()
        scorer.start()
        return timed(scorer, outputs)

    def golds_cached(
        workers: int,
    ) -> tuple[float, int]:  # fresh workers that have scored the set once, then other outputs
        scorer = MathVerify(workers=workers)
        scorer.close()
        scorer.start()
        scorer.score(items, outputs)
        return timed(scorer, other_outputs)

    found = []
    for workers in worker_counts:
        processes = f"{workers} worker process{'es' if workers > 1 else ''}"
        found += [
            Variant(f"`math_verify`, {processes}, fresh", lambda w=workers: fresh(w), intended),
            Variant(
                f"`math_verify`, {processes}, golds cached: the same items, other outputs (a later checkpoint)",
                lambda w=workers: golds_cached(w),
                other_intended,
            ),
        ]
    found.append(
        Variant("math-verify in one process, sequential, no time bound", lambda: direct_in_child(label), intended)
    )
    if label.startswith("GSM8K"):
        found.append(Variant("`numeric`", lambda: timed(get_scorer("numeric"), outputs), intended))
    return found


def row(label: str, name: str, n: int, times: list[float], correct: int, intended: int) -> str:
    median = statistics.median(times)
    return f"| {label} | {name} | {median:.2f} | {n / median:,.0f} | {n / min(times):,.0f} | {correct} (intended {intended}) |"


SETS: dict[str, Callable[[int], tuple[list[Item], list[str], int]]] = {
    "GSM8K-style, 1000": lambda output_seed: gsm8k_items(1000, output_seed),
    "MATH-style LaTeX, 500": lambda output_seed: math_items(500, output_seed),
}
WARM_UP = ([Item("warm", "math", "t", "x", "", "", "1")], ["1"])


def direct_child(label: str) -> None:
    """The in-process row's child: one warm-up item, then the set, timed; prints [seconds, judged correct]."""
    items, outputs, _ = SETS[label](0)
    direct_math_verify(*WARM_UP)
    started = time.perf_counter()
    correct = direct_math_verify(items, outputs)
    print(json.dumps([time.perf_counter() - started, correct]))


def start_times(workers: int, repeats: int) -> list[float]:
    """Seconds until WORKERS math-verify worker processes are started and ready, once per repeat."""
    scorer = MathVerify(workers=workers)
    starts = []
    for _ in range(repeats):
        scorer.close()
        started = time.perf_counter()
        scorer.start()
        starts.append(time.perf_counter() - started)
    scorer.close()
    return starts


def timed_rows(worker_counts: list[int], repeats: int) -> list[str]:
    """Every set under every variant, REPEATS times in turns; one table row each."""
    table = [(label, len(SETS[label](0)[0]), variant) for label in SETS for variant in variants(label, worker_counts)]
    times: list[list[float]] = [[] for _ in table]
    correct = [0] * len(table)
    for _ in range(repeats):  # the rows take turns, so that background load hits all alike
        for k, (_, _, variant) in enumerate(table):
            seconds, correct[k] = variant.run()
            times[k].append(seconds)
    for count in worker_counts:
        close_pool(count)
    return [
        row(label, variant.name, n, times[k], correct[k], variant.intended)
        for k, (label, n, variant) in enumerate(table)
    ]


def report_lines(repeats: int, workers: int, rows: list[str], starts: list[float], machine: list[str]) -> list[str]:
    return [
        "# Scorer throughput",
        "",
        f"Generated by `python benchmarks/bench_scorers.py --repeats {repeats} --workers {workers}`: seeded synthetic items "
        f'(about {RIGHT_SHARE:.0%} of outputs right), {repeats} repeats taken in turns (all rows, then all rows again), median. "fresh": workers started and ready, '
        'no gold of the set parsed yet; "golds cached": workers that have scored the same items once, now scoring other '
        "outputs for them (other right/wrong choices and wording), as for a later checkpoint. The in-process row runs "
        "each repeat in a new interpreter, warmed up on one item, so that sympy's caches are as cold as a fresh worker's.",
        "",
        "| items | scorer | median s | median items/s | best items/s | judged correct |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Starting the {workers} math-verify worker processes (`MathVerify.start()`, until all are ready): median {statistics.median(starts):.2f} s "
        f"(best {min(starts):.2f} s); they then stay up for later calls.",
        "",
        "## Machine",
        "",
        *machine,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--output", type=Path)
    parser.add_argument("--direct-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    if args.direct_child:
        direct_child(args.direct_child)
        return
    machine = machine_description()

    worker_counts = sorted({1, args.workers})
    starts = start_times(args.workers, args.repeats)
    rows = timed_rows(worker_counts, args.repeats)
    report = "\n".join(report_lines(args.repeats, args.workers, rows, starts, machine)) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)


if __name__ == "__main__":
    main()
