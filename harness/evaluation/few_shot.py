"""The few-shot recovery probe, scored (tasks/suites/few_shot.py says what the probe is).

A run whose suite declares `few_shot` on a set keeps the probe apart from the suite's own results,
so no score, gate, claim or study of the suite moves (RUN/few_shot/):

    items.parquet        the probe's items: the set's first `few_shot_items` items, each with its
                         k solved examples in meta["few_shot_examples"]
    prompts.parquet      every probe prompt as the model saw it
    step-NNNNNN.parquet  one checkpoint's completions (item_id, step, sample, output)
    records.parquet      per item, checkpoint and sample: the zero-shot record of the item (shots 0,
                         copied from RUN/records.parquet) and its few-shot one (shots k), with the
                         columns of records.parquet plus `shots` and `slice`
    aggregates.parquet   per step, family, slice (`all`: the family) and shots: n and score in
                         points with its standard error, as aggregates.parquet computes them

`recovery` turns them into what the report says per family: how far the zero-shot and the few-shot
scores of the same items moved from the start, and the share of the zero-shot drop that the
examples recover, (few-shot change − zero-shot change) / zero-shot drop: near 100 % a drop of lost
format, near 0 % one of lost skill. A model that the examples make worse at the start (one that
cannot use context, as the embedded organism, pre-trained on one example per sequence) gets no
share: its few-shot curve measures something else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.evaluation.runs import per_item, slice_column
from plasticity_bench.harness.evaluation.scoring import (
    RECORD_COLUMNS,
    aggregate,
    score_group,
    scored_rows,
    scorers_by_slice,
)
from plasticity_bench.harness.evaluation.stats import paired_bootstrap
from plasticity_bench.harness.store import RECORDS_FILE, RunStore, write_parquet_atomic
from plasticity_bench.tasks.prompting import ITEM_EXAMPLES

FOLDER = "few_shot"  # RUN/few_shot/
ITEMS = "items.parquet"
PROMPTS = "prompts.parquet"
RECORDS = "records.parquet"
AGGREGATES = "aggregates.parquet"
RESAMPLES = 2_000  # bootstrap resamples of the recovered share's interval


def folder(root: Path) -> Path:
    return root / FOLDER


def generation_file(root: Path, step: int) -> Path:
    return folder(root) / f"step-{step:06d}.parquet"


def read_items(root: Path) -> list[Item]:
    """The probe's items of a run folder ([] when the run has no probe)."""
    path = folder(root) / ITEMS
    if not path.is_file():
        return []
    frame = pd.read_parquet(path)
    return [Item(**{**row, "meta": json.loads(row["meta"])}) for row in frame.to_dict("records")]


def shots_of(item: Item) -> int:
    return len(item.meta.get(ITEM_EXAMPLES, ()))


def score_probe(store: RunStore) -> pd.DataFrame | None:
    """Write RUN/few_shot/records.parquet and aggregates.parquet from the probe's completions and the
    run's records (which `score_run` wrote first); return the aggregates (None: the run has no probe)."""
    items = {item.id: item for item in read_items(store.root)}
    files = sorted(folder(store.root).glob("step-*.parquet"))
    if not items or not files:
        return None
    generations = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    scorers = scorers_by_slice(store.metadata())
    frames = []
    for (slice_, _step), group in generations.assign(slice=generations.item_id.map(lambda i: items[i].slice)).groupby(
        ["slice", "step"], sort=True
    ):
        group_items = [items[i] for i in group.item_id]
        scores = score_group(scorers[slice_], group_items, list(group.output), group)
        frames.append(scored_rows(group, group_items, scores, "").assign(shots=[shots_of(it) for it in group_items]))
    few = pd.concat(frames, ignore_index=True)[[*RECORD_COLUMNS, "shots"]]
    zero = zero_shot_records(store, set(items), set(few.step))
    records = pd.concat([zero, few], ignore_index=True).sort_values(["step", "item_id", "shots", "sample"])
    records = records.reset_index(drop=True).assign(slice=lambda frame: slice_column(frame))
    aggregates = pd.concat(
        [aggregate(part).assign(shots=int(part.shots.max())) for _, part in records.groupby("shots")], ignore_index=True
    )
    write_parquet_atomic(records, folder(store.root) / RECORDS)
    write_parquet_atomic(aggregates, folder(store.root) / AGGREGATES)
    return aggregates


