"""Presets are YAML files beside the suites (tasks/presets), named by `--preset NAME` or given as a
file; and no shipped file names a path of the machine it was written on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from plasticity_bench.harness.app.config import RunConfig, load_config
from plasticity_bench.harness.app.presets import presets_folder, shipped_preset_names
from plasticity_bench.harness.core.errors import BenchError
from tests.helpers import rejected

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_FOLDERS = ("harness", "tasks", "trainers", "reports")
SHIPPED_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".jsonl", ".md", ".txt", ".html", ".toml"}
MACHINE_PATH = re.compile(r"(/tmp/|/work/|/home/|/root/|/Users/)")


def test_the_shipped_presets_are_the_yaml_files_beside_the_suites() -> None:
    folder = presets_folder()
    assert folder is not None and folder.resolve() == ROOT / "tasks" / "presets"
    assert shipped_preset_names() == sorted(path.stem for path in folder.glob("*.yaml"))
    assert {"default", "smoke"} <= set(shipped_preset_names())


@pytest.mark.parametrize("name", shipped_preset_names())
def test_every_shipped_preset_loads_and_validates(name: str) -> None:
    settings = yaml.safe_load((ROOT / "tasks" / "presets" / f"{name}.yaml").read_text())
    assert isinstance(settings, dict)
    config = load_config(name)  # validated: unknown keys, types and ranges are refused
    for key, value in settings.items():
        if not isinstance(value, dict):
            assert getattr(config, key) == value, key
    for key, value in settings.get("organism", {}).items():
        assert getattr(config.organism, key) == value, key


def test_the_default_preset_is_every_setting_at_its_default() -> None:
    assert load_config("default") == load_config() == RunConfig()


def test_the_smoke_preset_is_tiny() -> None:
    smoke = load_config("smoke")
    assert (smoke.steps, smoke.checkpoint_every, smoke.eval_per_slice, smoke.organism.num_layers) == (4, 2, 4, 1)


def test_a_preset_file_is_a_preset(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text((ROOT / "tasks" / "presets" / "smoke.yaml").read_text() + "steps: 6\n")
    assert load_config(str(file)) == load_config("smoke", overrides={"steps": 6})
    # below --config and the command line, as a shipped preset
    config = tmp_path / "c.yaml"
    config.write_text("steps: 8\n")
    assert load_config(str(file), config).steps == 8
    assert load_config(str(file), config, {"steps": 9}).steps == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [("- 1\n", "must hold a mapping of settings"), ("stepz: 3\n", "unknown setting 'stepz'"), ("a: [\n", "not valid")],
)
def test_a_bad_preset_file_is_one_error(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(BenchError, match=re.escape(message)):
        load_config(str(file))


def test_an_unknown_preset_is_one_line_listing_the_shipped_ones(bench, tmp_path: Path) -> None:
    done = bench("run", "--preset", "nosuch", "--out", str(tmp_path / "run"))
    shipped = ", ".join(shipped_preset_names())
    rejected(done, f"unknown preset 'nosuch'; shipped: {shipped} (or give a preset YAML file)")
    assert not (tmp_path / "run").exists()
    rejected(bench("run", "--preset", str(tmp_path / "missing.yaml")), "preset file", "missing.yaml does not exist")


def test_a_preset_file_reaches_the_cli_as_the_shipped_preset_does(bench, tmp_path: Path) -> None:
    """`bench base` builds (or finds) the organism a preset describes: the same folder from the file."""
    file = tmp_path / "smoke-copy.yaml"
    file.write_text((ROOT / "tasks" / "presets" / "smoke.yaml").read_text())
    shipped, copied = bench("base", "--preset", "smoke", "-q"), bench("base", "--preset", str(file), "-q")
    assert shipped.returncode == 0 and copied.returncode == 0, shipped.stderr + copied.stderr
    assert copied.stdout == shipped.stdout and "organisms" in shipped.stdout


def shipped_files() -> list[Path]:
    return sorted(
        path
        for folder in SHIPPED_FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts
    )


def test_no_shipped_file_names_a_path_of_the_machine_it_was_written_on() -> None:
    files = shipped_files()
    assert len(files) > 50 and ROOT / "harness" / "evaluation" / "claims.yaml" in files
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert found == []
