"""Everything a suite file needs, checked at once: `bench suites --check FILE`, and the checks
`bench run` makes before it writes anything.

`check_suite` reads every evaluation and training set separately and gathers every problem (one
line each) instead of stopping at the first: the file's keys, each set's source, scorer and
settings (tasks/suites/compat.py), then each set's items (its data file, hub dataset or lm-eval
task, and every gold its scorer must read). An optional set whose data is not here is skipped,
as a run would skip it.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import TASKS, get_task
from plasticity_bench.tasks.suites import EvalSet, Suite, TrainSet, _load, parse_suite, suite_file
from plasticity_bench.tasks.suites.compat import check_items, unique
from plasticity_bench.tasks.suites.few_shot import probe_problems
from plasticity_bench.tasks.suites.items import training_items

GENERATED_PROBE = 16  # training items a generator source is asked for: it makes as many as a run wants


@dataclass(frozen=True)
class SetReport:
    """One row of `bench suites --check`."""

    part: str  # "eval" or "train"
    slice: str
    family: str
    role: str  # target / held-out; easy / hard for training sets
    source: str  # the source kind
    items: str  # the item count; "generated" for a generator's training set; "-" when not loaded
    scorer: str
    ignored: tuple[str, ...]
    status: str = "ok"  # ok, error, or "skipped: why" (an optional set whose data is not here)


@dataclass
class SuiteCheck:
    name: str
    path: Path
    sets: list[SetReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_suite(name_or_path: str) -> SuiteCheck:
    """Every problem of the suite (its file is found first: a missing file is a BenchError)."""
    path = suite_file(name_or_path)
    data = path.read_bytes()
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError:
        try:
            _load(path)  # its one-line error says where the YAML breaks
        except BenchError as error:
            return SuiteCheck(path.stem, path, problems=[str(error)])
    problems: list[str] = []
    try:
        suite = parse_suite(raw, path, hashlib.sha256(data).hexdigest(), problems)
    except BenchError as error:  # not even a mapping: nothing else can be read
        return SuiteCheck(path.stem, path, problems=[str(error)])
    report = SuiteCheck(suite.name, path, problems=problems)
    loaded = [check_eval_set(suite, eval_set, report) for eval_set in suite.eval_sets]
    targets = [row for row, eval_set in zip(report.sets, suite.eval_sets) if eval_set.role == "target"]
    if targets and all(row.status.startswith("skipped") for row in targets):
        report.problems.append(f"suite {suite.name}: none of its target sets is available here")
    exclude = frozenset(item.prompt for items in loaded for item in items)
    report.problems.extend(probe_problems(suite, loaded, exclude))  # the few-shot probe (few_shot.py)
    for side, train in (("easy", suite.easy), ("hard", suite.hard)):
        if train is not None:
            check_train_set(suite, train, side, exclude, report)
    report.problems.extend(foundation_problems(suite))
    report.problems = unique(report.problems)
    return report


def check_eval_set(suite: Suite, eval_set: EvalSet, report: SuiteCheck) -> list[Item]:
    source = eval_set.source
    items: list[Item] = []
    try:
        items = source.eval_items(eval_set.name, eval_set.split, eval_set.family, suite.eval_seed)
    except BenchError as error:  # as a run would: an optional set whose data is not here is skipped
        status = f"skipped: {error}" if eval_set.optional else "error"
        report.problems.extend([] if eval_set.optional else [str(error)])
    else:
        try:  # a gold the scorer cannot read is an error even in an optional set: its data is here, and wrong
            check_items(eval_set.scorer, items, f"{source.where} ({eval_set.slice})")
            status = "ok"
        except BenchError as error:
            items, status = [], "error"
            report.problems.append(str(error))
    report.sets.append(
        SetReport(
            "eval",
            eval_set.slice,
            eval_set.family,
            eval_set.role,
            source.name,
            str(len(items)) if items else "-",
            eval_set.scorer,
            eval_set.ignored,
            status,
        )
    )
    return items


def check_train_set(suite: Suite, train: TrainSet, side: str, exclude: frozenset[str], report: SuiteCheck) -> None:
    generated = train.source.generated_per_seed
    try:
        items = training_items(suite, train, GENERATED_PROBE if generated else sys.maxsize, 0, exclude)
        count, status = ("generated" if generated else str(len(items))), "ok"
    except BenchError as error:
        count, status = "-", "error"
        report.problems.append(str(error))
    report.sets.append(
        SetReport(
            "train",
            f"{train.name}/{train.split}",
            "",
            side,
            train.source.name,
            count,
            train.scorer,
            train.ignored,
            status,
        )
    )


def foundation_problems(suite: Suite) -> list[str]:
    """The organism's pre-training mix names generator tasks and levels that exist."""
    problems = []
    for task, level, _ in suite.foundation:
        if task not in TASKS:
            problems.append(
                f"suite {suite.path.name}, foundation: unknown generator task {task!r}; "
                f"known: {', '.join(TASKS.names())}"
            )
        elif level not in get_task(task).levels:
            problems.append(
                f"suite {suite.path.name}, foundation: task {task} has no level {level!r}; "
                f"levels: {', '.join(get_task(task).levels)}"
            )
    return problems


def check_training(suite: Suite, n: int, seed: int, exclude: frozenset[str]) -> None:
    """What `bench run` checks before it writes anything, beyond the evaluation sets: the training
    sets' items (data, difficulty split, golds; none of `exclude`, the evaluation prompts) and the
    pre-training mix; the first problem is raised."""
    for train in (suite.easy, suite.hard):
        if train is not None:
            probe = min(n, GENERATED_PROBE) if train.source.generated_per_seed else n
            training_items(suite, train, probe, seed, exclude)
    problems = foundation_problems(suite)
    if problems:
        raise BenchError(problems[0])


def format_check(report: SuiteCheck) -> list[str]:
    """What `bench suites --check` prints: one row per set, then why each skipped set is skipped."""
    header = ("", "slice", "family", "role", "source", "items", "scorer", "status", "ignores")
    rows = [
        (
            s.part,
            s.slice,
            s.family or "-",
            s.role,
            s.source,
            s.items,
            s.scorer,
            s.status.split(":")[0],
            ", ".join(s.ignored) or "-",
        )
        for s in report.sets
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"suite {report.name} ({report.path})"]
    for row in [header, *rows]:
        cells = [cell.rjust(width) if i == 5 else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    lines += [
        f"  {s.slice} is optional and skipped here: {s.status.split(': ', 1)[1]}"
        for s in report.sets
        if s.status.startswith("skipped")
    ]
    return lines
