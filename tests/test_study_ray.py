"""`bench study --ray`: the same study through a local Ray instance gives the same run folders,
records and verdicts as without Ray; a re-run redoes nothing; a failed run fails the study with
the run's own line; without Ray, one line saying how to install it."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from pathlib import Path

import pytest

from tests.helpers import cli, rejected
from tests.test_study import SmokeStudy, smoke_study  # noqa: F401  (the session's study folder, made without Ray)

pytestmark = pytest.mark.xdist_group("smoke_study")  # one worker builds the module's shared study/runs once

RUNS = ("sft-seed0", "sft-seed1", "rps-half-seed0", "rps-half-seed1")
# every file of a run whose bytes say what was computed (run.json and the report carry paths and times)
RESULT_FILES = ("records.parquet", "aggregates.parquet", "train_log.parquet", "summary.json")


def ray_command(study: SmokeStudy, out: Path, *more: str) -> list[str]:
    """The session study's own command with another --out and Ray options."""
    command = list(study.command)
    command[command.index("--out") + 1] = str(out)
    return [*command, *more]


@pytest.fixture(scope="module")
def ray_study(bench, smoke_study: SmokeStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    pytest.importorskip("ray")
    out = tmp_path_factory.mktemp("ray-study") / "study"
    done = bench(*ray_command(smoke_study, out, "--ray"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": finished") == 4 and not done.stderr.strip(), (done.stdout, done.stderr)
    return out


def same_text(a: Path, b: Path, out_a: Path, out_b: Path) -> None:
    assert a.read_text().replace(str(out_a), "OUT") == b.read_text().replace(str(out_b), "OUT"), a.name


def test_ray_study_matches_the_local_study(ray_study: Path, smoke_study: SmokeStudy) -> None:  # noqa: F811
    local = smoke_study.out
    for name in RUNS:
        for file in RESULT_FILES:
            assert (ray_study / name / file).read_bytes() == (local / name / file).read_bytes(), (name, file)
        ray_meta, local_meta = (json.loads((d / name / "run.json").read_text()) for d in (ray_study, local))
        assert ray_meta["fingerprint"] == local_meta["fingerprint"]
        assert (ray_study / "logs" / f"{name}.log").is_file()
    assert (ray_study / "arms" / "rps-half.yaml").read_bytes() == (local / "arms" / "rps-half.yaml").read_bytes()
    for file in ("study.json", "headline.json", "study.html"):  # the verdicts, aggregates and page; paths aside
        same_text(ray_study / file, local / file, ray_study, local)
    verdicts = {c["claim"]: c["verdict"] for c in json.loads((ray_study / "study.json").read_text())["claims"]}
    assert "RPS forgets less than SFT" in verdicts


def test_ray_rerun_redoes_nothing(bench, ray_study: Path, smoke_study: SmokeStudy) -> None:  # noqa: F811
    before = {name: (ray_study / name / "run.json").stat().st_mtime_ns for name in RUNS}
    again = bench(*ray_command(smoke_study, ray_study, "--ray"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done, skipped") == 4 and ": finished" not in again.stdout
    assert {name: (ray_study / name / "run.json").stat().st_mtime_ns for name in RUNS} == before


def test_failed_ray_task_fails_the_study_with_the_runs_line(bench, tmp_path: Path) -> None:
    """A run that fails (here: its folder holds a broken run.json) fails the study as on the local
    path (study.run_all's message): exit 2, one line naming the run, its exit code and its own last line."""
    pytest.importorskip("ray")
    out = tmp_path / "study"
    (out / "sft-seed0").mkdir(parents=True)
    (out / "sft-seed0" / "run.json").write_text("{broken")
    done = bench("study", "--methods", "sft", "--seeds", "0", "--preset", "smoke", "--out", str(out), "-q", "--ray")
    log = out / "logs" / "sft-seed0.log"
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("error: output folder") and "already holds a different run" in last, last
    rejected(done, f"study: 1 of 1 runs failed, e.g. sft-seed0 (exit 2: {last}); see {log}; re-run the same command")
    assert done.stdout.strip() == "sft-seed0: failed (exit 2)"


def test_ray_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s"
    base = ("study", "--methods", "sft", "--seeds", "0", "--preset", "smoke", "--out", str(out))
    rejected(cli(*base, "--ray", "--ray-address", "127.0.0.1:6379"), "--ray", "not both")
    rejected(cli(*base, "--ray-gpus-per-run", "1"), "need --ray or --ray-address")
    rejected(cli(*base, "--ray", "--ray-cpus-per-run", "0"), "--ray-cpus-per-run must be above 0")
    if importlib.util.find_spec("ray") is not None:  # an address where nothing answers: refused before any work
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        rejected(cli(*base, "--ray-address", f"127.0.0.1:{port}"), f"nothing answers at --ray-address 127.0.0.1:{port}")
    monkeypatch.setitem(sys.modules, "ray", None)  # Python's own marker for "cannot be imported"
    rejected(cli(*base, "--ray"), "needs Ray", "pip install 'plasticity-bench[ray]'")
    rejected(cli(*base, "--ray-address", "ray://head:10001"), "pip install 'plasticity-bench[ray]'")
    assert not out.exists()  # nothing written


def test_ray_refuses_what_no_node_has_and_a_node_without_the_drivers_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real local instance: a run asking for a GPU the instance lacks is refused at once (not
    left waiting), and a task on a node that lacks the driver's Python fails its run with a line
    saying so in the run's log."""
    ray = pytest.importorskip("ray")
    from plasticity_bench.harness.app.study_ray import RayJob, RayOptions, check_fits, results, run_gpus, start
    from plasticity_bench.harness.core.errors import BenchError

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a private instance; Ray would set it in os.environ
    options = RayOptions(None)
    assert [run_gpus(options, device, 0.0) for device in ("cpu", "cuda", "auto")] == [0.0, 1.0, 0.0]
    assert run_gpus(options, "auto", 8.0) == 1.0 and run_gpus(RayOptions(None, 1.0, 0.5), "cuda", 8.0) == 0.5
    start(ray, options, 1)
    try:
        log = tmp_path / "a-seed0.log"
        with pytest.raises(BenchError, match="asks Ray for 1 GPU.* has 0; lower --ray-gpus-per-run"):
            check_fits(ray, options, [RayJob("a", 0, ["true"], str(log), 1.0)])
        missing = str(tmp_path / "no-venv" / "python")
        assert list(results(ray, [RayJob("a", 0, [missing], str(log), 0.0)], 1.0, {})) == [("a", 0, 2)]
        assert log.read_text().startswith(f"ray: {missing} does not exist on ")
    finally:
        ray.shutdown()
