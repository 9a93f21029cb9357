"""The tests' forked `bench` (tests/cli_server.py) answers as a fresh `python -m` process does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_server import CLI, command, run_bench


def fresh(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", CLI, *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize("args", [("--help",), ("run", "--bogus"), ("gate", "nowhere", "--baseline", "none.json")])
def test_a_forked_call_prints_and_exits_as_a_fresh_process(args: tuple[str, ...], tmp_path: Path) -> None:
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(tmp_path / "cache")}
    forked, real = run_bench(*args, env=env, cwd=tmp_path), fresh(*args, env=env, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)
    assert forked.args == command(args)


def test_the_console_script_entry_names_itself_bench(tmp_path: Path) -> None:
    done = run_bench("run", "--bogus", cwd=tmp_path, entry="script")
    assert done.returncode == 2 and "Usage: bench run" in done.stderr, done.stderr


def test_a_call_sees_its_own_environment_and_folder(tmp_path: Path) -> None:
    """A harness variable (read when used) differs between calls that share a server; the folder is the call's."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(folder / "cache")}
        done = run_bench("base", "--help", env=env, cwd=folder)
        assert done.returncode == 0, done.stderr
    plugin = {**os.environ, "PLASTICITY_BENCH_PLUGINS": "no_such_plugin_module"}
    done = run_bench("run", "--method", "sft", "--preset", "smoke", "--out", "x", env=plugin, cwd=tmp_path)
    assert done.returncode == 2 and "no_such_plugin_module" in done.stderr, done.stderr
    assert not (tmp_path / "x").exists()


def test_a_call_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path) -> None:
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    with pytest.raises(subprocess.TimeoutExpired):
        run_bench("run", "--method", "sft", "--preset", "smoke", "--out", str(tmp_path / "run"), env=env, timeout=1)
