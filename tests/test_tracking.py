"""`report_to` / `--report-to`: every training step and every checkpoint's scores logged to TensorBoard,
W&B (offline) and MLflow (a file store in the run folder), read back with each tool's own reader;
and `bench eval` of a transformers `Trainer` sweep importing the Trainer's log_history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.app.config import RunConfig, load_config
from plasticity_bench.harness.app.tracking import parse_report_to
from plasticity_bench.harness.app.trainer_history import history_rows
from tests.cli_server import run_bench
from tests.conftest import ROOT
from tests.helpers import cli, rejected

TRACKERS = "tensorboard,wandb,mlflow"


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag → {step: value}, read by TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def wandb_history(run_folder: Path) -> list[dict]:
    """The history rows of an offline W&B run, read from its .wandb file by W&B's own reader."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [record["history"]["item"] for record in records if record.get("type") == "history"]


def by_axis(rows: list[dict], axis: str, prefix: str) -> dict[str, dict[int, float]]:
    """metric → {step: value} of the W&B rows that carry `axis` (train_step or checkpoint_step)."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        if axis in row:
            for key, value in row.items():
                if key.startswith(prefix):
                    out.setdefault(key, {})[int(row[axis])] = float(value)
    return out


def mlflow_history(where: dict, names: list[str]) -> dict[str, dict[int, float]]:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when told to
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=where["tracking_uri"])
    return {name: {m.step: m.value for m in client.get_metric_history(where["run_id"], name)} for name in names}


def expected_scores(aggregates: pd.DataFrame) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for row in aggregates.itertuples():
        out.setdefault(f"eval/{row.family}/{row.slice}", {})[int(row.step)] = float(row.score)
    return out


def assert_close(got: dict[int, float], want: dict[int, float], what: str) -> None:
    assert sorted(got) == sorted(want), (what, got, want)
    for step, value in want.items():
        assert got[step] == pytest.approx(value, rel=1e-6, abs=1e-6), (what, step, got[step], value)


@pytest.mark.e2e
def test_run_logs_steps_and_scores_to_all_three_trackers(bench, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    done = bench("run", "--method", "sft", "--preset", "smoke", "--out", str(out), "--report-to", TRACKERS, "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report_to" not in done.stderr, done.stderr  # no tracker dropped out with a warning
    log = pd.read_parquet(out / "train_log.parquet")
    aggregates = pd.read_parquet(out / "aggregates.parquet")
    losses = dict(zip(log.step.astype(int), log.loss))
    assert sorted(losses) == [1, 2, 3, 4]
    scores = expected_scores(aggregates)
    assert {"eval/math/all", "eval/math/chain_sum/hard"} <= set(scores) and sorted(scores["eval/math/all"]) == [0, 2, 4]
    meta = json.loads((out / "run.json").read_text())
    where = meta["tracking"]
    assert set(where) == {"tensorboard", "wandb", "mlflow"}
    assert "report_to" not in meta["config"] or meta["config"]["report_to"] == ["tensorboard", "wandb", "mlflow"]

    # TensorBoard: event files in RUN/tensorboard
    scalars = tensorboard_scalars(out / "tensorboard")
    assert_close(scalars["train/loss"], losses, "tensorboard train/loss")
    assert_close(scalars["train/lr"], dict(zip(log.step.astype(int), log.lr)), "tensorboard train/lr")
    assert {tag for tag in scalars if tag.startswith("eval/")} == set(scores)
    for tag, want in scores.items():
        assert_close(scalars[tag], want, f"tensorboard {tag}")

    # W&B: an offline run in RUN/wandb
    assert where["wandb"].startswith("wandb/offline-run-")
    rows = wandb_history(out / where["wandb"])
    train = by_axis(rows, "train_step", "train/")
    assert_close(train["train/loss"], losses, "wandb train/loss")
    evals = by_axis(rows, "checkpoint_step", "eval/")
    assert set(evals) == set(scores)
    for tag, want in scores.items():
        assert_close(evals[tag], want, f"wandb {tag}")

    # MLflow: a file store in RUN/mlruns
    assert where["mlflow"]["tracking_uri"] == (out / "mlruns").resolve().as_uri()
    history = mlflow_history(where["mlflow"], ["train/loss", *scores])
    assert_close(history["train/loss"], losses, "mlflow train/loss")
    for tag, want in scores.items():
        assert_close(history[tag], want, f"mlflow {tag}")


def test_report_to_is_not_part_of_the_run_identity() -> None:
    assert RunConfig(report_to=("tensorboard", "wandb")).fingerprint() == RunConfig().fingerprint()


def test_report_to_flag_overrides_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("report_to: [tensorboard, mlflow]\n")
    assert load_config("smoke", config).report_to == ("tensorboard", "mlflow")
    flag = parse_report_to("wandb, tensorboard")
    assert load_config("smoke", config, {"report_to": flag}).report_to == ("wandb", "tensorboard")
    assert load_config("smoke", config, {"report_to": parse_report_to("none")}).report_to == ()
    assert load_config("smoke", config, {"report_to": parse_report_to(None)}).report_to == ("tensorboard", "mlflow")


def test_trainer_log_history_rows() -> None:
    """Training entries become rows (learning_rate → lr), evaluations join their step, the summary is no step."""
    history = [
        {"loss": 2.5, "grad_norm": 1.0, "learning_rate": 0.01, "epoch": 0.5, "step": 1},
        {"loss": 2.0, "grad_norm": 0.8, "learning_rate": 0.005, "epoch": 1.0, "step": 2},
        {"eval_loss": 2.2, "eval_runtime": 0.1, "epoch": 1.0, "step": 2},
        {"train_runtime": 3.0, "train_loss": 2.25, "total_flos": 10.0, "epoch": 1.0, "step": 2},
    ]
    assert history_rows(history) == [
        {"step": 1, "stage": "trainer", "loss": 2.5, "grad_norm": 1.0, "lr": 0.01, "epoch": 0.5},
        {
            "step": 2,
            "stage": "trainer",
            "loss": 2.0,
            "grad_norm": 0.8,
            "lr": 0.005,
            "epoch": 1.0,
            "eval_loss": 2.2,
            "eval_runtime": 0.1,
        },
    ]


def test_unknown_tracker_is_one_line_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rejected(
        cli("run", "--preset", "smoke", "--out", str(out), "--report-to", "tensorboard,comet"),
        "unknown tracker 'comet'",
        "tensorboard, wandb, mlflow",
    )
    config = tmp_path / "config.yaml"
    config.write_text("report_to: [wandb, neptune]\n")
    rejected(cli("run", "--preset", "smoke", "-c", str(config), "--out", str(out)), "unknown tracker 'neptune'")
    config.write_text("report_to: wandb\n")
    rejected(cli("run", "--preset", "smoke", "-c", str(config), "--out", str(out)), "report_to must be a list of names")
    rejected(
        cli("eval", str(tmp_path), "--suite", "micro", "--out", str(out), "--report-to", "comet"),
        "unknown tracker 'comet'",
    )
    assert not out.exists()


def test_missing_tracker_package_says_how_to_install_it(bench_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # sys.modules["wandb"] = None is Python's own marker for "this module cannot be imported": a machine without wandb
    hide_wandb = (
        "import sys; sys.modules['wandb'] = None; sys.argv[0] = 'bench'; "
        "from plasticity_bench.harness.app.cli import main; main()"
    )
    command = [
        sys.executable,
        "-c",
        hide_wandb,
        "run",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--report-to",
        "tensorboard,wandb",
    ]
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(bench_cache)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "wandb is not installed" in lines[0] and "pip install wandb" in lines[0], done.stderr
    assert not out.exists()


# ---------------------------------------------------------------- bench eval of a transformers Trainer sweep


def train_with_trainer(base: Path, out: Path) -> list[dict]:
    """Four steps of transformers' Trainer, a checkpoint every 2 and a log entry every step; the log_history."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from tests.test_sweep import CharData

    tokenizer = AutoTokenizer.from_pretrained(base)
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=4,
        save_steps=2,
        logging_steps=1,
        learning_rate=1e-2,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    trainer = Trainer(model=model, args=args, train_dataset=CharData(tokenizer), processing_class=tokenizer)
    trainer.train()
    return trainer.state.log_history


