"""Scoring: generations → per-sample records → per (step, family, slice) aggregates.

Reads only the run folder (items, generations, and run.json's record of which scorer each set
uses), so a run can be re-scored without re-generating, e.g. after a scorer is fixed. Thinking
text (`<think>…</think>`) is removed before a scorer sees an output; records keep the raw output.

Repeated sampling: a set with n samples per item has n records per item and checkpoint. An
item's accuracy is the mean over its samples (avg@n); the set's score is the mean over items, and
its standard error is **clustered by item**: the n samples of one item are not independent
(Miller 2024, "Adding Error Bars to Evals"), so the error is that of the per-item means,
SE = sqrt(Σ_i (ȳ_i − ȳ)²) / N over N items. With n = 1 this is sqrt(p(1 − p) / N), the binomial
error used before repeated sampling existed. pass@n (the unbiased estimator with k = n) is
reported beside it, and for executed programs the reliability (share of attempts whose program
ran to completion, right or wrong).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from plasticity_bench.harness.core.errors import BenchError, warn
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.evaluation.lmeval_sets import Note, metric_means, score_lmeval
from plasticity_bench.harness.evaluation.results_file import write_results_files
from plasticity_bench.harness.evaluation.runs import slice_column
from plasticity_bench.harness.sandbox.passk import pass_at_k
from plasticity_bench.harness.store import AGGREGATES_FILE, RECORDS_FILE, RunStore
from plasticity_bench.tasks.base import get_task
from plasticity_bench.tasks.scorers import SCORERS, get_scorer

ALL = "all"  # the slice name of a whole family
# metrics: every per-document metric of an lm-eval set (JSON; "" for other sets: harness/evaluation/lmeval_sets.py)
# answer: what the scorer parsed out of the output (Score.answer; "" when nothing could be parsed)
RECORD_COLUMNS = [
    "item_id",
    "step",
    "family",
    "task",
    "level",
    "output",
    "score",
    "correct",
    "outcome",
    "sample",
    "metrics",
    "answer",
]
RAN_TO_COMPLETION = ("pass", "wrong_answer")  # sandbox outcomes of a program that ran, right or wrong


def scorers_by_slice(meta: dict[str, Any]) -> dict[str, str]:
    """slice → scorer name, from run.json's suite summary."""
    return {s["slice"]: s["scorer"] for s in meta["suite_spec"]["sets"]}


def scored_rows(group: pd.DataFrame, items: Sequence[Item], scores: Sequence[Any], metrics: Any) -> pd.DataFrame:
    """A group of generations with its items' labels and their scores: the rows of records.parquet."""
    return group.assign(
        family=[it.family for it in items],
        task=[it.task for it in items],
        level=[it.level for it in items],
        score=[s.score for s in scores],
        correct=[s.correct for s in scores],
        outcome=[s.outcome for s in scores],
        metrics=metrics,
        answer=[s.answer for s in scores],
    )


def score_run(store: RunStore) -> pd.DataFrame:
    """Write records.parquet and aggregates.parquet; return the aggregates."""
    items = {item.id: item for item in store.items()}
    scorers = scorers_by_slice(store.metadata())
    generations = store.read_generations()
    unknown = sorted(set(generations.item_id) - set(items))
    if unknown:
        raise BenchError(
            f"{store.root} has generations for items it does not hold (e.g. {unknown[0]}); re-generate the run"
        )
    slices = generations.item_id.map(lambda i: items[i].slice)
    frames = []
    notes: dict[str, Note] = {}
    for (slice_, _step), group in generations.assign(slice=slices).groupby(["slice", "step"], sort=True):
        group_items = [items[i] for i in group.item_id]
        metrics = [""] * len(group)
        if SCORERS.get(scorers[slice_]).scored_with_its_source:  # lm-eval's own code, from the stored data
            scores, metrics, note = score_lmeval(group_items, list(group.output), group)
            if note is not None:
                notes.setdefault(slice_, Note(note.reason, always=note.always)).edited += note.edited
        else:
            scores = score_group(scorers[slice_], group_items, list(group.output), group)
        frames.append(scored_rows(group, group_items, scores, metrics))
    for slice_, note in notes.items():
        if note.edited or note.always:
            edited = f"; {note.edited} stored output(s) differ from the generated ones" if note.edited else ""
            warn(f"lm-eval set {slice_}: not re-scored from its outputs: {note.reason}{edited}")
    records = pd.concat(frames, ignore_index=True).sort_values(["step", "item_id", "sample"], ignore_index=True)
    records = records[RECORD_COLUMNS]
    executed = {slice_ for slice_ in set(slices) if executes_programs(scorers[slice_], slice_)}
    aggregates = aggregate(records, executed)
    store.write_table(RECORDS_FILE, records)
    store.write_table(AGGREGATES_FILE, aggregates)
    write_results_files(store, aggregates)  # RUN/results/step-N.json, lm-eval's results file per checkpoint
    return aggregates


