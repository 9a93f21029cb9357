"""Declared method options (harness/core/options.py): `bench methods --options METHOD` lists what
each Options dataclass declares, and one check refuses a bad value with one line naming it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from plasticity_bench.harness.core.options import declaration, describe
from plasticity_bench.trainers import TRAINERS
from plasticity_bench.trainers.grpo import GRPOOptions
from plasticity_bench.trainers.rps import RPSOptions
from tests.helpers import cli, rejected


def option_rows(stdout: str) -> dict[str, list[str]]:
    """`bench methods --options` output: option name → [type, default, allowed, help] (columns split on 2+ spaces)."""
    header, *lines = stdout.strip().splitlines()
    assert header.split() == ["option", "type", "default", "allowed", "help"]
    rows = {}
    for line in lines:
        name, *rest = [cell.strip() for cell in line.split("  ") if cell.strip()]
        rows[name] = rest
    return rows


def test_grpo_options_listed_with_type_default_range_and_help(bench) -> None:
    done = bench("methods", "--options", "grpo")
    assert done.returncode == 0, done.stderr
    rows = option_rows(done.stdout)
    assert list(rows) == [item.name for item in dataclasses.fields(GRPOOptions)]  # every field, in order
    for item in dataclasses.fields(GRPOOptions):
        kind, default, allowed, help_text = rows[item.name]
        assert kind == str(item.type) and default == str(item.default)
        assert allowed == declaration(item).allowed() != ""  # every GRPO option declares its choices or range
        assert help_text == declaration(item).help != ""
    assert rows["group_size"][:3] == ["int", "8", ">= 2"]
    assert rows["clip_eps"][:3] == ["float", "0.2", "in (0, 1)"]
    assert rows["reward"][:3] == ["str", "verified", "one of verified, answer"]


def test_rps_options_include_its_knobs_and_the_nested_dpo_stage() -> None:
    done = cli("methods", "--options", "rps")
    assert done.returncode == 0, done.stderr
    rows = option_rows(done.stdout)
    assert rows["stage2_lr_ratio"][:3] == ["float", "0.1", "in (0, 1]"]
    assert rows["stage1_fraction"][:3] == ["float", "0.5", "in (0, 1)"]
    assert rows["dpo.pairs_from"][:3] == ["str", "start", "one of start"]
    assert [row.name for row in describe(RPSOptions)] == list(rows)
    eps = option_rows(cli("methods", "--options", "eps").stdout)
    assert "stage1_fraction" in eps and "stage2_lr_ratio" not in eps  # EPS shares the split, not the lr drop


def test_every_method_option_has_help() -> None:
    for entry in TRAINERS:
        if dataclasses.is_dataclass(entry.obj.Options):
            missing = [row.name for row in describe(entry.obj.Options) if not row.help]
            assert not missing, (entry.name, missing)


def test_method_without_options_and_unknown_method() -> None:
    done = cli("methods", "--options", "sft")
    assert (done.returncode, done.stdout.strip()) == (0, "sft takes no options")
    rejected(cli("methods", "--options", "nosuch"), "unknown method 'nosuch'", "known: dpo")
    plain = cli("methods")  # the listing of methods is unchanged by --options
    assert plain.returncode == 0 and plain.stdout.splitlines()[0].split() == ["method", "η", "steps", "description"]


@pytest.mark.parametrize(
    ("method", "options", "fragments"),
    [
        ("grpo", "{clip_eps: 1.5}", ("options.clip_eps must be in (0, 1), got 1.5",)),
        ("grpo", "{reward: partial}", ("options.reward must be one of verified, answer, got 'partial'",)),
        ("grpo", "{group_size: many}", ("setting options.group_size must be int, got 'many'",)),
        ("spot", "{gamma: 0}", ("options.gamma must be in (0, 1], got 0.0",)),
        ("spot", "{loss: mse}", ("options.loss must be one of bco, bce, bco_pair, got 'mse'",)),
        ("spot", "{error_prompts: [1]}", ("setting options.error_prompts must be int",)),
        ("rps", "{stage2_lr_ratio: 0}", ("options.stage2_lr_ratio must be in (0, 1], got 0.0",)),
        ("rps", "{stage1_fraction: 1}", ("options.stage1_fraction must be in (0, 1), got 1.0",)),
        ("rps", "{dpo: {pairs_from: policy}}", ("options.dpo.pairs_from must be one of start, got 'policy'",)),
        ("eps", "{stage2_lr_ratio: 0.2}", ("unknown setting 'options.stage2_lr_ratio'", "stage1_fraction")),
    ],
)
def test_bad_option_values_are_one_line_exit_2(
    tmp_path: Path, method: str, options: str, fragments: tuple[str, ...]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"options: {options}\n")
    out = tmp_path / "run"
    rejected(
        cli("run", "--method", method, "--preset", "smoke", "--config", str(config), "--out", str(out)), *fragments
    )
    assert not out.exists()


def test_bad_lora_value_uses_the_same_check(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("lora: {dropout: 1}\n")
    rejected(
        cli("run", "--method", "sft", "--preset", "smoke", "--config", str(config), "--out", str(tmp_path / "run")),
        "lora.dropout must be in [0, 1), got 1.0",
    )


def test_stage2_lr_ratio_is_refused_at_top_level(bench, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("stage2_lr_ratio: 0.2\n")
    out = tmp_path / "run"
    rejected(
        bench("run", "--method", "rps", "--preset", "smoke", "--config", str(config), "--out", str(out)),
        "unknown setting 'stage2_lr_ratio'",
    )
    assert not out.exists()


def test_rps_run_records_its_stage2_lr_ratio(bench, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("options: {stage2_lr_ratio: 0.2}\n")
    out = tmp_path / "run"
    done = bench("run", "--method", "rps", "--preset", "smoke", "--config", str(config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "run.json").read_text())
    assert meta["method_options"]["stage2_lr_ratio"] == 0.2 and meta["method_options"]["stage1_fraction"] == 0.5
    assert meta["config"]["options"] == {"stage2_lr_ratio": 0.2}
    assert "stage2_lr_ratio" not in meta["config"]
    log = pd.read_parquet(out / "train_log.parquet")
    peak = log.groupby("stage")["lr"].max()
    assert peak["hard"] == pytest.approx(0.2 * peak["easy"])  # stage 2 ran at the option's ratio, not the default 0.1


def test_docs_show_the_grpo_table_as_the_cli_prints_it() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "methods.md").read_text()
    shown = page.split("$ bench methods --options grpo\n", 1)[1].split("\n$ ", 1)[0]
    assert shown.strip() == cli("methods", "--options", "grpo").stdout.strip()
