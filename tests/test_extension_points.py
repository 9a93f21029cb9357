"""A new source kind and a new backend are each one file plus one registration line, outside the
project: tests/plugins/toy_source.py and tests/plugins/toy_backend.py, named in
PLASTICITY_BENCH_PLUGINS, run through the real `bench run` (docs/extending.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT

PLUGINS = "tests.plugins.toy_source,tests.plugins.toy_backend"
TOY_SUITE = """name: toy
eval_seed: 7
defaults:
  prompt: {chat: false}
eval:
  - {name: sums, split: small, family: toy, role: target, source: {kind: toy, count: 6, start: 10}}
  - {name: sums, split: large, family: toy, role: held-out, source: {kind: toy, count: 5, start: 500}}
  - {family: reasoning, role: held-out, source: {kind: generator, task: reverse, level: easy, n: 4}, scorer: task}
train:
  easy: {source: {kind: generator, task: chain_sum, level: easy}, scorer: task}
  hard: {source: {kind: generator, task: chain_sum, level: hard}, scorer: task}
foundation: [[chain_sum, easy], [reverse, easy]]
"""


def write_toy_suite(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy.yaml"
    path.write_text(TOY_SUITE)
    return path


def test_each_plugin_is_one_file_with_one_registration_line_and_the_project_never_names_it() -> None:
    for name in ("toy_source", "toy_backend"):
        text = (ROOT / "tests" / "plugins" / f"{name}.py").read_text()
        assert len(re.findall(r"^@\w+\.register\(", text, flags=re.M)) == 1, name
    for package in ("harness", "tasks", "trainers", "reports"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "toy_source" not in text and "toy_backend" not in text and '"toy"' not in text, path


@pytest.mark.e2e
def test_a_plugin_source_and_backend_run_through_bench_run(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite, out = write_toy_suite(tmp_path), tmp_path / "run"
    monkeypatch.setenv("PLASTICITY_BENCH_PLUGINS", PLUGINS)
    done = bench(
        "run",
        "--suite",
        str(suite),
        "--preset",
        "smoke",
        "--method",
        "sft",
        "--backend",
        "toy",
        "--out",
        str(out),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["backend"] == "toy"
    sources = {s["slice"]: s["source"] for s in meta["suite_spec"]["sets"]}
    assert sources == {"sums/small": "toy", "sums/large": "toy", "reverse/easy": "generator"}
    assert meta["suite_spec"]["target_slice"] == "sums/small"
    records = pd.read_parquet(out / "records.parquet")
    toy = records[records.task == "sums"]
    assert set(toy.level) == {"small", "large"} and len(toy) == 2 * 4 * records.step.nunique()  # smoke: 4 per set
    assert (toy.correct == 1).all()  # the toy backend answered them, at every checkpoint
    assert toy.output.str.startswith("The answer is ").all()
    held_out = records[records.task == "reverse"]
    assert len(held_out) == 4 * records.step.nunique()
    assert not held_out.output.str.startswith("The answer is ").any()  # delegated to hf: the checkpoint's own text
    aggregates = pd.read_parquet(out / "aggregates.parquet")
    target = aggregates[(aggregates.family == "toy") & (aggregates.slice == "sums/small")]
    assert (target.score == 100.0).all() and len(target) == records.step.nunique()  # points


def test_without_the_plugins_the_names_are_unknown_in_one_line(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = write_toy_suite(tmp_path)
    monkeypatch.delenv("PLASTICITY_BENCH_PLUGINS", raising=False)
    done = bench("run", "--suite", str(suite), "--preset", "smoke", "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert "unknown source kind 'toy'" in done.stderr
    done = bench("run", "--preset", "smoke", "--backend", "toy", "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "unknown backend 'toy'" in done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_plugin_module_that_cannot_be_imported_is_one_line(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLASTICITY_BENCH_PLUGINS", "tests.plugins.toy_source,no_such_plugin_module")
    done = bench("run", "--suite", str(write_toy_suite(tmp_path)), "--preset", "smoke", "--out", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: PLASTICITY_BENCH_PLUGINS: cannot import plugin module "
        "'no_such_plugin_module' (No module named 'no_such_plugin_module')"
    )
    assert not (tmp_path / "run").exists()


def test_help_imports_no_plugin_and_nothing_heavy(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_cli_startup import probe

    monkeypatch.setenv("PLASTICITY_BENCH_PLUGINS", PLUGINS)
    result = probe("--help")
    assert result == {"status": 0, "heavy": []}
