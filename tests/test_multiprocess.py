"""Training under several processes (docs/scale.md), through the real CLI on the smoke preset, two
processes over gloo on this CPU:

- SFT by 2 processes equals 1 process with grad_accum 2 on the same global batches (each process
  trains one half of each batch's rows; the halves' weighted gradients are summed): loss per step and
  final weights within 1e-5, each an ordinary run folder. The 2-process run also checkpoints its
  gradients (gradient_checkpointing), which changes memory, not results.
- GRPO by 2 processes (each sampling its share of every rollout's prompts, seeded per shard) is
  deterministic: a repeat that is killed with SIGKILL mid-training (both processes, as `kill -9` would)
  and then resumed ends with the same bytes as the uninterrupted run (weights, train_log, records).
- bf16 mixed precision reaches the trainer (run.json's training device), and a 2-process run's
  identity differs from a 1-process run's while a 1-process run's is what it always was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from plasticity_bench.harness.app.stages.train_launch import PROGRESS_FILE, read_progress, report_progress
from plasticity_bench.harness.store import read_manifest
from tests.cli_server import run_bench
from tests.conftest import ROOT

pytestmark = pytest.mark.xdist_group("multiprocess")  # one worker builds the module's shared study/runs once

SFT = "steps: 4\ncheckpoint_every: 2\neval_per_slice: 1\n"
# a small rollout: 2 prompts × 2 samples, one prompt per process; bf16 autocast on the CPU
GRPO = SFT + "mixed_precision: bf16\noptions: {prompts_per_step: 2, group_size: 2}\n"


def bench_run(
    cache: Path, out: Path, method: str, config: Path, *args: str, kill_at: str | None = None, quiet: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("PLASTICITY_BENCH_KILL_AT", None)
    if kill_at:  # every training process SIGKILLs itself there (harness/core/interrupt.py kill_point)
        env["PLASTICITY_BENCH_KILL_AT"] = kill_at
    command = ["run", "-m", method, "--preset", "smoke", "--out", str(out), "--config", str(config), *args]
    return run_bench(*command, *(["-q"] if quiet else []), env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("multiprocess-configs")
    files = {"sft": SFT, "sft_ga2": SFT + "grad_accum: 2\n", "sft_gc": SFT + "gradient_checkpointing: true\n"}
    paths = {name: folder / f"{name}.yaml" for name in [*files, "grpo"]}
    for name, text in {**files, "grpo": GRPO}.items():
        paths[name].write_text(text)
    return paths


@pytest.fixture(scope="session")
def one_process_sft(bench_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SFT by one process with grad_accum 2: the global batches two processes split, whether data parallel
    (below) or sharded (tests/test_fsdp.py, which imports this fixture; both modules run on one worker)."""
    folder = tmp_path_factory.mktemp("one-process-sft")
    (folder / "sft_ga2.yaml").write_text(SFT + "grad_accum: 2\n")
    done = bench_run(bench_cache, folder / "one", "sft", folder / "sft_ga2.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "one"


@pytest.fixture(scope="session")
def two_process_grpo(bench_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GRPO by 2 data-parallel processes: what a repeat killed and resumed (below) and the same run sharded
    (tests/test_fsdp.py, tests/test_deepspeed.py) must reproduce."""
    folder = tmp_path_factory.mktemp("two-process-grpo")
    (folder / "grpo.yaml").write_text(GRPO)
    done = bench_run(bench_cache, folder / "whole", "grpo", folder / "grpo.yaml", "--num-processes", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "whole"


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / read_manifest(run / "checkpoints")[-1].path / "model.safetensors")


def assert_same_training(one: Path, two: Path) -> None:
    """2 processes trained what 1 process with grad_accum 2 did: loss per step and final whole weights within 1e-5."""
    log_one, log_two = (pd.read_parquet(run / "train_log.parquet") for run in (one, two))
    assert list(log_two["step"]) == list(log_one["step"]) == [1, 2, 3, 4]
    assert (log_one["loss"] - log_two["loss"]).abs().max() < 1e-5
    weights_one, weights_two = final_weights(one), final_weights(two)
    assert weights_one.keys() == weights_two.keys()  # whole tensors, the names of a 1-process checkpoint
    assert all(weights_one[k].shape == weights_two[k].shape for k in weights_one)
    assert max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one) < 1e-5


def assert_same_rollouts_and_weights(one: Path, two: Path) -> None:
    """Two GRPO runs sampled the same rollouts from the same weights: the per-step KL and loss (which the
    sampled completions decide) equal, final weights within 1e-5. A sampler left on the starting weights
    moves the weights 2e-4 from the data-parallel run's on this preset (measured by hand)."""
    log_one, log_two = (pd.read_parquet(run / "train_log.parquet") for run in (one, two))
    assert list(log_one["step"]) == list(log_two["step"]) == [1, 2, 3, 4]
    for column in ("loss", "kl", "reward_mean"):
        assert (log_one[column] - log_two[column]).abs().max() < 1e-9, column
    weights_one, weights_two = final_weights(one), final_weights(two)
    assert max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one) < 1e-5


def assert_ordinary(run: Path) -> None:
    """The run folder of a 1-process run: no training processes' leftovers."""
    leftovers = [p.name for p in run.iterdir() if p.name.startswith((".train-", "train-processes", "rollout-policy"))]
    assert not leftovers, leftovers
    assert json.loads((run / "run.json").read_text())["stages"]["score"]["done"]


def test_sft_by_two_processes_equals_one_with_the_same_global_batch(
    bench_cache: Path, configs: dict[str, Path], one_process_sft: Path, tmp_path: Path
) -> None:
    two = bench_run(bench_cache, tmp_path / "two", "sft", configs["sft_gc"], "--num-processes", "2", quiet=False)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "training (sft)" in two.stderr and "4/4" in two.stderr, two.stderr  # the launching process's bar
    for run in (one_process_sft, tmp_path / "two"):
        assert_ordinary(run)
    log_one, log_two = (pd.read_parquet(run / "train_log.parquet") for run in (one_process_sft, tmp_path / "two"))
    assert list(log_two["step"]) == [1, 2, 3, 4]
    assert (log_one["loss"] - log_two["loss"]).abs().max() < 1e-5
    weights_one, weights_two = final_weights(one_process_sft), final_weights(tmp_path / "two")
    assert max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one) < 1e-5
    # the start moved: the comparison is of trained weights, not of two copies of the start
    start = load_file(tmp_path / "two" / read_manifest(tmp_path / "two" / "checkpoints")[0].path / "model.safetensors")
    assert max((start[k] - weights_two[k]).abs().max().item() for k in start) > 1e-6
    meta_one, meta_two = (json.loads((run / "run.json").read_text()) for run in (one_process_sft, tmp_path / "two"))
    assert meta_two["training_processes"] == 2 and meta_two["launcher"] == "torchrun"
    assert meta_two["gradient_checkpointing"] is True and meta_one["gradient_checkpointing"] is False
    assert meta_one["fingerprint"] != meta_two["fingerprint"]


