"""`bench eval --watch DIR` (harness/app/watch.py) with the shipped `BenchCheckpointCallback`
(harness/app/callback.py): a transformers Trainer in one process, the watch in another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.app.callback import COMPLETE_MARKER, DONE_MARKER, WATCHED_MARKER
from plasticity_bench.harness.app.watch import complete_checkpoints
from tests.test_sweep import TINY, save_organism

ROOT = Path(__file__).resolve().parent.parent
EVAL = ("--suite", "micro", "--limit", "2", "-q")

# Process A: waits for the watch to have opened its run folder, then trains 6 steps, saving every 2,
# slowly enough that the watch sees the checkpoints arrive one by one.
TRAINER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
    from plasticity_bench.harness.app.callback import BenchCheckpointCallback

    base, out, run = (Path(a) for a in sys.argv[1:4])
    deadline = time.time() + 120
    while not (run / "run.json").is_file() and time.time() < deadline:
        time.sleep(0.2)
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = [tokenizer(f"{a}+{b}={a + b}")["input_ids"] for a in range(4) for b in range(4)]

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            ids = torch.tensor(rows[i])
            return {"input_ids": ids, "labels": ids.clone()}

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(1.5)

    args = TrainingArguments(
        output_dir=str(out), max_steps=6, save_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=1, seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    trainer = Trainer(model=model, args=args, train_dataset=Data(), processing_class=tokenizer,
                      callbacks=[BenchCheckpointCallback(), Slow()])
    trainer.train()
    """
)


def env(bench_cache: Path) -> dict[str, str]:
    return {**os.environ, "PLASTICITY_BENCH_CACHE": str(bench_cache), "OMP_NUM_THREADS": "1"}


def records(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "records.parquet")
    return frame.sort_values(["step", "item_id", "sample"]).reset_index(drop=True)


@pytest.mark.e2e
def test_watch_scores_each_checkpoint_once_as_training_runs(bench, bench_cache: Path, tmp_path: Path) -> None:
    base = save_organism(tmp_path / "base", replace(TINY, max_positions=128))  # room for the sets' answers
    out, run = tmp_path / "trainer-out", tmp_path / "watched"
    out.mkdir()
    started = time.time()
    watch = subprocess.Popen(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", "eval", str(out), "--watch", "--base", str(base)]
        + ["--out", str(run), *EVAL],
        env=env(bench_cache),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        trained = subprocess.run(
            [sys.executable, "-c", TRAINER, str(base), str(out), str(run)],
            env=env(bench_cache),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        training_ended = time.time()
        stdout, stderr = watch.communicate(timeout=300)
    finally:
        watch.kill()
    assert watch.returncode == 0, stderr[-3000:]
    assert (out / DONE_MARKER).is_file() and (out / WATCHED_MARKER).is_file()
    assert all((out / f"checkpoint-{step}" / COMPLETE_MARKER).is_file() for step in (2, 4, 6))
    assert f"run folder: {run}" in stdout

    # every checkpoint generated and scored once
    watched = records(run)
    assert sorted(watched["step"].unique()) == [0, 2, 4, 6]
    assert not watched.duplicated(["step", "item_id", "sample"]).any()
    per_step = watched.groupby("step").size()
    assert per_step.nunique() == 1 and per_step.iloc[0] > 0
    assert sorted(p.name for p in (run / "generations").glob("*.parquet")) == [
        f"step-{step:06d}.parquet" for step in (0, 2, 4, 6)
    ]
    assert (run / "report.html").is_file()
    rounds = json.loads((run / "run.json").read_text())["watch_rounds"]
    assert sorted(step for steps in rounds for step in steps) == [0, 2, 4, 6]
    assert len(rounds) >= 2, rounds  # the checkpoints came while training ran, not all at the end
    print(f"watch: {time.time() - started:.0f} s, {time.time() - training_ended:.0f} s after training, rounds {rounds}")

    # the same run folder as a plain `bench eval` over the finished folder
    plain = tmp_path / "plain"
    done = bench("eval", str(out), "--base", str(base), "--out", str(plain), *EVAL)
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(watched, records(plain))
    fingerprint = [json.loads((folder / "run.json").read_text())["fingerprint"] for folder in (run, plain)]
    assert fingerprint[0] == fingerprint[1]


def test_without_the_callback_a_checkpoint_counts_once_it_settles(tmp_path: Path) -> None:
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "not-a-checkpoint").mkdir()
    old = time.time() - 100
    os.utime(tmp_path / "checkpoint-2" / "model.safetensors", (old, old))
    assert complete_checkpoints(tmp_path, settle=30) == [tmp_path / "checkpoint-2"]
    assert complete_checkpoints(tmp_path, settle=30, now=time.time() + 60) == [
        tmp_path / "checkpoint-2",
        tmp_path / "checkpoint-4",
    ]
    # with the callback in use, only marked checkpoints count, however old
    (tmp_path / WATCHED_MARKER).write_text("")
    assert complete_checkpoints(tmp_path, settle=0) == []
    (tmp_path / "checkpoint-4" / COMPLETE_MARKER).write_text("")
    assert complete_checkpoints(tmp_path, settle=0) == [tmp_path / "checkpoint-4"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("{file}",), "--watch needs a training output folder"),
        (("{dir}", "{dir}"), "--watch follows one training output folder"),
        (("{dir}", "--steps", "2"), "--steps cannot be combined with --watch"),
        (("{dir}", "--watch-timeout", "0"), "--watch-timeout must be a positive number"),
    ],
)
def test_bad_watch_input_is_one_line(bench, tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "dir").mkdir()
    paths = [arg.format(file=tmp_path / "file.txt", dir=tmp_path / "dir") for arg in args]
    done = bench("eval", *paths, "--watch", "--suite", "micro", "--out", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert not (tmp_path / "run").exists()
