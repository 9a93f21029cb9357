"""Resuming training after a kill or a signal, keep_checkpoints, and the disk-space estimate.

The end-to-end tests run the real CLI on the smoke preset in a subprocess. The kills use the test
hook PLASTICITY_BENCH_KILL_AT=POINT:STEP (harness/core/interrupt.py `kill_point`): the process
SIGKILLs itself there, exactly as `kill -9` would. A resumed run must end with the same bytes as
a run that never stopped: the final weights, train_log.parquet and records.parquet.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from plasticity_bench.harness.core.interrupt import Interrupted, stop_on_signals, uninterruptible
from plasticity_bench.harness.store import read_manifest
from tests.cli_server import run_bench
from tests.conftest import ROOT
from tests.helpers import cli, rejected

pytestmark = pytest.mark.xdist_group("resume")  # the module's shared runs are built once, on one worker

STEP_INTERVAL = 2  # the smoke preset's checkpoint_every
# GRPO with checkpoints every 3 steps and each rollout serving 2 updates: checkpoint 3 falls between
# the two updates of rollout 1 and resuming needs the saved rollout itself.
MID_ROLLOUT = "steps: 6\ncheckpoint_every: 3\noptions: {updates_per_rollout: 2}\n"
# long enough (≈ 5 ms a step) to send a signal from outside while training runs
LONG = "steps: 600\ncheckpoint_every: 150\n"
# DPO's default, online pairs (a fresh draw from the policy every step) on the smoke organism
ONLINE_DPO = "options: {reward: answer, prompts_per_step: 32}\n"


def run_cli(
    cache: Path, out: Path, method: str, config: Path | None, kill_at: str | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PLASTICITY_BENCH_CACHE": str(cache),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    env.pop("PLASTICITY_BENCH_KILL_AT", None)
    if kill_at:
        env["PLASTICITY_BENCH_KILL_AT"] = kill_at
    return run_bench(*command(method, out, config)[3:], env=env, cwd=ROOT, timeout=600)


def command(method: str, out: Path, config: Path | None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "plasticity_bench.harness.app.cli",
        "run",
        "--method",
        method,
        "--preset",
        "smoke",
        "--out",
        str(out),
        "-q",
        *(["--config", str(config)] if config else []),
    ]


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | None]:
    folder = tmp_path_factory.mktemp("configs")
    files: dict[str, Path | None] = {"smoke": None}
    for name, text in {
        "mid_rollout": MID_ROLLOUT,
        "long": LONG,
        "online_dpo": ONLINE_DPO,
        "evaluated": "keep_checkpoints: evaluated\n",
        "last": "keep_checkpoints: last\n",
    }.items():
        files[name] = folder / f"{name}.yaml"
        files[name].write_text(text)  # type: ignore[union-attr]
    return files


@pytest.fixture(scope="module")
def reference(bench_cache: Path, configs: dict[str, Path | None], tmp_path_factory: pytest.TempPathFactory):
    """Uninterrupted runs, one per (method, config), made on first use."""
    made: dict[tuple[str, str], Path] = {}
    folder = tmp_path_factory.mktemp("reference")

    def get(method: str, config: str) -> Path:
        if (method, config) not in made:
            out = folder / f"{method}-{config}"
            done = run_cli(bench_cache, out, method, configs[config])
            assert done.returncode == 0, done.stderr[-3000:]
            made[method, config] = out
        return made[method, config]

    return get


def assert_same_run(expected: Path, actual: Path) -> None:
    """Byte-identical final weights, training log and per-item records."""
    final = read_manifest(expected / "checkpoints")[-1]
    assert [r.to_dict() for r in read_manifest(actual / "checkpoints")] == [
        r.to_dict() for r in read_manifest(expected / "checkpoints")
    ]
    for name in (f"{final.path}/model.safetensors", "train_log.parquet", "records.parquet"):
        assert (expected / name).read_bytes() == (actual / name).read_bytes(), name


def leftovers(run: Path) -> list[str]:
    """Files a re-run must not trust: half-written temporaries."""
    return [str(p.relative_to(run)) for p in run.rglob("*") if p.name.endswith((".partial", ".tmp"))]


Kill = namedtuple("Kill", "method config point resumed_from")
KILLS = [
    Kill("rps", "smoke", "step:1", 0),  # before the first checkpoint
    Kill("rps", "smoke", "model:2", 0),  # inside a checkpoint: model folder written, state and manifest not
    Kill("rps", "smoke", "checkpoint:2", 2),  # just after a checkpoint
    Kill("rps", "smoke", "step:3", 2),  # between two checkpoints (and across RPS's stage boundary)
    Kill("rps", "evaluated", "step:3", 2),  # keep_checkpoints: evaluated keeps only the latest training state
    Kill("grpo", "smoke", "step:1", 0),
    Kill("grpo", "smoke", "checkpoint:2", 2),
    Kill("grpo", "mid_rollout", "step:5", 3),  # resumes between the two updates of one rollout
    Kill("spot", "smoke", "step:3", 2),  # SPoT's running δ
    Kill("dpo", "online_dpo", "step:3", 2),  # online DPO: step 3's pairs are drawn again from the resumed policy
]


@pytest.mark.e2e
@pytest.mark.parametrize("kill", KILLS, ids=lambda k: f"{k.method}-{k.config}-{k.point}")
def test_kill_9_during_training_resumes_to_identical_results(
    bench_cache: Path, configs, reference, tmp_path: Path, kill: Kill
) -> None:
    expected = reference(kill.method, kill.config)
    out = tmp_path / "run"
    killed = run_cli(bench_cache, out, kill.method, configs[kill.config], kill_at=kill.point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    if kill.point == "model:2":  # what a kill inside save_pretrained would leave too
        (out / "checkpoints" / "step-000004.partial").mkdir()
        (out / "checkpoints" / "manifest.json.tmp").write_text("{")
    if kill.config == "evaluated":
        states = sorted(p.name for p in (out / "checkpoints").glob("*.trainer_state.pt"))
        assert states == ["step-000002.trainer_state.pt"]

    resumed = run_cli(bench_cache, out, kill.method, configs[kill.config])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(expected, out)
    train = json.loads((out / "run.json").read_text())["stages"]["train"]
    total = json.loads((out / "run.json").read_text())["config"]["steps"]
    killed_after = int(kill.point.split(":")[1])
    assert train["resumed_from_step"] == kill.resumed_from
    assert train["steps_run"] == total - kill.resumed_from
    assert (
        killed_after - kill.resumed_from <= json.loads((out / "run.json").read_text())["config"]["checkpoint_every"]
    )  # redid at most one interval
    assert leftovers(out) == []


@pytest.mark.e2e
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_training_with_one_line_and_the_rerun_matches(
    bench_cache: Path, configs, reference, tmp_path: Path, signum: int, status: int
) -> None:
    expected = reference("rps", "long")
    out = tmp_path / "run"
    env = {
        **os.environ,
        "PLASTICITY_BENCH_CACHE": str(bench_cache),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    env.pop("PLASTICITY_BENCH_KILL_AT", None)
    process = subprocess.Popen(
        command("rps", out, configs["long"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    manifest = out / "checkpoints" / "manifest.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:  # wait for the first checkpoint after the start
        try:
            if len(json.loads(manifest.read_text())) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    process.send_signal(signum)
    _stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == status, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    match = re.fullmatch(r"interrupted: re-run the same command to resume training from step (\d+)", lines[0])
    assert match and int(match.group(1)) in (150, 300, 450), lines[0]
    assert leftovers(out) == []
    assert read_manifest(out / "checkpoints")[-1].step == int(match.group(1))

    again = run_cli(bench_cache, out, "rps", configs["long"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(expected, out)
    assert json.loads((out / "run.json").read_text())["stages"]["train"]["resumed_from_step"] == int(match.group(1))


@pytest.mark.e2e
def test_keep_checkpoints_prunes_training_state_and_folders_without_changing_results(
    bench_cache: Path, configs, reference
) -> None:
    everything = reference("rps", "smoke")
    assert sorted(p.name for p in (everything / "checkpoints").glob("*.trainer_state.pt")) == [
        "step-000002.trainer_state.pt",
        "step-000004.trainer_state.pt",
    ]
    evaluated, last = reference("rps", "evaluated"), reference("rps", "last")
    for run in (evaluated, last):
        assert (run / "records.parquet").read_bytes() == (everything / "records.parquet").read_bytes()
        assert not list((run / "checkpoints").glob("*.trainer_state.pt"))
    assert sorted(p.name for p in (evaluated / "checkpoints").iterdir()) == [
        "manifest.json",
        "step-000000",
        "step-000002",
        "step-000004",
    ]
    assert sorted(p.name for p in (last / "checkpoints").iterdir()) == ["manifest.json", "step-000000", "step-000004"]
    assert [r.step for r in read_manifest(last / "checkpoints")] == [
        0,
        2,
        4,
    ]  # every checkpoint is still scored and listed
    # a storage setting, not the experiment: the same fingerprint as `all`
    assert (
        json.loads((last / "run.json").read_text())["fingerprint"]
        == json.loads((everything / "run.json").read_text())["fingerprint"]
    )


# ---------------------------------------------------------------- in process


def test_a_run_the_disk_cannot_hold_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))
    out = tmp_path / "deep" / "run"
    rejected(
        cli("run", "--method", "rps", "--preset", "smoke", "--out", str(out)),
        "not enough disk space",
        "keep_checkpoints",
    )
    assert not (tmp_path / "deep").exists()


def test_the_disk_estimate_scales_with_checkpoints_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.stages.prepare import check_disk, model_size_bytes
    from plasticity_bench.tasks.suites import load_suite

    config = load_config()  # the default organism: ≈ 1.26M float32 parameters
    assert 4_500_000 < model_size_bytes(config, load_suite(config.suite)) < 5_500_000
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
    needs = {}
    for keep in ("all", "evaluated"):
        with pytest.raises(Exception, match=r"needs about ([\d,]+) MB") as refused:
            check_disk(
                load_config(overrides={"keep_checkpoints": keep, "steps": 300}),
                load_suite(config.suite),
                tmp_path / "run",
                None,
            )
        needs[keep] = int(re.search(r"needs about ([\d,]+) MB", str(refused.value)).group(1).replace(",", ""))  # type: ignore[union-attr]
    # 300 steps every 50: 9 checkpoints of ≈ 4.8 MB, each with ≈ 9.6 MB of optimizer state, or only 2 states kept
    assert 120 < needs["all"] < 160 and 50 < needs["evaluated"] < 80


def test_ctrl_c_outside_a_run_exits_130_with_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import plasticity_bench.harness.app.config

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plasticity_bench.harness.app.config, "load_config", interrupted)
    done = cli("base", "--preset", "smoke")
    assert done.returncode == 130 and done.stderr.strip() == "interrupted"


def test_a_signal_inside_an_uninterruptible_block_waits_for_its_end() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    finished = False
    with pytest.raises(Interrupted) as stop, stop_on_signals():
        with uninterruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            finished = True
        raise AssertionError("not reached: the deferred signal is raised when the block ends")
    assert finished and stop.value.exit_status == 143
    with pytest.raises(Interrupted) as stop, stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert stop.value.exit_status == 130
    assert (
        signal.getsignal(signal.SIGINT),
        signal.getsignal(signal.SIGTERM),
    ) == before  # the previous handlers are back


def test_batch_streams_restart_at_any_index() -> None:
    from plasticity_bench.harness.app.organism import build_tokenizer
    from plasticity_bench.tasks.base import Item
    from plasticity_bench.trainers.common import batches
    from plasticity_bench.trainers.policy import PreferencePair, pair_batches

    tokenizer = build_tokenizer()
    items = [
        Item(str(i), "math", "chain_sum", "easy", f"calc {i}+1\n", f"{i}+1={i + 1}#{i + 1}", str(i + 1))
        for i in range(9)
    ]
    pairs = [PreferencePair(f"p{i}", f"c{i}", f"r{i}", float(i), -float(i)) for i in range(7)]
    for make in (
        lambda start: batches(tokenizer, items, 3, "0/easy", start),
        lambda start: pair_batches(tokenizer, pairs, 3, 0, start),
    ):
        whole = make(0)
        stream = [next(whole) for _ in range(6)]
        for start in (1, 4):
            restarted = make(start)
            for expected in stream[start:]:
                got = next(restarted)
                assert all(torch.equal(got[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_the_loop_resumes_bit_for_bit_and_needs_the_optimizer_state() -> None:
    """In process, on a tiny random Qwen3: train 4 steps saving at 2; resuming from checkpoint 2
    ends with the same weights, and a negative control without the optimizer state does not."""
    import copy
    import io

    from plasticity_bench.harness.app.organism import OrganismConfig, build_model, build_tokenizer
    from plasticity_bench.tasks.base import Item
    from plasticity_bench.trainers.common import Checkpoint, LoopConfig, Stage, TrainContext, train
    from plasticity_bench.trainers.sft import SFT

    tokenizer = build_tokenizer()
    items = [
        Item(str(i), "math", "chain_sum", "easy", f"calc {i}+1\n", f"{i}+1={i + 1}#{i + 1}", str(i + 1))
        for i in range(8)
    ]
    stages = [Stage("easy", items, 3, 1e-2), Stage("hard", items[::-1], 3, 1e-3)]
    loop = LoopConfig(
        batch_size=4,
        warmup_fraction=0.3,
        min_lr_ratio=0.1,
        weight_decay=0.01,
        grad_clip=1.0,
        checkpoint_every=2,
        seed=0,
    )
    tiny = OrganismConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    saved: dict[int, tuple[dict, bytes]] = {}

    def save(checkpoint: Checkpoint) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint.state, buffer)  # what the run folder keeps: a serialised copy
        saved[checkpoint.step] = (copy.deepcopy(model.state_dict()), buffer.getvalue())

    model = build_model(tiny, len(tokenizer))
    full_log = train(model, SFT(), stages, TrainContext(tokenizer, loop), save)
    final = copy.deepcopy(model.state_dict())
    assert sorted(saved) == [2, 3, 4, 6]

    def resumed(step: int, drop_optimizer: bool = False) -> tuple[dict, list]:
        weights, blob = saved[step]
        state = torch.load(io.BytesIO(blob), weights_only=True)
        if drop_optimizer:
            state["optimizer"]["state"] = {}
        again = build_model(tiny, len(tokenizer))
        again.load_state_dict(weights)
        log = train(again, SFT(), stages, TrainContext(tokenizer, loop), resume=state)
        return again.state_dict(), log

    for step in (2, 3, 4):  # mid-stage, at the stage boundary, in the second stage
        weights, log = resumed(step)
        assert all(torch.equal(weights[k], final[k]) for k in final), step
        assert log == full_log
    weights, _ = resumed(4, drop_optimizer=True)
    assert not all(torch.equal(weights[k], final[k]) for k in final)


def test_a_folder_killed_while_being_created_is_not_refused(tmp_path: Path) -> None:
    """open_or_create writes eval_items.parquet, then run.json; a kill in between must not block the re-run."""
    from plasticity_bench.harness.core.errors import BenchError
    from plasticity_bench.harness.store import RunStore

    (tmp_path / "eval_items.parquet").write_bytes(b"half")
    (tmp_path / "run.json.tmp").write_text("{")
    RunStore.check_target(tmp_path, "abc")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BenchError, match="holds no run"):
        RunStore.check_target(tmp_path, "abc")
