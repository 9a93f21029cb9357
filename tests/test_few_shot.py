"""The few-shot recovery probe (tasks/suites/few_shot.py, docs/few-shot.md): its prompts, a smoke run
that writes its records and both curves into the report, and the suite errors a user can make."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.evaluation.few_shot import recovery_row
from plasticity_bench.tasks.prompting import ITEM_EXAMPLES, PromptFormat, messages, render
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.few_shot import POOL_SIZE, probe_items
from plasticity_bench.tasks.suites.items import load_eval_items
from tests.helpers import cli, rejected

MICRO_PROBES = {"reverse/easy": 3, "sort_letters/easy": 3, "affine/easy": 2, "string_fn/easy": 2}


def sums_suite(folder: Path, *, rows: int = 4, few_shot: object = 2, extra: str = "") -> Path:
    """A user's suite of `rows` sums, its held-out set probed with `few_shot` examples."""
    data = folder / "sums.jsonl"
    data.write_text(
        "".join(json.dumps({"q": f"What is {a} + {a + 1}?", "a": str(2 * a + 1)}) + "\n" for a in range(rows))
    )
    suite = folder / "sums.yaml"
    suite.write_text(
        f"""name: sums
defaults:
  prompt: {{chat: false}}
  sampling: {{max_new_tokens: 4}}
eval:
  - {{name: target, family: math, role: target, source: {{kind: generator, task: chain_sum, level: hard, n: 4}},
     scorer: task}}
  - name: sums
    family: arithmetic
    source: {{kind: file, path: sums.jsonl, fields: {{prompt: q, answer: a}}}}
    scorer: numeric
    few_shot: {few_shot}
{extra}train:
  easy: {{source: {{kind: generator, task: chain_sum, level: easy}}, scorer: task}}
  hard: {{source: {{kind: generator, task: chain_sum, level: hard}}, scorer: task}}
foundation: [[chain_sum, easy]]
"""
    )
    return suite


# ---------------------------------------------------------------- the prompts


def test_each_probe_item_shows_k_examples_drawn_deterministically_never_itself() -> None:
    suite = load_suite("micro")
    evaluation = load_eval_items(suite)
    again = load_eval_items(suite)
    assert evaluation.probes == again.probes  # the same draw every time
    by_slice: dict[str, list[Item]] = {}
    for item in evaluation.probes:
        by_slice.setdefault(item.slice, []).append(item)
    assert {s: len(items) for s, items in by_slice.items()} == dict.fromkeys(MICRO_PROBES, 50)
    shown = {item.id: item for item in evaluation.items}
    for slice_, items in by_slice.items():
        for item in items:
            examples = item.meta[ITEM_EXAMPLES]
            assert len(examples) == MICRO_PROBES[slice_]
            # the probed item is the evaluated one, unchanged but for its examples
            assert {**item.meta, ITEM_EXAMPLES: None} == {**shown[item.id].meta, ITEM_EXAMPLES: None}
            assert item.prompt == shown[item.id].prompt
            # a generated set's examples are fresh items: never an evaluation prompt of the suite
            assert not {user for user, _ in examples} & evaluation.prompts
        assert len({json.dumps(item.meta[ITEM_EXAMPLES]) for item in items}) > len(items) // 2  # drawn per item


def test_a_read_sets_examples_are_its_other_items(tmp_path: Path) -> None:
    suite = load_suite(str(sums_suite(tmp_path, rows=5, few_shot=3)))
    sums = suite.eval_set("sums/test")
    items = [item for item in load_eval_items(suite).items if item.slice == "sums/test"]
    probes = probe_items(sums, items, items, suite.eval_seed, frozenset())
    assert probe_items(sums, items, items, suite.eval_seed, frozenset()) == probes
    answers = {item.prompt: item.answer for item in items}
    for probe in probes:
        examples = probe.meta[ITEM_EXAMPLES]
        assert len(examples) == 3 and len({user for user, _ in examples}) == 3
        assert probe.prompt not in {user for user, _ in examples}  # never the item itself
        assert all(answers[user] == answer for user, answer in examples)  # solved: each with its own gold


def test_the_prompt_builder_puts_the_examples_before_the_question() -> None:
    item = Item(
        "i", "f", "t", "easy", "rev abc\n", "cba", "cba", {ITEM_EXAMPLES: [["rev xy\n", "yx"], ["rev pq\n", "qp"]]}
    )
    raw = PromptFormat(chat=False, fewshot=(("rev ab\n", "ba"),))
    assert render(raw, item, None) == "rev ab\nba\n\nrev xy\nyx\n\nrev pq\nqp\n\nrev abc\n"
    chat = PromptFormat(system="Be brief.")
    assert messages(chat, item) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "rev xy\n"},
        {"role": "assistant", "content": "yx"},
        {"role": "user", "content": "rev pq\n"},
        {"role": "assistant", "content": "qp"},
        {"role": "user", "content": "rev abc\n"},
    ]
    plain = Item("j", "f", "t", "easy", "rev abc\n", "cba", "cba")
    assert render(PromptFormat(chat=False), plain, None) == "rev abc\n"  # any other item: unchanged


