"""The layering written in pyproject.toml ([tool.importlinter]) holds, names every package, and
catches a violation: a foundation module importing an orchestration module."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
ROOT_PACKAGES = ("harness", "tasks", "trainers", "reports")


def contract_layers() -> list[str]:
    contract = contracts()[0]  # the floors: the folders in the order the data flows
    return [module.strip() for layer in contract["layers"] for module in layer.split("|")]


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", "pyproject.toml", "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layers_contract_is_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{len(contracts())} kept, 0 broken" in done.stdout


def test_the_contract_lists_every_package() -> None:
    """Each root package is a layer, or each of its subpackages is (harness: core, sandbox, ...)."""
    layers = set(contract_layers())
    for root in ROOT_PACKAGES:
        name = f"plasticity_bench.{root}"
        if name in layers:
            continue
        subpackages = {f"{name}.{p.name}" for p in (ROOT / root).iterdir() if (p / "__init__.py").is_file()}
        modules = {f"{name}.{p.stem}" for p in (ROOT / root).glob("*.py") if p.name != "__init__.py"}
        assert subpackages, f"{root} is neither a layer nor split into packages"
        assert subpackages <= layers, f"packages missing from the layers contract: {sorted(subpackages - layers)}"
        assert not modules - layers, (
            f"modules of {root} outside any layer (put them in a package): {sorted(modules - layers)}"
        )


def test_a_foundation_module_importing_the_cli_breaks_the_contract(tmp_path: Path) -> None:
    for name in (*ROOT_PACKAGES, "plasticity_bench", "pyproject.toml"):
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(source, tmp_path / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy(source, tmp_path / name)
    errors = tmp_path / "harness" / "core" / "errors.py"
    errors.write_text(
        errors.read_text()
        + "\nimport plasticity_bench.harness.app.cli  # noqa: E402,F401  (the violation under test)\n"
    )
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    assert (
        "BROKEN" in done.stdout
        and "plasticity_bench.harness.core.errors -> plasticity_bench.harness.app.cli" in done.stdout
    ), done.stdout[-3000:]