def score_group(scorer: str, items: list[Item], outputs: list[str], generations: pd.DataFrame) -> list[Any]:
    precomputed = (
        list(generations.external_score) if "external_score" in generations else None
    )  # lm-eval's own, per document
    return get_scorer(scorer).score_generations(items, outputs, precomputed)


def executes_programs(scorer: str, slice_: str) -> bool:
    if scorer == "task":
        return get_task(slice_.split("/")[0]).executes_programs
    return SCORERS.get(scorer).executes_programs


def aggregate(records: pd.DataFrame, executed: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """Accuracy in points per family and per slice: avg@n with its item-clustered standard error,
    the graded score, pass@n and, for slices whose programs were executed (`executed`), the
    reliability: the share of attempts whose program ran to completion, right or wrong."""
    if "sample" not in records:
        records = records.assign(sample=0)
    rows = []
    sliced = records.assign(slice=slice_column(records))
    for keys, group in [*sliced.groupby(["step", "family"]), *sliced.groupby(["step", "family", "slice"])]:
        step, family, *rest = keys
        per_item = group.groupby("item_id").agg(
            accuracy=("correct", "mean"),
            graded=("score", "mean"),
            samples=("correct", "size"),
            correct=("correct", "sum"),
        )
        outcomes = group.outcome[group.slice.isin(executed)]
        rows.append(
            {
                "step": int(step),
                "family": family,
                "slice": rest[0] if rest else ALL,
                "n": len(per_item),
                "score": 100 * float(per_item.accuracy.mean()),
                "stderr": 100 * clustered_stderr(per_item.accuracy.to_numpy()),
                "partial_score": 100 * float(per_item.graded.mean()),
                "samples": int(per_item.samples.max()),
                "pass_at_n": 100
                * float(
                    np.mean([pass_at_k(int(s), int(c), int(s)) for s, c in zip(per_item.samples, per_item.correct)])
                ),
                "reliability": 100 * float(outcomes.isin(RAN_TO_COMPLETION).mean()) if len(outcomes) else float("nan"),
                "metrics": metric_means(group)
                if rest
                else "",  # an lm-eval slice: every metric's mean, in points (JSON)
            }
        )
    return pd.DataFrame(rows).sort_values(["family", "slice", "step"], ignore_index=True)


def clustered_stderr(item_means: np.ndarray) -> float:
    """Standard error of the mean over items of per-item mean scores, clustered by item:
    sqrt(Σ_i (ȳ_i − ȳ)²) / N (no small-sample correction, so n = 1 gives sqrt(p(1−p)/N))."""
    n = len(item_means)
    if n <= 1:
        return float("nan")
    if np.isin(item_means, (0.0, 1.0)).all():  # one sample per item: the binomial form, as runs always computed it
        p = float(item_means.mean())
        return math.sqrt(p * (1 - p) / n)
    return math.sqrt(float(np.sum((item_means - item_means.mean()) ** 2))) / n
