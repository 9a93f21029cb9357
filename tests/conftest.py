"""Shared fixtures. The CLI tests use a private organism cache, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("organism-cache")


@pytest.fixture(scope="session")
def bench(bench_cache: Path):
    """Run the real `bench` CLI in a subprocess; returns the CompletedProcess."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(bench_cache)}
        return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, cwd=cwd or ROOT, timeout=600)

    return run


@pytest.fixture(scope="session")
def smoke_run(bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke-size RPS run through the CLI, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "rps"
    done = bench("run", "--method", "rps", "--preset", "smoke", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return out
