"""Scoring: generations → per-item records → per (step, family, slice) aggregates.

Reads only the run folder (items and generations), so a run can be re-scored without
re-generating, e.g. after a scorer is fixed.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.store import AGGREGATES_FILE, RECORDS_FILE, RunStore
from tasks.base import get_task

ALL = "all"  # the slice name of a whole family


def score_run(store: RunStore) -> pd.DataFrame:
    """Write records.parquet and aggregates.parquet; return the aggregates."""
    items = {item.id: item for item in store.items()}
    generations = store.read_generations()
    frames = []
    for (task_name, _step), group in generations.assign(task=generations.item_id.map(lambda i: items[i].task)).groupby(["task", "step"]):
        group_items = [items[i] for i in group.item_id]
        scores = get_task(task_name).score(group_items, list(group.output))
        frames.append(group.assign(
            family=[it.family for it in group_items], level=[it.level for it in group_items],
            score=[s.score for s in scores], correct=[s.correct for s in scores], outcome=[s.outcome for s in scores],
        ))
    records = pd.concat(frames, ignore_index=True).sort_values(["step", "item_id"], ignore_index=True)
    records = records[["item_id", "step", "family", "task", "level", "output", "score", "correct", "outcome"]]
    aggregates = aggregate(records)
    store.write_table(RECORDS_FILE, records)
    store.write_table(AGGREGATES_FILE, aggregates)
    return aggregates


def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """Accuracy in points (100·mean correct) with its standard error, per family and per slice."""
    rows = []
    sliced = records.assign(slice=records.task + "/" + records.level)
    for keys, group in [*sliced.groupby(["step", "family"]), *sliced.groupby(["step", "family", "slice"])]:
        step, family, *rest = keys
        n = len(group)
        p = float(group.correct.mean())
        rows.append({
            "step": int(step), "family": family, "slice": rest[0] if rest else ALL, "n": n,
            "score": 100 * p, "stderr": 100 * math.sqrt(p * (1 - p) / n) if n > 1 else float("nan"),
            "partial_score": 100 * float(group.score.mean()),
        })
    return pd.DataFrame(rows).sort_values(["family", "slice", "step"], ignore_index=True)
