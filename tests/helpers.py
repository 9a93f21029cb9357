"""Test helpers shared across files."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from plasticity_bench.harness.app.cli import main
from tests.cli_server import run_bench


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Done:
    """The real `bench` entry point (harness.app.cli.main) run in this process. A subprocess per call
    (the `bench` fixture) spends seconds importing torch, transformers and reasoning-gym; tests
    of usage errors use this, and a few keep the subprocess to check exit statuses end to end."""
    stdout, stderr, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["bench", *args]
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.argv = argv
    return Done(code, stdout.getvalue(), stderr.getvalue())


def rejected(done: Done, *fragments: str) -> None:
    """A usage error as users see it: exit 2, one line `error: ...` naming the problem."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def cli_without_vllm(cache: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess where `import vllm` fails, as on a machine without vLLM."""
    # sys.modules["vllm"] = None is Python's own marker for "this module cannot be imported".
    hide_vllm = (
        "import sys; sys.modules['vllm'] = None; sys.argv[0] = 'bench'; "
        "from plasticity_bench.harness.app.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", hide_vllm, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PLASTICITY_BENCH_CACHE": str(cache)},
        timeout=300,
    )


ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def cli_with_cache(cache: Path, *args: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    """The CLI as its own process (tests/cli_server.py) with its own organism cache, offline, from the
    repository; `env` adds variables (e.g. OMP_NUM_THREADS="1")."""
    environment = {**os.environ, "PLASTICITY_BENCH_CACHE": str(cache), **OFFLINE, **env}
    return run_bench(*args, env=environment, cwd=ROOT, timeout=timeout)
