"""`--preset NAME`: a shipped config file (tasks/presets/NAME.yaml), or a preset file of the user's own.

A preset is an ordinary settings file at the bottom of the precedence (preset < `--config` <
command-line options), kept as data beside the suites so that adding one is a new YAML file, not
an edit of the code. Found without importing `tasks`, whose import loads every task and
reasoning-gym (≈ 0.8 s): a misspelt preset is a usage error that must answer at once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from plasticity_bench.harness.core.errors import BenchError

FILE_SUFFIXES = (".yaml", ".yml", ".json")


def presets_folder() -> Path | None:
    """tasks/presets, located, not executed; None where the tasks package is missing."""
    spec = importlib.util.find_spec("plasticity_bench.tasks")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "presets"


def shipped_preset_names() -> list[str]:
    folder = presets_folder()
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder is not None else []


def preset_file(reference: str) -> Path:
    """The file `--preset reference` names: a shipped preset's, else a YAML/JSON file of the
    user's (a name with a file suffix, or an existing file); BenchError for anything else."""
    folder = presets_folder()
    if folder is not None and reference in shipped_preset_names():
        return folder / f"{reference}.yaml"
    path = Path(reference).expanduser()
    if path.suffix in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise BenchError(f"preset file {path} does not exist")
        return path
    raise BenchError(
        f"unknown preset {reference!r}; shipped: {', '.join(shipped_preset_names())} (or give a preset YAML file)"
    )
