"""A re-run into a folder whose data or scorer libraries changed (tasks/identity.py): refused in
one line naming the set and both values, or, with `--refresh`, only the stages the change
affects are redone:

* a training set's file or library changed: the run trained on other data, so everything is
  redone from the start, checkpoints included (said on stderr);
* an evaluation set's file or its source's library changed: eval_items.parquet is rewritten
  from the current data, the generations are deleted, then generate → score → report run again
  (checkpoints and training kept); when the items come out identical only score → report run;
* only a scorer's library changed: score → report run again on the stored generations.

run.json records each refresh (`refreshed`: when, what changed, which stages were redone).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError, warn
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.store import (
    AGGREGATES_FILE,
    ITEMS_FILE,
    PROMPTS_FILE,
    RECORDS_FILE,
    RUN_FILE,
    check_format,
    items_frame,
    read_manifest,
    write_json_atomic,
    write_parquet_atomic,
)
from plasticity_bench.tasks.identity import Change, changes

REDONE = {
    "train": ["train", "kl", "generate", "score", "report"],
    "eval": ["generate", "score", "report"],
    "score": ["score", "report"],
}
DERIVED_FILES = (PROMPTS_FILE, RECORDS_FILE, AGGREGATES_FILE)  # what generation and scoring wrote from the old items


@dataclass(frozen=True)
class Refresh:
    """What `--refresh` does to a folder before the stages run: the changes found (most severe
    first) and the identity and fingerprint the folder's run.json takes."""

    changes: tuple[Change, ...]
    identity: dict[str, Any]
    fingerprint: str

    @property
    def scope(self) -> str:
        return self.changes[0].scope


def check_data(
    out: Path,
    fingerprint: str,
    identity: dict[str, Any],
    fingerprint_of: Callable[[dict[str, Any]], str],
    refresh: bool,
) -> Refresh | None:
    """Before `RunStore.check_target`, which writes nothing: when `out` holds a run whose recorded
    data identity differs from `identity`, refuse naming the first change, or (with `refresh`, and
    when nothing else about the run differs) return what to redo. None when the data is the same
    (or the folder holds no run): then check_target decides as ever."""
    old = recorded_run(out)
    if old is None:
        return None
    check_format(out, old)  # what a folder of another format recorded cannot be compared
    if old.get("fingerprint") == fingerprint:
        return None
    found = changes(old["data_identity"], identity)
    if not found:
        return None
    only_data = fingerprint_of(old["data_identity"]) == old.get("fingerprint")
    if refresh and only_data:
        return Refresh(tuple(found), identity, fingerprint)
    more = f" (and {len(found) - 1} more change{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
    if only_data:
        raise BenchError(
            f"output folder {out} holds this run made on other data: {found[0].text}{more}; "
            "add --refresh to redo what the change affects, or choose another --out"
        )
    raise BenchError(
        f"output folder {out} already holds a different run (other settings, and other data: {found[0].text}{more}); "
        "choose another --out or delete it"
    )


def recorded_run(out: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def apply(
    out: Path, plan: Refresh, metadata: dict[str, Any], items: Sequence[Item], items_sha256: str
) -> dict[str, Any]:
    """Bring the folder to the state from which the ordinary stages redo what `plan` affects.
    `metadata`: the run.json a new run would write now; returns it (with the refresh recorded)
    for a run redone from the start, whose folder is then empty. Files derived from the old data
    go first and run.json last, so a kill in between leaves a folder that a re-run refreshes again."""
    old = recorded_run(out) or {}
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": [change.text for change in plan.changes]}
    history = list(old.get("refreshed", []))
    if plan.scope == "train":
        warn(
            f"{plan.changes[0].text}: the run trained on that data, "
            "so it is redone from the start (checkpoints included)"
        )
        empty_folder(out)
        return {**metadata, "refreshed": [*history, {**entry, "redone": REDONE["train"]}]}
    scope = plan.scope
    if scope == "eval" and items_sha256 == old.get("eval_set_sha256"):
        scope = "score"  # the data's bytes changed but not the items: the generations still answer them
    if scope == "eval":
        check_models_kept(out)
        shutil.rmtree(out / "generations", ignore_errors=True)
        for name in DERIVED_FILES:
            (out / name).unlink(missing_ok=True)
        write_parquet_atomic(items_frame(items), out / ITEMS_FILE)
    stages = {name: info for name, info in old.get("stages", {}).items() if name not in REDONE[scope]}
    updated = {
        **old,
        "fingerprint": plan.fingerprint,
        "data_identity": plan.identity,
        "stages": stages,
        "refreshed": [*history, {**entry, "redone": REDONE[scope]}],
    }
    if scope == "eval":
        updated.update(
            {key: metadata[key] for key in ("eval_sets", "eval_set_sha256", "suite_spec") if key in metadata}
        )
    write_json_atomic(out / RUN_FILE, updated)
    warn(f"{plan.changes[0].text}: redoing {', '.join(REDONE[scope])}")
    return metadata


def check_models_kept(out: Path) -> None:
    """Generating again needs every checkpoint's model folder (`keep_checkpoints: last` pruned
    the middle ones after the first generation): refused before anything is deleted."""
    try:
        records = read_manifest(out / "checkpoints")
    except (OSError, ValueError, TypeError):
        return  # no checkpoints yet: the stages make them
    gone = [r.step for r in records if not (Path(r.path) if Path(r.path).is_absolute() else out / r.path).is_dir()]
    if gone:
        raise BenchError(
            f"output folder {out}: the evaluation data changed, and generating again needs the model folders of steps "
            f"{', '.join(map(str, gone))}, which are gone (keep_checkpoints: last?); choose another --out"
        )


def empty_folder(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
