"""An organism that learns in context (`organism.in_context`, the `in-context` preset): part of its pre-training
shows solved examples of the item's own task first, as the few-shot probe shows them (docs/few-shot.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.app.config import load_config
from plasticity_bench.harness.app.organism import SHIPPED_ORGANISMS, build_tokenizer
from plasticity_bench.harness.app.stages.prepare import prepare
from plasticity_bench.harness.app.stages.train import foundation_items
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.few_shot import with_solved_examples
from tests.helpers import cli, cli_with_cache, rejected
from tests.test_shipped_organism import TINY_RUN


def items() -> list[Item]:
    """Twelve items of two tasks: the sums answer `=N`, the words `>W`."""
    sums = [Item(f"s{i}", "math", "sum", "easy", f"{i}+{i}", f"={2 * i}", str(2 * i)) for i in range(6)]
    words = [Item(f"w{i}", "reasoning", "word", "easy", f"rev ab{i}", f">{i}ba", f"{i}ba") for i in range(6)]
    return sums + words


def test_share_zero_leaves_the_mix_and_share_one_shows_examples_of_the_same_task() -> None:
    mix = items()
    assert with_solved_examples(mix, 0.0, 3, 0, lambda text: True) == mix
    shown = with_solved_examples(mix, 1.0, 3, 0, lambda text: True)
    assert shown == with_solved_examples(mix, 1.0, 3, 0, lambda text: True)  # drawn at the seed: the same each time
    assert shown != with_solved_examples(mix, 1.0, 3, 1, lambda text: True)
    pairs = {item.prompt + item.target for item in mix}
    for before, after in zip(mix, shown):
        assert after.target == before.target and after.id == before.id
        *examples, question = after.prompt.split("\n\n")
        assert question == before.prompt and 1 <= len(examples) <= 3
        same_task = {item.prompt + item.target for item in mix if item.task == before.task}
        assert all(example in pairs & same_task for example in examples)
        assert before.prompt + before.target not in examples  # never the item's own answer


def test_examples_that_overrun_the_context_are_dropped_first_first() -> None:
    mix = items()
    short = with_solved_examples(mix, 1.0, 3, 0, lambda text: len(text) < 24)
    assert all(len(item.prompt + item.target) < 24 or item.prompt == plain.prompt for item, plain in zip(short, mix))
    whole = with_solved_examples(mix, 1.0, 3, 0, lambda text: True)
    for cut, full in zip(short, whole):
        assert full.prompt.endswith(cut.prompt)  # the last examples kept, the question last


def test_the_setting_names_its_own_organism_and_leaves_every_other_identity() -> None:
    micro = load_suite("micro")
    plain = load_config("default")
    assert plain.organism.in_context == 0 and "in_context" not in plain.organism.identity()
    learns = load_config("in-context")
    assert learns.organism.in_context == 0.5
    assert learns.organism.fingerprint(micro) != plain.organism.fingerprint(micro)
    assert learns.fingerprint() != plain.fingerprint()


@pytest.mark.parametrize(("preset", "packed"), [("default", False), ("in-context", True)])
def test_replay_replays_the_mix_the_organism_learnt_from(tmp_path: Path, preset: str, packed: bool) -> None:
    """Replay draws the organism's own pre-training mix: on the in-context organism, with its share of items
    shown after solved examples (drawn afresh at the run's seed); on the default one, single items."""
    run = prepare(load_config(preset, overrides={"method": "replay", "train_examples": 400}), tmp_path / "run")
    replayed = foundation_items(run, build_tokenizer())
    assert abs(len(replayed) - 400) <= 5 and not (tmp_path / "run").exists()
    share = sum("\n\n" in item.prompt for item in replayed) / len(replayed)
    assert 0.4 < share < 0.6 if packed else share == 0


def test_a_share_outside_zero_to_one_is_one_line(tmp_path: Path) -> None:
    for share in ("1.5", "-0.1", ".nan"):
        config = tmp_path / "bad.yaml"
        config.write_text(f"organism: {{in_context: {share}}}\n")
        done = cli("run", "--preset", "smoke", "--config", str(config), "--out", str(tmp_path / "run"))
        rejected(done, "organism.in_context" if share != ".nan" else "in_context")
        assert not (tmp_path / "run").exists()


def test_bench_base_pre_trains_the_organism_that_learns_in_context(tmp_path: Path) -> None:
    cache, config = tmp_path / "cache", tmp_path / "in-context.yaml"
    config.write_text("organism: {in_context: 0.5}\n")
    plain = cli_with_cache(cache, "base", "--preset", "smoke", "-q", timeout=600, OMP_NUM_THREADS="1")
    learns = cli_with_cache(
        cache, "base", "--preset", "smoke", "--config", str(config), "-q", timeout=600, OMP_NUM_THREADS="1"
    )
    assert plain.returncode == 0 and learns.returncode == 0, learns.stderr[-3000:]
    folder, other = Path(learns.stdout.strip()), Path(plain.stdout.strip())
    assert folder != other and folder.parent == cache / "organisms"
    assert json.loads((folder / "organism.json").read_text())["config"]["in_context"] == 0.5
    assert (folder / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


@pytest.mark.e2e
def test_the_shipped_in_context_organism_uses_the_probes_examples(tmp_path: Path) -> None:
    """`bench run --preset in-context` (replay: the path that packs the replayed mix) starts from the shipped
    organism without pre-training, and solved examples do not break it (the default organism falls from 98 % to
    0 % on reasoning with them, BENCHMARKS.md §25)."""
    cache, config, out = tmp_path / "cache", tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(TINY_RUN)
    done = cli_with_cache(
        cache, "run", "--preset", "in-context", "-m", "replay", "-c", str(config), "--limit", "20", "--out", str(out),
        "-q", timeout=900, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["base_model_source"] == "shipped" and Path(meta["base_model"]) == SHIPPED_ORGANISMS["in-context"]
    assert not (cache / "organisms").exists()
    probe = pd.read_parquet(out / "few_shot" / "aggregates.parquet")
    start = probe[(probe.step == 0) & (probe.slice == "all")].set_index(["family", "shots"]).score
    assert start["reasoning", 3] >= start["reasoning", 0] - 15 and start["reasoning", 3] >= 70
    assert start["code", 2] >= start["code", 0] - 20
    assert "cannot use them)" not in (out / "report.html").read_text().split("Few-shot recovery")[-1]
