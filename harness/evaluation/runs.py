"""Reading scored runs: one checkpoint's per-item results from a run folder or a baseline file.

`bench compare`, `bench gate` and the reports read runs only through this module, so what counts
as a complete, comparable run is decided once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.evaluation.roles import slice_roles
from plasticity_bench.harness.store import RECORDS_FILE, RunStore

BASELINE_FORMAT = "plasticity-bench/baseline"
BASELINE_VERSION = 1
ITEM_COLUMNS = ["item_id", "family", "slice", "correct", "score"]


@dataclass(frozen=True)
class ItemResults:
    """One checkpoint's result on every evaluation item."""

    source: str  # the run folder or baseline file, for messages
    suite: str
    eval_set_sha256: str
    step: int
    method: str | None
    items: pd.DataFrame  # ITEM_COLUMNS, one row per item, sorted by item_id
    families: tuple[str, ...] = ()  # the suite's family order (target first), for tables
    start_weights: str | None = None  # sha256 of the starting model's weights (provenance.weights_digest), if recorded
    cpu: str | None = None  # the machine's CPU and torch's kernel level, e.g. "Intel(R) Xeon(R) Processor, AVX512"
    roles: dict[str, str] = field(
        default_factory=dict
    )  # slice → target / held-out (evaluation/roles.py); {} if unknown

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "suite": self.suite,
            "eval_set_sha256": self.eval_set_sha256,
            "step": self.step,
            "method": self.method,
            "n": len(self.items),
            "start_weights": self.start_weights,
            "cpu": self.cpu,
        }


def cpu_text(meta: dict[str, Any]) -> str | None:
    """run.json's CPU, as one line: model name and torch's kernel level (None when not recorded)."""
    cpu = meta.get("provenance", {}).get("cpu") or {}
    parts = [str(part) for part in (cpu.get("model"), cpu.get("torch_capability")) if part]
    return ", ".join(parts) if parts else None


def same_start(a: ItemResults, b: ItemResults) -> bool | None:
    """Whether both sides started from the same weights; None when either did not record them."""
    return a.start_weights == b.start_weights if a.start_weights and b.start_weights else None


def different_starts(a: ItemResults, b: ItemResults) -> str | None:
    """A note when both sides record their starting model's weights and those differ: their
    difference then includes the starting model's (for the organism, which every machine
    pre-trains for itself, another CPU is enough to change it; BENCHMARKS §14)."""
    if same_start(a, b) is not False:
        return None
    where = f" (made on {a.cpu} vs {b.cpu})" if a.cpu and b.cpu and a.cpu != b.cpu else ""
    return (
        f"note: {a.source} and {b.source} started from different model weights{where}, "
        "so the difference includes the starting models'; "
        "the organism is pre-trained on each machine and float kernels differ between CPUs: make the baseline on "
        "the kind of machine the candidate runs on"
    )


def slice_column(records: pd.DataFrame) -> pd.Series:
    """Each record's evaluation set, "task/level", as `Item.slice` names it (records store task and level)."""
    return records.task + "/" + records.level


