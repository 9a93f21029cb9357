"""`bench eval --watch` beside a Trainer that rotates its checkpoints (`save_total_limit`), and a watch that fails
after it has scored: harness/app/watch.py pins each checkpoint before scoring it and never deletes scored work.

The training output folder is written here the way the Trainer and the shipped callback write it (checkpoint
folders, then their `.bench-complete` marker; the rotation deletes the oldest), so the timing is the test's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.app.callback import COMPLETE_MARKER, DONE_MARKER, WATCHED_MARKER
from plasticity_bench.harness.app.watch import PINNED, holds_results, pin_ready
from plasticity_bench.harness.store import read_manifest
from tests.test_sweep import TINY, save_organism

ROOT = Path(__file__).resolve().parent.parent
EVAL = ("--suite", "micro", "--limit", "2", "-q")
ORGANISM = replace(TINY, max_positions=128)  # room for the sets' answers


def save_checkpoint(out: Path, step: int, organism: Path) -> Path:
    """A complete Trainer checkpoint: the model, the training state scoring never reads, then the marker."""
    folder = out / f"checkpoint-{step}"
    shutil.copytree(organism, folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    (folder / "optimizer.pt").write_bytes(b"optimizer state")
    (folder / COMPLETE_MARKER).write_text("")
    return folder


def scored_steps(run: Path) -> set[int]:
    try:
        return set(pd.read_parquet(run / "records.parquet")["step"])
    except (OSError, ValueError, KeyError):  # not written yet
        return set()


def wait_for(run: Path, step: int, watch: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while step not in scored_steps(run) or not (run / "report.html").is_file():
        assert watch.poll() is None, watch.communicate()[1][-3000:]
        assert time.time() < deadline, f"step {step} never scored"
        time.sleep(0.3)


def watch_command(out: Path, base: Path, run: Path) -> list[str]:
    cli = [sys.executable, "-m", "plasticity_bench.harness.app.cli", "eval", str(out), "--watch"]
    return [*cli, "--base", str(base), "--out", str(run), *EVAL]


@pytest.mark.e2e
def test_rotated_checkpoints_stay_scored_and_a_later_error_keeps_the_run(bench_cache: Path, tmp_path: Path) -> None:
    base = save_organism(tmp_path / "base", ORGANISM)
    trained = save_organism(tmp_path / "trained", ORGANISM, seed=1)
    other = save_organism(tmp_path / "other", replace(ORGANISM, hidden_size=48), seed=2)  # another architecture
    out, run = tmp_path / "trainer-out", tmp_path / "watched"
    out.mkdir()
    (out / WATCHED_MARKER).write_text("")
    save_checkpoint(out, 2, trained)
    env = {**os.environ, "PLASTICITY_BENCH_CACHE": str(bench_cache), "OMP_NUM_THREADS": "1"}
    watch = subprocess.Popen(watch_command(out, base, run), env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(run, 2, watch)
        before = pd.read_parquet(run / "records.parquet").query("step == 2").reset_index(drop=True)
        save_checkpoint(out, 4, trained)  # save_total_limit=1: the next save deletes checkpoint-2
        shutil.rmtree(out / "checkpoint-2")
        wait_for(run, 4, watch)
        save_checkpoint(out, 6, other)  # a checkpoint the sweep refuses: the round fails
        (out / DONE_MARKER).write_text("")
        _, stderr = watch.communicate(timeout=240)
    finally:
        watch.kill()

    assert watch.returncode == 2, stderr[-3000:]
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    # the run folder the watch created is kept with what it scored, the rotated-away step included
    records = pd.read_parquet(run / "records.parquet")
    assert set(records["step"]) == {0, 2, 4}
    pd.testing.assert_frame_equal(records.query("step == 2").reset_index(drop=True), before)
    manifest = read_manifest(run / "checkpoints")
    assert [record.step for record in manifest] == [0, 2, 4]
    pinned = run / PINNED / "checkpoint-2"
    assert all((run / record.path).is_dir() for record in manifest)  # generating again still finds every model
    assert (pinned / "model.safetensors").is_file() and not (pinned / "optimizer.pt").exists()
    assert (run / PINNED / "checkpoint-4" / "model.safetensors").stat().st_ino == (
        out / "checkpoint-4" / "model.safetensors"
    ).stat().st_ino  # a hard link, not a copy


def test_a_checkpoint_deleted_before_it_is_pinned_is_skipped_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    organism = save_organism(tmp_path / "organism", ORGANISM)
    out, pinned = tmp_path / "trainer-out", tmp_path / "run" / PINNED
    kept = save_checkpoint(out, 2, organism)
    half_deleted = save_checkpoint(out, 4, organism)
    (half_deleted / "model.safetensors").unlink()  # the rotation's rmtree had reached the weights
    listed = [kept, half_deleted, out / "checkpoint-6"]  # checkpoint-6: listed complete, gone since
    capsys.readouterr()  # the organism's saving progress
    assert pin_ready(listed, pinned, skipped := set()) == [pinned / "checkpoint-2"]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2 and all(line.startswith("warning: ") and "not scored" in line for line in warnings)
    assert {"checkpoint-4", "checkpoint-6"} <= {name for name in skipped}
    assert not [p for p in pinned.iterdir() if p.name.endswith(".partial")]  # nothing half-pinned is left
    assert pin_ready(listed, pinned, skipped) == [pinned / "checkpoint-2"]  # a skipped one warns once
    assert capsys.readouterr().err == ""
    assert not holds_results(tmp_path / "run")


def test_a_watch_that_scored_nothing_leaves_no_folder(bench, tmp_path: Path) -> None:
    out, run = tmp_path / "trainer-out", tmp_path / "run"
    out.mkdir()
    (out / WATCHED_MARKER).write_text("")
    (out / DONE_MARKER).write_text("")  # training ended without a checkpoint
    done = bench("eval", str(out), "--watch", "--out", str(run), *EVAL)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "no complete checkpoint" in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not run.exists()
