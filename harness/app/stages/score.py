"""The score stage: every stored generation scored against its item (harness/evaluation/scoring.py),
into records.parquet and aggregates.parquet."""

from __future__ import annotations

from collections.abc import Callable

from plasticity_bench.harness.app.stages import timed
from plasticity_bench.harness.evaluation.few_shot import score_probe
from plasticity_bench.harness.evaluation.scoring import score_run
from plasticity_bench.harness.store import RunStore


def score(store: RunStore, on_scored: Callable[[], None] | None = None, again: bool = False) -> None:
    """Score the run unless done (`again`: also when done, as `bench score` does); `on_scored`:
    called once the aggregates are written (experiment trackers)."""
    if again or not store.stage_done("score"):
        timed(store, "score", lambda: (score_run(store), score_probe(store)))  # the probe reads the run's records
        if on_scored:
            on_scored()