def read_scored_run(root: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """run.json and records.parquet of a scored run; a one-line BenchError if either is missing."""
    store = RunStore.open(root)
    meta = store.metadata()
    missing = [key for key in ("suite", "eval_set_sha256", "eval_sets") if key not in meta]
    if missing:
        raise BenchError(f"{root}/run.json lacks {', '.join(missing)}; it was not written by `bench run`")
    return meta, store.read_table(RECORDS_FILE)


def run_results(root: Path, step: int | None = None) -> ItemResults:
    """The per-item results of one checkpoint of a run (its last scored one by default)."""
    meta, records = read_scored_run(root)
    return results_from_records(root, meta, records, step)


def results_from_records(
    root: Path, meta: dict[str, Any], records: pd.DataFrame, step: int | None = None
) -> ItemResults:
    """One checkpoint out of a run's records; an error if any evaluation item lacks a record."""
    steps = sorted(int(s) for s in records.step.unique())
    chosen = steps[-1] if step is None else step
    if chosen not in steps:
        raise BenchError(f"{root} has no scored step {chosen}; its steps are {', '.join(map(str, steps))}")
    at_step = per_item(records[records.step == chosen])  # n samples of an item: paired by item, as one
    expected = sum(int(s["n"]) for s in meta["eval_sets"].values())
    if at_step.item_id.nunique() != expected or len(at_step) != expected:
        raise BenchError(
            f"{root} has {len(at_step)} records for {at_step.item_id.nunique()} of its {expected} "
            f"evaluation items at step {chosen}; "
            f"re-score it with `bench score {root}`"
        )
    items = at_step.assign(slice=slice_column(at_step))[ITEM_COLUMNS]
    families = tuple(family_order_of(meta))
    return ItemResults(
        str(root),
        meta["suite"],
        meta["eval_set_sha256"],
        chosen,
        meta.get("method"),
        _sorted(items),
        families,
        meta.get("base_model_sha256"),
        cpu_text(meta),
        roles_of(meta),
    )


def baseline_results(path: Path) -> ItemResults:
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchError(
            f"{path} is not a baseline file (not JSON: {error}); make one with `bench export-baseline RUN -o FILE`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BenchError(
            f'{path} is not a baseline file (no "format": "{BASELINE_FORMAT}"); '
            "make one with `bench export-baseline RUN -o FILE`"
        )
    if data.get("version") != BASELINE_VERSION:
        raise BenchError(
            f"{path} is a version {data.get('version')} baseline; "
            f"this harness reads version {BASELINE_VERSION}; re-export it"
        )
    try:
        items = pd.DataFrame(data["items"], columns=ITEM_COLUMNS).astype({"correct": bool, "score": float})
        return ItemResults(
            str(path),
            data["suite"],
            data["eval_set_sha256"],
            int(data["step"]),
            data.get("method"),
            _sorted(items),
            tuple(data.get("families", ())),
            data.get("base_model_sha256"),
            data.get("cpu"),
            dict(data.get("roles") or {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BenchError(f"{path} is a damaged baseline file ({type(error).__name__}: {error}); re-export it") from None


def load_results(path: Path, step: int | None = None) -> ItemResults:
    """A run folder or a baseline file, whichever `path` is."""
    if path.is_dir():
        return run_results(path, step)
    if path.is_file():
        if step is not None:
            raise BenchError(f"{path} is a baseline file: it holds one checkpoint, so no step can be chosen")
        return baseline_results(path)
    raise BenchError(f"{path} does not exist; give a run folder or a baseline file from `bench export-baseline`")


def _sorted(items: pd.DataFrame) -> pd.DataFrame:
    return items.sort_values("item_id", ignore_index=True)


def check_same_items(a: ItemResults, b: ItemResults) -> None:
    """Both sides must hold the same evaluation items, or no pairing is possible."""
    if a.suite != b.suite:
        raise BenchError(
            f"{a.source} and {b.source} are from different suites ({a.suite} vs {b.suite}); compare runs of one suite"
        )
    if a.eval_set_sha256 != b.eval_set_sha256:
        raise BenchError(
            f"{a.source} and {b.source} were evaluated on different item sets (eval-set sha256 "
            f"{a.eval_set_sha256[:12]}… vs {b.eval_set_sha256[:12]}…); use runs of the same suite and preset"
        )
    if not a.items[["item_id", "family"]].equals(b.items[["item_id", "family"]]):
        raise BenchError(
            f"{a.source} and {b.source} claim the same eval set but hold different items; re-score or re-export them"
        )


def families_in_order(names: Sequence[str], preferred: Sequence[str] = ()) -> list[str]:
    """The suite's family order (its target family first), then any others alphabetically."""
    known = [f for f in preferred if f in set(names)]
    return known + sorted(set(names) - set(known))


def suite_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """What run.json records of the run's suite: families, target family and slice, sets."""
    return dict(meta["suite_spec"])


def roles_of(meta: dict[str, Any]) -> dict[str, str]:
    """slice → role (target / held-out) of a run's sets."""
    return slice_roles(suite_summary(meta))


def family_order_of(meta: dict[str, Any]) -> list[str]:
    """The run's family order, its target family first."""
    return list(suite_summary(meta)["family_order"])


def per_item(records: pd.DataFrame) -> pd.DataFrame:
    """One row per item and step: accuracy = mean correct over its samples (avg@n), score = mean
    graded score, correct = whether most samples were right, output (and answer) = the first sample's."""
    if "sample" not in records or int(records["sample"].max()) == 0:
        return records.assign(accuracy=records.correct.astype(float))
    keys = [c for c in records.columns if c not in ("sample", "output", "score", "correct", "outcome", "answer")]
    grouped = records.sort_values("sample").groupby(keys, sort=False)
    firsts = {column: (column, "first") for column in ("output", "outcome", "answer") if column in records}
    out = grouped.agg(score=("score", "mean"), accuracy=("correct", "mean"), **firsts).reset_index()
    return out.assign(correct=out.accuracy >= 0.5)
