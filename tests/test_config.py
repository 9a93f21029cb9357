"""Configuration: presets, files and overrides merge in order; bad values are one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plasticity_bench.harness.app.config import RunConfig, load_config
from plasticity_bench.harness.core.errors import BenchError


def test_precedence_preset_then_file_then_overrides(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("steps: 9\nlr: 0.002\norganism:\n  pretrain_steps: 7\n")
    config = load_config("smoke", file, {"steps": 11, "seed": None})
    assert (config.steps, config.lr, config.organism.pretrain_steps) == (11, 0.002, 7)
    assert config.organism.hidden_size == 32  # from the smoke preset, untouched by the file
    assert config.seed == RunConfig().seed  # None overrides mean "not given"


@pytest.mark.parametrize(
    ("method", "steps", "expected"), [("rps", None, 300), ("grpo", None, 600), ("pcr", None, 600), ("grpo", 50, 50)]
)
def test_unset_steps_resolve_to_the_methods_own_run_length(
    tmp_path: Path, method: str, steps: int | None, expected: int
) -> None:
    from plasticity_bench.harness.app.stages.prepare import prepare

    prepared = prepare(load_config(overrides={"method": method, "steps": steps}), tmp_path / "run")
    assert prepared.config.steps == expected and prepared.config.lr is not None
    assert not (tmp_path / "run").exists()  # prepare only checks: nothing is written


def test_fingerprint_changes_with_any_setting() -> None:
    assert load_config().fingerprint() == load_config().fingerprint()
    assert load_config().fingerprint() != load_config(overrides={"seed": 1}).fingerprint()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [1, 2\n", "not valid YAML/JSON at line"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("stepz: 3\n", "unknown setting 'stepz'"),
        ("steps: 0\n", "steps must be positive"),
        ("steps: -5\n", "steps must be positive"),
        ("steps: three\n", "steps must be int"),
        ("lr: true\n", "lr must be float"),
        ("stage2_lr_ratio: 0.5\n", "unknown setting 'stage2_lr_ratio'"),
        ("organism: 3\n", "organism must be a mapping"),
        ("organism:\n  layers: 3\n", "unknown setting 'organism.layers'"),
        ("model: /no/such/model\n", "is not a Hugging Face model folder"),
    ],
)
def test_bad_config_files_are_rejected_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(BenchError, match=re.escape(message)):
        load_config("default", file)


def test_missing_config_file_and_unknown_preset() -> None:
    with pytest.raises(BenchError, match="does not exist"):
        load_config("default", Path("/no/such/file.yaml"))
    shipped = "unknown preset 'tiny'; shipped: default, in-context, smoke (or give a"
    with pytest.raises(BenchError, match=re.escape(shipped)):
        load_config("tiny")


@pytest.mark.parametrize(
    ("text", "setting", "value"),
    [
        ("lr: 1e-4", "lr", 1e-4),
        ("lr: 1E-4", "lr", 1e-4),
        ("lr: 1.0e-4", "lr", 1e-4),
        ("lr: 2e3", "lr", 2000.0),
        ("lr: +1.5E+2", "lr", 150.0),
        ("lr: .5", "lr", 0.5),
        ("lr: .5e-1", "lr", 0.05),
        ('{"lr": 1e-4}', "lr", 1e-4),  # JSON's exponent notation, which YAML 1.1 reads as a string
        ("train_examples: 1_000", "train_examples", 1000),
        ("train_examples: 1e3", "train_examples", 1000),  # a whole number in float notation, for an int setting
        ("organism: {lr: 3E-3}", "organism.lr", 3e-3),
        ("options: {beta: 5e-2}", "options.beta", 5e-2),
    ],
)
def test_yaml_numbers_in_any_notation(tmp_path: Path, text: str, setting: str, value: float) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(text + "\n")
    config = load_config("default", file)
    owner, _, name = setting.rpartition(".")
    got = config.options[name] if owner == "options" else getattr(config.organism if owner else config, name)
    assert got == value and type(got) is type(value)