def zero_shot_records(store: RunStore, ids: set[str], steps: set[int]) -> pd.DataFrame:
    """The run's own (zero-shot) records of the probed items, at the probed steps, with shots 0."""
    records = store.read_table(RECORDS_FILE)
    zero = records[records.item_id.isin(ids) & records.step.isin(steps)]
    missing = ids - set(zero.item_id)
    if missing:
        raise BenchError(
            f"{store.root}: the few-shot probe's item {sorted(missing)[0]} has no zero-shot record; "
            f"re-score the run (`bench score {store.root}`)"
        )
    return zero[RECORD_COLUMNS].assign(shots=0)


def read_probe(root: Path) -> pd.DataFrame | None:
    """A run's probe records (records.parquet of RUN/few_shot/), or None when it has none."""
    path = folder(root) / RECORDS
    return pd.read_parquet(path) if path.is_file() else None


def recovery(records: pd.DataFrame, start: int, final: int, seed: int = 0) -> pd.DataFrame:
    """Per family (in the records' order), between steps `start` and `final`: the probed items' zero-shot
    and few-shot scores (points), their changes, and what the examples recover, in points (paired over
    items, with its 95% bootstrap interval) and as a share of the zero-shot drop. The share is NaN where
    the zero-shot score did not drop, or where the examples make the starting model worse (`usable`
    false: the few-shot score at the start is below the zero-shot one, its 95% interval wholly below 0)."""
    rows = []
    scored = per_item(records)
    for family in dict.fromkeys(scored.family):
        part = scored[scored.family == family].assign(shown=lambda frame: frame.shots > 0)
        table = part.pivot_table(index="item_id", columns=["shown", "step"], values="accuracy", aggfunc="mean")
        shots = max(int(s) for s in part.shots.unique())  # a family whose sets show different k: the largest
        needed = [(False, start), (False, final), (True, start), (True, final)]
        if any(key not in table.columns for key in needed):
            continue  # a probe not scored at both checkpoints
        cells = [100 * table[key].to_numpy(dtype=float) for key in needed]
        rows.append(recovery_row(str(family), shots, cells[0], cells[1], cells[2], cells[3], seed=seed))
    return pd.DataFrame(rows)


def recovery_row(
    family: str,
    shots: int,
    zero_start: np.ndarray,
    zero_final: np.ndarray,
    few_start: np.ndarray,
    few_final: np.ndarray,
    seed: int = 0,
) -> dict[str, object]:
    """One family's row of `recovery` from its items' scores (points) in the four cells."""
    zero_change, few_change = zero_final - zero_start, few_final - few_start
    recovered = paired_bootstrap(zero_change.tolist(), few_change.tolist(), resamples=RESAMPLES, seed=seed)
    at_start = paired_bootstrap(zero_start.tolist(), few_start.tolist(), resamples=RESAMPLES, seed=seed)
    drop = -float(zero_change.mean())
    # A starting model the examples make worse (its interval wholly below 0) cannot use them: its few-shot
    # curve says how it copes with a longer context, not whether a later drop was one of format.
    usable = at_start.high >= 0
    return {
        "family": family,
        "shots": shots,
        "n": len(zero_start),
        "zero_start": float(zero_start.mean()),
        "zero_final": float(zero_final.mean()),
        "zero_change": float(zero_change.mean()),
        "few_start": float(few_start.mean()),
        "few_final": float(few_final.mean()),
        "few_change": float(few_change.mean()),
        "recovered": recovered.difference,  # points: few-shot change − zero-shot change
        "recovered_low": recovered.low,
        "recovered_high": recovered.high,
        "recovered_share": recovered.difference / drop if drop > 0 and usable else math.nan,
        "start_effect": at_start.difference,  # points: few-shot − zero-shot at the start
        "start_effect_low": at_start.low,
        "start_effect_high": at_start.high,
        "usable": bool(usable),
    }