def test_recovered_share_is_the_part_of_the_zero_shot_drop_the_examples_undo() -> None:
    ones, zeros, half = np.full(4, 100.0), np.zeros(4), np.array([100.0, 100.0, 0.0, 0.0])
    row = recovery_row("f", 3, ones, zeros, ones, half)  # zero-shot 100 → 0, few-shot 100 → 50
    assert (row["zero_change"], row["few_change"], row["recovered"]) == (-100.0, -50.0, 50.0)
    assert row["recovered_share"] == pytest.approx(0.5)
    assert math.isnan(recovery_row("f", 3, zeros, ones, zeros, ones)["recovered_share"])  # no drop, nothing to recover
    # examples that ruin the starting model (it cannot use context): its few-shot curve says nothing of format
    blind = recovery_row("f", 3, ones, zeros, zeros, zeros)
    assert blind["start_effect"] == -100.0 and not blind["usable"] and math.isnan(blind["recovered_share"])


# ---------------------------------------------------------------- through the CLI


def test_a_smoke_run_writes_the_probe_and_the_report_draws_both_curves(smoke_run: Path) -> None:
    meta = json.loads((smoke_run / "run.json").read_text())
    assert {s: spec["shots"] for s, spec in meta["few_shot"]["sets"].items()} == MICRO_PROBES
    records = pd.read_parquet(smoke_run / "few_shot" / "records.parquet")
    steps = sorted(set(pd.read_parquet(smoke_run / "records.parquet").step))
    assert sorted(set(records.step)) == steps
    per_cell = records.groupby(["slice", "shots", "step"]).item_id.nunique()
    assert set(per_cell) == {4}  # the smoke preset's 4 items per set, each zero-shot and with k examples
    assert {(s, k) for s, k, _ in per_cell.index} == {(s, 0) for s in MICRO_PROBES} | set(MICRO_PROBES.items())
    assert set(records.family) == {"reasoning", "code"}
    main = pd.read_parquet(smoke_run / "records.parquet")  # the run's own records hold no probe row
    assert len(main) == len(pd.read_parquet(smoke_run / "eval_items.parquet")) * len(steps)
    zero = records[records.shots == 0].drop(columns=["shots", "slice"]).sort_values(["step", "item_id"])
    mine = main[main.item_id.isin(zero.item_id)].sort_values(["step", "item_id"])
    assert zero.reset_index(drop=True).equals(mine.reset_index(drop=True))  # the zero-shot rows are the run's
    prompts = pd.read_parquet(smoke_run / "few_shot" / "prompts.parquet").prompt
    assert prompts.str.count("\n\n").min() == 2  # raw text: each example ends with a blank line

    report = (smoke_run / "report.html").read_text()
    assert '<a href="#few-shot">' in report and "<h2 id=few-shot>Few-shot recovery</h2>" in report
    curves = set(re.findall(r'id="(few-shot-[a-z]+-(?:zero|few)-\d)"', report))
    assert curves == {f"few-shot-{f}-{k}-0" for f in ("reasoning", "code") for k in ("zero", "few")}
    assert report.count("<td class=recovered>") == 2  # one row per probed family


def test_bad_few_shot_settings_are_one_line_errors(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rejected(
        cli("run", "--preset", "smoke", "--suite", str(sums_suite(tmp_path, few_shot=-1)), "--out", str(out)),
        "eval set 2 (sums/test): few_shot must be a whole number of solved examples >= 0",
    )
    assert not out.exists()
    too_many = "few_shot: 3 asks for 3 solved examples besides each item, but the set has only 2 other items"
    rejected(cli("suites", "--check", str(sums_suite(tmp_path, rows=3, few_shot=3))), too_many, "at most 2")
    rejected(cli("suites", "--check", str(sums_suite(tmp_path, few_shot="two"))), "few_shot must be a whole number")
    capped = sums_suite(tmp_path, few_shot=0, extra="    few_shot_items: 2\n")
    rejected(cli("suites", "--check", str(capped)), "few_shot_items caps the few-shot probe; set few_shot")


def test_a_probe_too_long_for_the_organism_is_refused_before_anything_runs(tmp_path: Path) -> None:
    suite = tmp_path / "long.yaml"
    micro = (Path(__file__).parent.parent / "tasks" / "suites" / "micro.yaml").read_text()
    suite.write_text(micro.replace("few_shot: 2,", "few_shot: 9,"))
    assert POOL_SIZE >= 9
    rejected(
        cli("run", "--preset", "smoke", "--suite", str(suite), "--out", str(tmp_path / "run")),
        "(affine/easy): few_shot: 9 makes prompts of up to",
        "organism.max_positions",
    )
    assert not (tmp_path / "run").exists()


def test_bench_eval_probes_every_checkpoint_and_bench_score_rescores_it(smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    checkpoints = [str(smoke_run / "checkpoints" / f"step-{step:06d}") for step in (0, 4)]
    done = cli("eval", *checkpoints, "--steps", "0,4", "--suite", "micro", "--limit", "1", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    records = pd.read_parquet(out / "few_shot" / "records.parquet")
    assert records.groupby(["step", "shots"]).item_id.nunique().to_dict() == {
        (step, shots): count for step in (0, 4) for shots, count in ((0, 4), (2, 2), (3, 2))
    }
    (out / "few_shot" / "records.parquet").unlink()
    assert cli("score", str(out)).returncode == 0
    assert pd.read_parquet(out / "few_shot" / "records.parquet").equals(records)