@pytest.mark.e2e
def test_bench_eval_imports_the_trainers_log_history(bench, tmp_path: Path) -> None:
    from plasticity_bench.harness.app.organism import OrganismConfig
    from tests.test_sweep import save_organism

    organism = OrganismConfig(
        hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=128
    )
    base = save_organism(tmp_path / "base", organism)
    sweep = tmp_path / "trainer-out"
    history = train_with_trainer(base, sweep)
    trainer_losses = {entry["step"]: entry["loss"] for entry in history if "loss" in entry}
    assert sorted(trainer_losses) == [1, 2, 3, 4]
    out = tmp_path / "eval"
    done = bench(
        "eval",
        str(sweep),
        "--base",
        str(base),
        "--suite",
        "micro",
        "--limit",
        "4",
        "--out",
        str(out),
        "--report-to",
        "tensorboard",
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]

    log = pd.read_parquet(out / "train_log.parquet")
    assert_close(dict(zip(log.step.astype(int), log.loss)), trainer_losses, "train_log.parquet loss")
    assert set(log.stage) == {"trainer"} and "lr" in log and "grad_norm" in log
    train_stage = json.loads((out / "run.json").read_text())["stages"]["train"]
    assert Path(train_stage["train_log_from"]) == (sweep / "checkpoint-4" / "trainer_state.json").resolve()
    page = (out / "report.html").read_text()
    assert "No training log" not in page and "training objectives vs step" in page

    scalars = tensorboard_scalars(out / "tensorboard")
    assert_close(scalars["train/loss"], trainer_losses, "tensorboard train/loss")
    assert sorted(scalars["eval/math/all"]) == [0, 2, 4]


@pytest.mark.e2e
def test_steps_land_as_they_are_made_and_a_resumed_run_logs_them_all(bench_cache: Path, tmp_path: Path) -> None:
    """Killed (SIGKILL) after checkpoint 2: TensorBoard already holds steps 1-2; the resumed run logs 1-4."""
    out = tmp_path / "sft"
    command = [
        sys.executable,
        "-m",
        "plasticity_bench.harness.app.cli",
        "run",
        "--method",
        "sft",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--report-to",
        "tensorboard",
        "-q",
    ]
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(bench_cache), "OMP_NUM_THREADS": "1"}
    kill = {**env, "PLASTICITY_BENCH_KILL_AT": "checkpoint:2"}
    killed = run_bench(*command[3:], env=kill, cwd=ROOT, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert sorted(tensorboard_scalars(out / "tensorboard")["train/loss"]) == [1, 2]
    done = run_bench(*command[3:], env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = pd.read_parquet(out / "train_log.parquet")
    losses = dict(zip(log.step.astype(int), log.loss))
    assert_close(tensorboard_scalars(out / "tensorboard")["train/loss"], losses, "resumed train/loss")
