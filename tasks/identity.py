"""What a suite's results depend on besides its YAML: the bytes of every local data file its sets
read, and the versions of the libraries that make its items and judge its outputs.

A run records this per set in run.json (`data_identity`) and its fingerprint covers it, so a
re-run into the same folder after a data file or a scorer's library changed is refused (or, with
`--refresh`, redoes only what the change affects: harness/app/refresh.py)::

    {"eval":  {"gsm8k/test": {"files": {"gsm8k.jsonl": SHA256}, "source_packages": {"datasets": "5.2.0"},
                              "scorer_packages": {"math-verify": "0.9.0", ...}}},
     "train": {"easy": {...}, "hard": {...}}}

A file is named relative to the suite file's folder when it lies inside it, else by its absolute
path. Which files and distributions count is each source's and scorer's own declaration
(`Source.data_files`, `Source.requires`, `Scorer.requires`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.tasks.scorers import SCORERS
from plasticity_bench.tasks.sources import Source
from plasticity_bench.tasks.suites import Suite

NOT_INSTALLED = "not installed"
NOT_RECORDED = "(not recorded)"
SCOPES = ("train", "eval", "score")  # what a change invalidates, most first: training, items, verdicts


def file_sha256(path: Path) -> str:
    resolved = path.resolve()
    stat = resolved.stat()
    return _sha256(resolved, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """Keyed by size and mtime too: a file edited while the process runs is hashed again."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions(distributions: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = NOT_INSTALLED
    return found


def file_label(path: Path, base_dir: Path) -> str:
    resolved, base = path.resolve(), base_dir.resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(resolved)


def set_identity(source: Source, scorer: str, optional: bool = False) -> dict[str, Any]:
    """One set's files (label → sha256) and its source's and scorer's library versions. An optional
    set whose data is not here records no files (the run skips it; its data appearing is a change)."""
    try:
        files = {file_label(path, source.base_dir): file_sha256(path) for path in source.data_files()}
    except BenchError:
        if not optional:
            raise
        files = {}
    return {
        "files": dict(sorted(files.items())),
        "source_packages": versions(source.requires),
        "scorer_packages": versions(SCORERS.get(scorer).requires),
    }


def suite_identity(suite: Suite, training: bool) -> dict[str, Any]:
    """Every evaluation set's identity, and the training sets' where the run trains (`bench run`)."""
    identity: dict[str, Any] = {
        "eval": {s.slice: set_identity(s.source, s.scorer, s.optional) for s in suite.eval_sets}
    }
    if training:
        identity["train"] = {
            side: set_identity(train.source, train.scorer)
            for side, train in (("easy", suite.easy), ("hard", suite.hard))
            if train is not None
        }
    return identity


def fingerprinted(identity: dict[str, Any]) -> dict[str, Any]:
    """What a fingerprint adds for `identity`: the whole of it, so a changed data file or library
    version gives another run."""
    return {"data_identity": identity}


def libraries(identity: dict[str, Any]) -> dict[str, str]:
    """Every distribution the run's sets used, with its version (the report's provenance table)."""
    found: dict[str, str] = {}
    for group in identity.values():
        for spec in group.values():
            found.update(spec.get("source_packages", {}))
            found.update(spec.get("scorer_packages", {}))
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Change:
    scope: str  # "train" (redo the training), "eval" (the items may differ), "score" (re-score only)
    text: str  # one clause naming the set and both values


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """What differs between a recorded identity and the current one, for the sets both name (a set
    added or removed is a change of the suite file, which the fingerprint covers), most severe first."""
    found: list[Change] = []
    for group, kind in (("train", "training set"), ("eval", "evaluation set")):
        for name in sorted(set(old.get(group, {})) & set(new.get(group, {}))):
            before, after = old[group][name], new[group][name]
            where = f"{kind} {name}"
            data_scope = "train" if group == "train" else "eval"
            found += [Change(data_scope, text) for text in file_changes(where, before.get("files", {}), after["files"])]
            found += [
                Change(data_scope, text)
                for text in package_changes(
                    where, "library", before.get("source_packages", {}), after["source_packages"]
                )
            ]
            found += [
                Change("train" if group == "train" else "score", text)
                for text in package_changes(
                    where, "scorer library", before.get("scorer_packages", {}), after["scorer_packages"]
                )
            ]
    return sorted(found, key=lambda change: SCOPES.index(change.scope))


def file_changes(where: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    texts = []
    for label in sorted(set(before) | set(after)):
        old, new = before.get(label), after.get(label)
        if old != new:
            texts.append(f"{where}: {label} sha256 {short(old)} → {short(new)}")
    return texts


def package_changes(where: str, what: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [
        f"{where}: {what} {name} {before.get(name, NOT_RECORDED)} → {after.get(name, NOT_RECORDED)}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]


def short(sha: str | None) -> str:
    return "(none)" if sha is None else sha[:12]
