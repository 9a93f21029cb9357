"""Replay, L2-SP, LoRA for any method, and WiSE-FT: the batch stream and the penalty as units, the
rest end to end through the CLI on the smoke preset."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from plasticity_bench.harness.app.organism import build_tokenizer
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.store import read_manifest
from plasticity_bench.trainers.common import LoopConfig, MethodSettings, Stage, TrainContext, TrainingData, mixed_picks
from plasticity_bench.trainers.l2sp import l2sp_penalty
from plasticity_bench.trainers.replay import Replay, ReplayOptions, replay_count
from tests.cli_server import run_bench
from tests.conftest import ROOT
from tests.helpers import cli, rejected

pytestmark = pytest.mark.xdist_group("new_methods")  # the module's shared runs are built once, on one worker

LORA = "lora: {r: 8, alpha: 16, targets: [q_proj, v_proj], dropout: 0.0}\n"
WEIGHTS = "model.safetensors"


def items(prefix: str, n: int) -> list[Item]:
    return [Item(f"{prefix}{i}", "math", "t", "easy", f"{prefix}{i}=", f"{prefix}{i}", "0") for i in range(n)]


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:06d}" / WEIGHTS)


def records_at(run: Path, step: int) -> pd.DataFrame:
    records = pd.read_parquet(run / "records.parquet")
    return records[records.step == step].drop(columns="step").sort_values(["item_id", "sample"]).reset_index(drop=True)


# ---------------------------------------------------------------- replay


def test_mixed_picks_have_fixed_counts_and_resume_mid_stream() -> None:
    stream = mixed_picks([10, 5], [3, 1], "seed")
    batches = [next(stream) for _ in range(6)]
    assert all([source for source, _ in batch] == [0, 0, 0, 1] for batch in batches)
    assert all(i < (10 if source == 0 else 5) for batch in batches for source, i in batch)
    resumed = mixed_picks([10, 5], [3, 1], "seed", start=4)
    assert [next(resumed) for _ in range(2)] == batches[4:]


@pytest.mark.parametrize(("fraction", "replayed"), [(0.25, 2), (0.5, 4), (0.01, 1), (0.0, 0)])
def test_replay_batches_hold_the_replayed_share(fraction: float, replayed: int) -> None:
    tokenizer = build_tokenizer()
    data = TrainingData(easy=items("E", 20), hard=items("H", 30), foundation=items("F", 25))
    trainer = Replay(ReplayOptions(replay_fraction=fraction))
    ctx = TrainContext(tokenizer, LoopConfig(8, 0.05, 0.0, 0.0, 1.0, 0, 0))
    trainer.setup(None, data, ctx)  # type: ignore[arg-type]
    assert replay_count(8, fraction) == replayed
    (stage,) = trainer.stages(data, MethodSettings(4, 1e-3))
    seen = {"F": 0, "H": 0, "E": 0}
    for _, batch in zip(range(5), trainer.batches(None, stage, ctx)):  # type: ignore[arg-type]
        rows = [tokenizer.decode(row[row != tokenizer.pad_token_id]) for row in batch["input_ids"]]
        counts = {kind: sum(row.startswith(kind) for row in rows) for kind in seen}
        assert counts == {"F": replayed, "H": 8 - replayed, "E": 0}, rows  # auto: the foundation mix when there is one
        for kind in seen:
            seen[kind] += counts[kind]
    easy = Replay(ReplayOptions(replay_fraction=0.25, source="easy"))
    easy.setup(None, data, ctx)  # type: ignore[arg-type]
    batch = next(easy.batches(None, Stage("hard", data.hard, 4, 1e-3), ctx))  # type: ignore[arg-type]
    rows = [tokenizer.decode(row[row != tokenizer.pad_token_id]) for row in batch["input_ids"]]
    assert sum(row.startswith("E") for row in rows) == 2 and sum(row.startswith("H") for row in rows) == 6


def test_replay_without_a_foundation_mix_falls_back_to_easy_or_refuses() -> None:
    data = TrainingData(easy=items("E", 4), hard=items("H", 4))
    ctx = TrainContext(build_tokenizer(), LoopConfig(4, 0.05, 0.0, 0.0, 1.0, 0, 0))
    auto = Replay(ReplayOptions())
    auto.setup(None, data, ctx)  # type: ignore[arg-type]
    assert auto.source == "easy"
    from plasticity_bench.harness.core.errors import BenchError

    with pytest.raises(BenchError, match="source foundation needs"):
        Replay(ReplayOptions(source="foundation")).setup(None, data, ctx)  # type: ignore[arg-type]


def test_replay_runs_end_to_end(bench, tmp_path: Path) -> None:
    out = tmp_path / "replay"
    done = bench("run", "--method", "replay", "--preset", "smoke", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    log = pd.read_parquet(out / "train_log.parquet")
    assert list(log.step) == [1, 2, 3, 4] and (log.replay_share == 0.25).all()  # 1 of the smoke batch's 4
    assert json.loads((out / "run.json").read_text())["method_options"] == {"replay_fraction": 0.25, "source": "auto"}


# ---------------------------------------------------------------- L2-SP


def test_l2sp_penalty_is_half_lambda_squared_distance() -> None:
    model = torch.nn.Linear(3, 2)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert l2sp_penalty(model, start, 0.5).item() == 0  # type: ignore[arg-type]
    with torch.no_grad():
        model.weight += 2.0  # 6 coordinates moved by 2: ‖Δ‖² = 24
    assert l2sp_penalty(model, start, 0.5).item() == pytest.approx(0.5 * 0.5 * 24)  # type: ignore[arg-type]


def test_l2sp_penalty_starts_at_zero_and_grows(bench, tmp_path: Path) -> None:
    out = tmp_path / "l2sp"
    done = bench("run", "--method", "l2sp", "--preset", "smoke", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    log = pd.read_parquet(out / "train_log.parquet")
    assert log.l2sp_penalty.iloc[0] == 0  # the first step's loss is taken at θ = θ₀
    assert (log.l2sp_penalty.diff().iloc[1:] > 0).all()
    assert log.loss.to_numpy() == pytest.approx((log.sft_loss + log.l2sp_penalty).to_numpy())
    assert json.loads((out / "run.json").read_text())["method_options"] == {"lam": 0.01}


# ---------------------------------------------------------------- LoRA


@pytest.fixture(scope="module")
def lora_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lora") / "lora.yaml"
    path.write_text(LORA)
    return path


@pytest.fixture(scope="module")
def sft_lora(bench, lora_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sft-lora"
    done = bench("run", "--method", "sft", "--preset", "smoke", "--config", str(lora_config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return out


def test_lora_changes_only_the_targeted_weights(sft_lora: Path) -> None:
    start = weights(sft_lora, 0)
    for record in read_manifest(sft_lora / "checkpoints")[1:]:
        now = weights(sft_lora, record.step)
        assert now.keys() == start.keys()  # merged: a full model with the start's tensors, no adapter tensors
        changed = {name for name in start if not torch.equal(start[name], now[name])}
        assert changed == {name for name in start if name.endswith(("q_proj.weight", "v_proj.weight"))}, changed
    meta = json.loads((sft_lora / "run.json").read_text())
    assert meta["lora"] == {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"], "dropout": 0.0}
    train = meta["stages"]["train"]
    assert 0 < train["trained_parameters"] < train["parameters"] / 4


def test_lora_run_resumes_byte_identically(
    bench, bench_cache: Path, sft_lora: Path, lora_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "plasticity_bench.harness.app.cli",
        "run",
        "--method",
        "sft",
        "--preset",
        "smoke",
        "--config",
        str(lora_config),
        "--out",
        str(out),
        "-q",
    ]
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(bench_cache), "PLASTICITY_BENCH_KILL_AT": "step:3"}
    killed = run_bench(*args[3:], env=env, cwd=ROOT, timeout=600)
    assert killed.returncode == -9, killed.stderr
    env.pop("PLASTICITY_BENCH_KILL_AT")
    done = run_bench(*args[3:], env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["stages"]["train"]["resumed_from_step"] == 2
    for name in ("checkpoints/step-000004/model.safetensors", "train_log.parquet", "records.parquet"):
        assert (out / name).read_bytes() == (sft_lora / name).read_bytes(), name


def test_grpo_with_lora_completes(bench, lora_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo-lora"
    done = bench("run", "--method", "grpo", "--preset", "smoke", "--config", str(lora_config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert [r.step for r in read_manifest(out / "checkpoints")] == [0, 2, 4]
    start, final = weights(out, 0), weights(out, 4)
    assert all(
        torch.equal(start[name], final[name]) for name in start if not name.endswith(("q_proj.weight", "v_proj.weight"))
    )


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ("{targets: [q_proj, nope]}", "lora.targets: the model has no module named 'nope'"),
        ("{r: 0}", "lora.r must be positive"),
        ("{rank: 4}", "unknown setting 'lora.rank'"),
        ("{targets: q_proj}", "setting lora.targets must be a list of names"),
    ],
)
def test_bad_lora_settings_exit_2_and_write_nothing(tmp_path: Path, lora: str, message: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"lora: {lora}\n")
    rejected(
        cli("run", "--method", "sft", "--preset", "smoke", "--config", str(config), "--out", str(tmp_path / "run")),
        message,
    )
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- WiSE-FT


def test_wise_ft_interpolates_a_run_and_scores_the_curve(bench, sft_lora: Path, tmp_path: Path) -> None:
    out = tmp_path / "wise"
    done = bench("wise-ft", str(sft_lora), "--alphas", "0,0.25,0.5,1", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert [r.step for r in read_manifest(out / "checkpoints")] == [0, 250, 500, 1000]
    # α = 0 and α = 1 are the run's start and final model: the same records, exactly
    pd.testing.assert_frame_equal(records_at(out, 0), records_at(sft_lora, 0))
    pd.testing.assert_frame_equal(records_at(out, 1000), records_at(sft_lora, 4))
    start, final = weights(sft_lora, 0), weights(sft_lora, 4)
    middle = load_file(out / "interpolated" / "step-000500" / WEIGHTS)
    for name in start:
        torch.testing.assert_close(middle[name], 0.5 * start[name] + 0.5 * final[name], rtol=0, atol=1e-7)
    meta = json.loads((out / "run.json").read_text())
    assert (
        meta["wise_ft"]["alphas"] == {"0": 0.0, "250": 0.25, "500": 0.5, "1000": 1.0}
        and meta["wise_ft"]["from_step"] == 4
    )
    assert meta["method"] == "sft+wise-ft"
    assert json.loads((out / "interpolated" / "step-000250" / "wise_ft.json").read_text())["alpha"] == 0.25


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alphas", "0,1.5"], "α = 1.5 is outside [0, 1]"),
        (["--alphas", "0.5,0.5001"], "round to the same thousandth"),
        (["--alphas", "a"], "--alphas must be comma-separated numbers"),
        (["--step", "3"], "--step 3: run"),
        (["--step", "0"], "is the run's start"),
    ],
)
def test_wise_ft_bad_input(sft_lora: Path, tmp_path: Path, args: list[str], message: str) -> None:
    rejected(cli("wise-ft", str(sft_lora), *args, "--out", str(tmp_path / "wise")), message)
    assert not (tmp_path / "wise").exists()


# ---------------------------------------------------------------- RPS/EPS with a DPO stage 2


def test_rps_with_a_dpo_stage_two(bench, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    # the smoke organism never writes a whole chain right: pairs need a right final answer only
    config.write_text("options: {stage2_loss: dpo, dpo: {reward: answer, pairs: first_step}}\n")
    out = tmp_path / "rps-dpo"
    done = bench("run", "--method", "rps", "--preset", "smoke", "--config", str(config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    log = pd.read_parquet(out / "train_log.parquet")
    easy, hard = log[log.stage == "easy"], log[log.stage == "hard"]
    assert len(easy) == len(hard) == 2
    assert easy.reward_margin.isna().all() and hard.reward_margin.notna().all()  # SFT, then DPO
    assert hard.lr.iloc[0] == pytest.approx(1e-4)  # 0.1·η
    assert hard.loss.iloc[0] == pytest.approx(
        0.6931, abs=0.01
    )  # −log σ(0) at the first DPO step: θ₁ ≈ θ₀ = π_ref on the tiny run
    pairs = pd.read_parquet(out / "preference_pairs.parquet")
    assert len(pairs) > 0 and {"chosen_whole", "rejected_whole"} <= set(pairs.columns)  # options.dpo's first_step pairs
    assert not pairs.duplicated(["prompt", "chosen", "rejected"]).any()
    options = json.loads((out / "run.json").read_text())["method_options"]
    assert options["stage2_loss"] == "dpo" and options["dpo"]["pairs"] == "first_step"


def test_every_setting_but_storage_and_tracking_is_in_the_fingerprint() -> None:
    import hashlib
    from dataclasses import asdict, replace

    from plasticity_bench.harness.app.config import RunConfig

    config = RunConfig()
    # every setting, `lora`, `grad_accum` and `model_hub` at their defaults included: only where things are kept
    # or logged, and what only the memory check reads, are left out
    # strategy and sharding_engine enter only for sharded runs of N processes (tests/test_deepspeed.py)
    not_results = {
        "keep_checkpoints",
        "device",
        "report_to",
        "device_memory_gb",
        "strategy",
        "sharding_engine",
        "engines",
    }
    not_results |= {"launcher", "accelerate_config", "gradient_checkpointing"}  # how processes start, memory
    # settings newer than most runs enter only away from their defaults: every older run keeps its identity
    only_when_set = {"num_processes", "mixed_precision", "organism_seed"}
    computed = {k: v for k, v in asdict(config).items() if k not in not_results | only_when_set | {"seq_len_bound"}}
    computed["organism"] = {k: v for k, v in asdict(config.organism).items() if k != "in_context"}  # the same rule
    assert config.fingerprint() == hashlib.sha256(json.dumps(computed, sort_keys=True).encode()).hexdigest()[:16]
    assert replace(config, lora={"r": 4}).fingerprint() != config.fingerprint()
    assert replace(config, grad_accum=2).fingerprint() != config.fingerprint()
    learns = replace(config, organism=replace(config.organism, in_context=0.5))
    assert learns.fingerprint() != config.fingerprint()