def test_grpo_by_two_processes_is_deterministic_and_resumes_after_kill_9(
    bench_cache: Path, configs: dict[str, Path], two_process_grpo: Path, tmp_path: Path
) -> None:
    two = ("--num-processes", "2")
    killed = bench_run(bench_cache, tmp_path / "again", "grpo", configs["grpo"], *two, kill_at="step:3")
    assert killed.returncode == 2, killed.stderr[-3000:]
    assert "resume training from step 2" in killed.stderr and len(killed.stderr.strip().splitlines()) == 1
    resumed = bench_run(bench_cache, tmp_path / "again", "grpo", configs["grpo"], *two)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    meta = json.loads((tmp_path / "again" / "run.json").read_text())
    assert meta["stages"]["train"]["resumed_from_step"] == 2
    assert meta["training_device"].startswith("cpu (bf16 autocast")
    assert_ordinary(tmp_path / "again")
    final = read_manifest(two_process_grpo / "checkpoints")[-1]
    for name in (f"{final.path}/model.safetensors", "train_log.parquet", "records.parquet"):
        assert (two_process_grpo / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    log = pd.read_parquet(two_process_grpo / "train_log.parquet")
    assert log["examples"].notna().all() if "examples" in log else True


def test_one_process_runs_keep_their_identity() -> None:
    from plasticity_bench.harness.app.config import RunConfig

    base = RunConfig()
    assert RunConfig(num_processes=2).fingerprint() != base.fingerprint()
    assert RunConfig(mixed_precision="bf16").fingerprint() != base.fingerprint()
    same = RunConfig(launcher="accelerate", gradient_checkpointing=True, mixed_precision="auto", num_processes=1)
    assert same.fingerprint() == base.fingerprint()


def test_a_batch_smaller_than_the_processes_is_refused(bench: object, tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("batch_size: 2\ngrad_accum: 2\n")
    done = bench("run", "--preset", "smoke", "--config", str(config), "--num-processes", "2", "--dry-run")  # type: ignore[operator]
    assert done.returncode == 2 and "batch_size (2) must be at least num_processes × grad_accum (4)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_pcr_sums_its_gradient_moments_over_the_processes_before_the_projection(tmp_path: Path) -> None:
    """On a rollout whose two gradients conflict in every MLP block, two processes (half of the groups
    each) reach the update one process makes from all the groups (tests/pcr_processes.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.pcr_processes", str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["metrics"]["conflict_rate"] == 1.0 and abs(one["metrics"]["alpha"] - two["metrics"]["alpha"]) < 1e-6
    assert abs(one["metrics"]["loss"] - two["metrics"]["loss"]) < 1e-6
    assert max((one["weights"][k] - two["weights"][k]).abs().max().item() for k in one["weights"]) < 1e-6


def test_the_main_training_process_reports_its_steps_to_the_launching_one(tmp_path: Path) -> None:
    """What the launching process's bar shows: the latest step the main training process wrote, never a
    step backwards, at most every PROGRESS_EVERY_S; nothing before the first report."""
    path, moves = tmp_path / PROGRESS_FILE, []
    tick = read_progress(path, lambda loss, n: moves.append((n, loss)))
    tick()
    assert moves == [] and not path.exists()
    report = report_progress(path)
    report({"step": 1, "loss": 2.5})
    report({"step": 2, "loss": 2.25})  # within PROGRESS_EVERY_S of the first: not written
    tick()
    tick()
    assert moves == [(1, 2.5)] and path.read_text() == "1 2.5"
    tick(reached=(4, float("nan")))
    assert moves == [(1, 2.5), (3, None)]
