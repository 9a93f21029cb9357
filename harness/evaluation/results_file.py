"""`RUN/results/step-NNNNNN.json`: one checkpoint's results in one file, as lm-eval's results file
holds one model's.

Written by the score stage (`bench run`, `bench eval`, `bench score`) from aggregates.parquet and
run.json, one file per scored checkpoint; re-scoring rewrites them all and removes any for a step
the run does not hold. Each file holds:

* `results`: every family (its whole, slice `all`) with every slice inside it, each with every
  column aggregates.parquet has (score = avg@n accuracy in points, stderr, n items, samples per
  item, pass_at_n, partial_score, reliability, and any metric columns a scorer adds); NaN is null;
* the run's identity: suite (name, sha256), method, seed, fingerprint, the `--limit`
  (`eval_per_slice`), the checkpoint's step, stage and model folder, the starting model (and its
  hub id, revision and commit when it came from the hub), the evaluation sets' sizes and hashes;
* `versions` (package versions) and `git` (the harness's commit), from run.json's provenance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.store import MANIFEST, RunStore, checkpoint_name, read_manifest, write_json_atomic

RESULTS_DIR = "results"
RESULTS_FORMAT = "plasticity-bench/results"
RESULTS_VERSION = 1
ALL = "all"  # the slice name of a whole family (as in harness/evaluation/scoring.py)
KEYS = ("step", "family", "slice")  # what locates an aggregates row; every other column is a metric


def results_path(root: Path, step: int) -> Path:
    return root / RESULTS_DIR / f"{checkpoint_name(step)}.json"


def write_results_files(store: RunStore, aggregates: pd.DataFrame) -> list[Path]:
    """One results file per step of `aggregates`; files of steps not in it are removed."""
    meta = store.metadata()
    identity = run_identity(meta)
    checkpoints = _checkpoints(store)
    folder = store.root / RESULTS_DIR
    folder.mkdir(exist_ok=True)
    steps = sorted(int(step) for step in aggregates.step.unique())
    written = []
    for step in steps:
        path = results_path(store.root, step)
        write_json_atomic(
            path,
            {
                "format": RESULTS_FORMAT,
                "version": RESULTS_VERSION,
                **identity,
                "step": step,
                "checkpoint": checkpoints.get(step),
                "results": family_results(aggregates[aggregates.step == step], meta),
            },
        )
        written.append(path)
    for stale in set(folder.glob("step-*.json")) - set(written):
        stale.unlink()
    return written


def run_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What says which run and which settings a results file comes from."""
    config = meta.get("config") or {}
    provenance = meta.get("provenance") or {}
    return {
        "run": {
            "suite": meta.get("suite"),
            "suite_sha256": meta.get("suite_sha256"),
            "method": meta.get("method"),
            "seed": meta.get("seed"),
            "fingerprint": meta.get("fingerprint"),
            "limit": config.get("eval_per_slice"),
            "backend": meta.get("backend"),
            "base_model": meta.get("base_model"),
            "base_model_sha256": meta.get("base_model_sha256"),
            "hub_models": hub_models(config),
            "created": meta.get("created"),
        },
        "eval_sets": meta.get("eval_sets"),
        "versions": provenance.get("packages"),
        "git": provenance.get("git"),
    }


def hub_models(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The hub models a run used: `bench run --model ID` (config.model_hub) or `bench eval`'s (config.hub_models)."""
    found = list(config.get("hub_models") or [])
    if config.get("model_hub"):
        found.append({"role": "base", **config["model_hub"]})
    return found


def family_results(rows: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """family → its whole's metrics, its role(s) and `slices`: slice → that slice's metrics."""
    roles = {spec["slice"]: spec.get("role") for spec in (meta.get("suite_spec") or {}).get("sets", [])}
    results: dict[str, Any] = {}
    for family, group in rows.groupby("family", sort=False):
        whole = group[group.slice == ALL]
        slices = group[group.slice != ALL].sort_values("slice")
        entry = metrics(whole.iloc[0]) if len(whole) else {}
        entry["slices"] = {
            str(row.slice): {**metrics(row), "role": roles.get(str(row.slice))} for _, row in slices.iterrows()
        }
        results[str(family)] = entry
    return results


def metrics(row: pd.Series) -> dict[str, Any]:
    """Every metric column of an aggregates row; an empty text column (a metric a set does not have) is left out."""
    return {
        str(key): _plain(value)
        for key, value in row.items()
        if key not in KEYS and not (isinstance(value, str) and not value)
    }


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars as Python numbers, NaN as null (JSON has no NaN), a column that
    holds JSON (an lm-eval set's metrics) as the object it encodes."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str) and value.startswith(("{", "[")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _checkpoints(store: RunStore) -> dict[int, dict[str, Any]]:
    """step → the manifest's record (stage, model folder, ...); empty when the manifest is gone."""
    if not (store.checkpoints / MANIFEST).is_file():
        return {}
    records = {}
    for record in read_manifest(store.checkpoints):
        path = Path(record.path)
        records[record.step] = {**record.to_dict(), "path": str(path if path.is_absolute() else store.root / path)}
    return records
