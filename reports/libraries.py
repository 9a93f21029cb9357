"""The libraries with which a run's suite makes its items and judges its outputs (the report's
provenance table lists these, not a fixed list), from run.json's `data_identity`
(tasks/identity.py)."""

from __future__ import annotations

from typing import Any

from plasticity_bench.tasks.identity import libraries

BASE_LIBRARIES = ("torch", "transformers")  # every run's model code


def suite_libraries(meta: dict[str, Any]) -> dict[str, str]:
    """distribution → version of each library the run's sets used."""
    identity = meta.get("data_identity")
    return libraries(identity) if isinstance(identity, dict) else {}


def library_rows(metas: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(library, its version in each run) for the base libraries, then every one any run's suite used."""
    used = [suite_libraries(meta) for meta in metas]
    names = list(BASE_LIBRARIES) + sorted({name for found in used for name in found} - set(BASE_LIBRARIES))
    rows = []
    for name in names:
        values = [
            found.get(name) or ((meta.get("provenance") or {}).get("packages") or {}).get(name)
            for meta, found in zip(metas, used)
        ]
        rows.append((name, ["–" if value is None else str(value) for value in values]))
    return rows
