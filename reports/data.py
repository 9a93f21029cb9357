"""What a report reads from each run folder, checked once: scored, complete, and (for a
multi-run report) evaluated on the same items as the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.evaluation.kl import read_kl
from plasticity_bench.harness.evaluation.roles import held_out_families
from plasticity_bench.harness.evaluation.roles import same_skill_slices as same_skill_of
from plasticity_bench.harness.evaluation.runs import (
    check_same_items,
    families_in_order,
    per_item,
    read_scored_run,
    results_from_records,
    roles_of,
    suite_summary,
)
from plasticity_bench.harness.evaluation.scoring import ALL
from plasticity_bench.harness.store import (
    AGGREGATES_FILE,
    ITEMS_FILE,
    MANIFEST,
    TRAIN_LOG_FILE,
    CheckpointRecord,
    RunStore,
    read_manifest,
)


def read_checkpoints(root: Path) -> tuple[CheckpointRecord, ...]:
    """The run's checkpoint manifest; empty when it was deleted along with the models."""
    return tuple(read_manifest(root / "checkpoints")) if (root / "checkpoints" / MANIFEST).is_file() else ()


@dataclass(frozen=True)
class RunData:
    root: Path
    label: str  # the method, or method and folder when two runs share a method
    meta: dict[str, Any]
    aggregates: pd.DataFrame
    records: pd.DataFrame
    items: pd.DataFrame  # eval_items.parquet: prompts and expected answers
    checkpoints: tuple[CheckpointRecord, ...]  # empty when the manifest was deleted with the models
    kl: pd.DataFrame | None = None  # kl_to_start.parquet (step, kl, n); None for `bench eval` runs (no training data)
    # train_log.parquet: one row per training step; None for `bench eval` runs without a Trainer log
    train_log: pd.DataFrame | None = None

    @property
    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.aggregates.step.unique())

    @property
    def start_step(self) -> int:
        return self.steps[0]

    @property
    def final_step(self) -> int:
        return self.steps[-1]

    @property
    def suite(self) -> dict[str, Any]:
        """The run's suite as run.json records it: families, target family and slice, sets."""
        return suite_summary(self.meta)

    @property
    def target_family(self) -> str:
        """The family post-training targets (the suite's target sets): its gain is plasticity."""
        return str(self.suite["target_family"])

    @property
    def family_descriptions(self) -> dict[str, str]:
        """family → description, in the suite's order (its target family first)."""
        return {family: self.suite["families"].get(family, "") for family in self.suite["family_order"]}

    @property
    def in_domain_slices(self) -> list[str]:
        """The target family's slices, when it has more than one (else the whole says it all)."""
        agg = self.aggregates
        slices = sorted(set(agg[(agg.family == self.target_family) & (agg.slice != ALL)].slice))
        return slices if len(slices) > 1 else []

    @property
    def target_slice(self) -> str:
        """The slice post-training targets, or the whole target family when that has one slice."""
        name = str(self.suite["target_slice"])
        return name if name in self.in_domain_slices else ALL

    @property
    def roles(self) -> dict[str, str]:
        """slice → role (target / held-out) as the suite gives it: the role, not the family, says
        what a set's change is (harness/evaluation/roles.py)."""
        return roles_of(self.meta)

    def slices_by_family(self) -> dict[str, list[str]]:
        agg = self.aggregates
        return {f: sorted(set(agg[(agg.family == f) & (agg.slice != ALL)].slice)) for f in self.family_order()}

    @property
    def out_of_domain_families(self) -> list[str]:
        """The held-out families: none of their sets is a target (their change is the out-of-domain change)."""
        return held_out_families(self.slices_by_family(), self.roles, self.target_family)

    @property
    def same_skill_slices(self) -> list[str]:
        """The held-out sets of the families that hold a target set (easy math beside the hard target):
        their drop is forgetting of the trained skill itself."""
        return same_skill_of(self.slices_by_family(), self.roles)

    def family_order(self) -> list[str]:
        return families_in_order(list(self.aggregates.family.unique()), list(self.family_descriptions))


def read_train_log(root: Path) -> pd.DataFrame | None:
    """The run's per-step training log (loss and the method's own objectives), if it trained here."""
    path = root / TRAIN_LOG_FILE
    return pd.read_parquet(path) if path.is_file() else None


def display_name(family: str, slice_: str) -> str:
    return family if slice_ == ALL else f"{family} · {slice_}"


def family_order(aggregates: pd.DataFrame, preferred: Sequence[str] = ()) -> list[str]:
    return families_in_order(list(aggregates.family.unique()), preferred)


def load_runs(run_dirs: Sequence[Path]) -> list[RunData]:
    """Every run scored and complete at its final step, all on the same evaluation items."""
    if not run_dirs:
        raise ValueError("a report needs at least one run")
    loaded = []
    for root in run_dirs:
        meta, records = read_scored_run(root)
        results = results_from_records(root, meta, records)  # checks the final step is complete
        aggregates = RunStore(root).read_table(AGGREGATES_FILE)
        loaded.append((root, meta, records, aggregates, results))
    for other in loaded[1:]:
        check_same_items(loaded[0][4], other[4])
    methods = [meta.get("method", root.name) for root, meta, *_ in loaded]
    runs = []
    for (root, meta, records, aggregates, _), method in zip(loaded, methods):
        label = method if methods.count(method) == 1 else f"{method} ({root.name})"
        runs.append(
            RunData(
                root,
                label,
                meta,
                aggregates,
                per_item(records),
                pd.read_parquet(root / ITEMS_FILE),
                read_checkpoints(root),
                read_kl(root),
                read_train_log(root),
            )
        )
    return runs
