"""Several generation engines over one sweep (harness/app/engines.py): `bench eval --engines N` and
`bench run --engines N` write the very bytes one engine writes, and bad input is one line.

The one-engine reference is the session's smoke run (tests/conftest.py): `bench eval` over its
checkpoints with the run's suite and limit writes the same records as the run itself, so each test
here runs only the N-engine side.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plasticity_bench.harness.app.engines import EngineJob, engine_count, run_engines
from plasticity_bench.harness.backends.checkpoint import read_tensor_shapes
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import RunStore, read_manifest
from plasticity_bench.tasks.suites import load_suite
from tests.helpers import cli, rejected

SMOKE_SUITE = ("--suite", "micro", "--limit", "4")  # the smoke preset's evaluation (tasks/presets/smoke.yaml)
RESULT_FILES = ("records.parquet", "aggregates.parquet", "prompts.parquet")


def checkpoint_args(run: Path) -> list[str]:
    """The run's checkpoints as `bench eval` takes them: the folders, then --steps."""
    records = read_manifest(run / "checkpoints")
    return [*(str(run / r.path) for r in records), "--steps", ",".join(str(r.step) for r in records)]


def assert_same_results(one: Path, many: Path) -> None:
    """Byte for byte: every generation file, the records, the aggregates."""
    generations = sorted(p.name for p in (one / "generations").iterdir())
    assert generations == sorted(p.name for p in (many / "generations").iterdir())
    for name in [*RESULT_FILES, *(f"generations/{g}" for g in generations)]:
        assert (one / name).read_bytes() == (many / name).read_bytes(), name


def test_eval_with_two_engines_writes_what_one_engine_writes(bench, smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    done = bench("eval", *checkpoint_args(smoke_run), *SMOKE_SUITE, "--out", str(out), "--engines", "2", "-q")
    assert done.returncode == 0, done.stderr
    assert_same_results(smoke_run, out)
    meta = json.loads((out / "run.json").read_text())
    assert meta["generation_engines"] == 2
    timings = meta["engine_timings"]
    assert [t["engine"] for t in timings] == [0, 1] or len(timings) == 1  # an engine may finish before the other starts
    assert sum(t["checkpoints"] for t in timings) == len(read_manifest(smoke_run / "checkpoints"))


def test_run_with_two_engines_writes_what_one_engine_writes(bench, smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rps"
    done = bench("run", "--method", "rps", "--preset", "smoke", "--out", str(out), "--engines", "2", "-q")
    assert done.returncode == 0, done.stderr
    assert_same_results(smoke_run, out)
    run = json.loads((out / "run.json").read_text())
    reference = json.loads((smoke_run / "run.json").read_text())
    assert run["fingerprint"] == reference["fingerprint"]
    assert run["generation_engines"] == 2 and run["config"]["engines"] == 2


def test_an_engine_failure_stops_the_sweep_with_its_error(smoke_run: Path) -> None:
    """An error inside an engine process (here: a checkpoint folder that vanished after the sweep was
    checked) comes back as the same one-line BenchError, after every engine has stopped."""
    start = smoke_run / read_manifest(smoke_run / "checkpoints")[0].path
    store = RunStore(smoke_run)
    job = EngineJob("hf", {}, load_suite("micro"), store.items(), {}, 0, 1, str(start), read_tensor_shapes(start))
    gone = [(2, str(smoke_run / "gone-2")), (4, str(smoke_run / "gone-4"))]
    with pytest.raises(BenchError, match="gone-[24] has no config.json"):
        run_engines(job, gone, 2, 1, lambda generated: pytest.fail("nothing can be generated"))


def test_more_engines_than_checkpoints_start_as_many_as_checkpoints(capsys: pytest.CaptureFixture[str]) -> None:
    assert engine_count(8, 3) == 3
    assert capsys.readouterr().err == "warning: 8 engines asked for, 3 checkpoint(s) to generate: 3 engine(s) start\n"
    assert engine_count(2, 13) == 2 and engine_count(2, 0) == 1
    assert capsys.readouterr().err == ""


def test_engines_must_be_a_positive_number(tmp_path: Path) -> None:
    eval_args = ("eval", str(tmp_path), "--suite", "micro", "--out", str(tmp_path / "out"))
    rejected(cli(*eval_args, "--engines", "0"), "--engines must be a positive number of generation engines, got 0")
    rejected(cli(*eval_args, "--engines", "2", "--watch"), "--watch", "one engine")
    rejected(cli("run", "--preset", "smoke", "--engines", "-1", "--dry-run"), "--engines", "got -1")
    config = tmp_path / "engines.yaml"
    config.write_text("engines: 0\n")
    rejected(cli("run", "--preset", "smoke", "-c", str(config), "--dry-run"), "engines")
    assert not (tmp_path / "out").exists()
