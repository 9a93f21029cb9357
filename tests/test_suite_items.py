"""A suite's schema apart from its items: parsing reads no data, loading items is one explicit call
(`tasks.suites.items.load_eval_items`) that returns the items and the sets it skipped, and nothing
is kept between loads, so an edited data file is read as it is now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.items import load_eval_items, training_items
from tests.conftest import ROOT

SUITE = """name: own
eval:
  - {name: sums, family: math, role: target, scorer: numeric,
     source: {kind: file, path: sums.jsonl, fields: {prompt: q, answer: a}}}
  - {name: gone, family: math, role: held-out, optional: true,
     source: {kind: file, path: missing.jsonl, fields: {prompt: q, answer: a}}, scorer: numeric}
  - {name: far, family: far, role: held-out, optional: true, scorer: numeric,
     source: {kind: hub, dataset: no-such-user/no-such-set, fields: {prompt: q, answer: a}}}
train:
  easy: {source: {kind: generator, task: chain_sum, level: easy}, scorer: task}
  hard: {source: {kind: generator, task: chain_sum, level: hard}, scorer: task}
"""


def write(folder: Path, rows: list[tuple[str, str]]) -> Path:
    (folder / "sums.jsonl").write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in rows))
    path = folder / "own.yaml"
    path.write_text(SUITE)
    return path


def test_parsing_reads_no_data_and_the_target_is_declared(tmp_path: Path) -> None:
    path = tmp_path / "own.yaml"
    path.write_text(SUITE)  # no sums.jsonl at all, and a hub set that exists nowhere
    suite = load_suite(str(path))
    assert suite.target_slice == "sums/test" and suite.target_family == "math"
    assert [s.slice for s in suite.eval_sets] == ["sums/test", "gone/test", "far/test"]
    with pytest.raises(BenchError, match=r"sums\.jsonl does not exist"):
        load_eval_items(suite)  # the data is read here, and only here


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline as a process started with the switches set would be. The libraries read them once, when
    imported: in a worker that imported them for an earlier test the variables alone change nothing, and
    the optional hub set's lookup would wait on the network for tens of seconds."""
    import datasets.config
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
        monkeypatch.setattr(datasets.config, name, True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.usefixtures("offline")
def test_loading_returns_the_items_and_the_sets_it_skipped(tmp_path: Path) -> None:
    rows = [("What is 1 + 2?", "3"), ("What is 2 + 2?", "4"), ("What is 5 + 1?", "6")]
    suite = load_suite(str(write(tmp_path, rows)))
    loaded = load_eval_items(suite, per_slice=2)
    assert [item.answer for item in loaded.items] == ["3", "4"]
    assert len(loaded.prompts) == 3  # every evaluation prompt, whatever per_slice keeps: training never sees one
    assert set(loaded.skipped) == {"gone/test", "far/test"} and "missing.jsonl" in loaded.skipped["gone/test"]
    assert [s.slice for s in loaded.available_sets] == ["sums/test"]
    summary = loaded.summary()
    assert [s["slice"] for s in summary["sets"]] == ["sums/test"]
    assert set(summary["skipped"]) == {"gone/test", "far/test"}
    assert summary["target_slice"] == "sums/test"


@pytest.mark.usefixtures("offline")
def test_an_edited_data_file_is_read_again_in_the_same_process(tmp_path: Path) -> None:
    path = write(tmp_path, [("What is 1 + 2?", "3")])
    assert [item.answer for item in load_eval_items(load_suite(str(path))).items] == ["3"]
    write(tmp_path, [("What is 1 + 2?", "4"), ("What is 7 + 7?", "14")])  # a gold fixed, a row added; same YAML
    assert [item.answer for item in load_eval_items(load_suite(str(path))).items] == ["4", "14"]


def test_training_items_never_hold_a_prompt_they_are_told_to_exclude() -> None:
    micro = load_suite("micro")
    assert micro.hard is not None
    loaded = load_eval_items(micro)
    items = training_items(micro, micro.hard, 500, 0, loaded.prompts)
    assert len(items) == 500 and not loaded.prompts & {item.prompt for item in items}


def test_importing_and_parsing_suites_loads_no_item() -> None:
    """In a fresh interpreter: importing tasks.suites and parsing every shipped suite makes no item;
    loading the micro suite's items is what makes them."""
    script = """
import json
from plasticity_bench.tasks.sources import Source
from plasticity_bench.tasks.sources.generator import Generator
calls = []
for cls in (Source, Generator):
    original = cls.eval_items
    cls.eval_items = lambda self, *a, _o=original, **k: calls.append(1) or _o(self, *a, **k)
from plasticity_bench.tasks.suites import load_suite, shipped_suites
from plasticity_bench.tasks.suites.items import load_eval_items
suites = [load_suite(name) for name in shipped_suites()]
parsed = len(calls)
load_eval_items(load_suite("micro"))
print(json.dumps([parsed, len(calls)]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    parsed, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed == 0 and loaded == len(load_suite("micro").eval_sets)
