"""The run as stages (harness/app/run.py, harness/app/stages/): each stage is redone alone from
the run folder through the CLI, with the same result; a run folder of another format version is
refused in one line; the orchestrator stays short and no function in the app is long."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.store import RUN_FORMAT, STAGES

ROOT = Path(__file__).resolve().parent.parent
SMOKE_ARGS = ("run", "--method", "rps", "--preset", "smoke", "-q")  # what the smoke_run fixture ran


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A copy of the shared smoke run to change (its manifest's paths are relative to the folder)."""
    out = tmp_path / "rps"
    shutil.copytree(run, out, symlinks=True)
    return out


def forget(out: Path, *stages: str) -> None:
    """run.json as if `stages` had never run."""
    meta = json.loads((out / "run.json").read_text())
    for stage in stages:
        meta["stages"].pop(stage, None)
    (out / "run.json").write_text(json.dumps(meta))


def stages_of(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())["stages"]


def tables(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / name) for name in ("records.parquet", "aggregates.parquet")}


def generations(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "generations").glob("*.parquet"))}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_score_and_report_are_redone_alone(bench, smoke_run: Path, tmp_path: Path) -> None:
    out = copy_of(smoke_run, tmp_path)
    before, outputs = tables(out), generations(out)
    for name in ("records.parquet", "aggregates.parquet", "report.html"):
        (out / name).unlink()
    forget(out, "score", "report")
    done = bench("score", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    for name, frame in tables(out).items():
        pd.testing.assert_frame_equal(frame, before[name])
    assert generations(out) == outputs  # scored from the stored generations, none made
    assert stages_of(out)["score"]["done"] and stages_of(out)["report"]["done"]

    (out / "report.html").unlink()
    done = bench("report", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "<html" in (out / "report.html").read_text().lower()


def test_generate_and_kl_are_redone_alone_by_the_same_command(bench, smoke_run: Path, tmp_path: Path) -> None:
    out = copy_of(smoke_run, tmp_path)
    before, outputs, done_before = tables(out), generations(out), stages_of(out)
    manifest = (out / "checkpoints" / "manifest.json").read_bytes()
    shutil.rmtree(out / "generations")
    (out / "prompts.parquet").unlink()
    forget(out, "kl", "generate", "score", "report")

    done = bench(*SMOKE_ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    after = stages_of(out)
    assert after["train"] == done_before["train"]  # not trained again: the checkpoints were read
    assert (out / "checkpoints" / "manifest.json").read_bytes() == manifest
    assert after["kl"]["final_kl"] == done_before["kl"]["final_kl"]
    assert generations(out) == outputs  # the same completions, byte for byte
    for name, frame in tables(out).items():
        pd.testing.assert_frame_equal(frame, before[name])
    assert all(after[stage]["done"] for stage in STAGES)


@pytest.mark.parametrize("found", [None, 0, RUN_FORMAT + 1])
def test_a_run_folder_of_another_format_is_refused_in_one_line(
    bench, smoke_run: Path, tmp_path: Path, found: int | None
) -> None:
    out = copy_of(smoke_run, tmp_path)
    meta = json.loads((out / "run.json").read_text())
    assert meta["format"] == RUN_FORMAT  # what a run of this version records
    if found is None:
        del meta["format"]
    else:
        meta["format"] = found
    (out / "run.json").write_text(json.dumps(meta))
    named = "no format version" if found is None else f"format version {found}"
    records = (out / "records.parquet").read_bytes()
    for args in (
        ("score", str(out)),
        ("report", str(out)),
        ("compare", str(smoke_run), str(out)),
        (*SMOKE_ARGS, "--out", str(out)),  # resuming it
    ):
        done = bench(*args)
        assert done.returncode == 2, (args, done.stderr[-3000:])
        line = one_line(done.stderr)
        assert named in line and f"reads format version {RUN_FORMAT} only" in line, (args, line)
    assert (out / "records.parquet").read_bytes() == records  # refused before anything was written


def functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (f"{path.relative_to(ROOT)}:{node.name}", node.end_lineno - node.lineno + 1)  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def test_the_orchestrator_is_short_and_no_function_of_the_app_or_the_store_is_long() -> None:
    assert len((ROOT / "harness" / "app" / "run.py").read_text().splitlines()) <= 150
    stage_modules = {p.stem for p in (ROOT / "harness" / "app" / "stages").glob("*.py")}
    assert {"prepare", "train", "kl", "generate", "score", "report"} <= stage_modules
    files = [*(ROOT / "harness" / "app").rglob("*.py"), *(ROOT / "harness" / "store").rglob("*.py")]
    long = [(name, lines) for path in files for name, lines in functions(path) if lines > 60]
    assert long == [], long
    assert not (ROOT / "harness" / "app" / "pipeline.py").exists()
