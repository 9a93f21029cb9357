"""The built wheel installs one import name, and `bench` runs beside a user's own `tasks`, `reports` and `harness`.

The wheel is built from a copy of the project's packaging files (so no build/ folder lands in the checkout), then
installed into a fresh virtual environment. That environment sees this one's site-packages through a path line in a
.pth file: the dependencies import without a network, while this project's editable install stays off (a path line
adds the folder to sys.path but does not run the .pth files inside it, and the editable finder is one of those).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

PACKAGE = "plasticity_bench"
FOLDERS = ("harness", "tasks", "trainers", "reports")  # installed only as plasticity_bench.<folder>
DATA_SUFFIXES = (".yaml", ".json", ".jsonl", ".safetensors")  # .safetensors: the shipped organism
# A user's own modules under the names the project's folders carry. Each leaves a mark before it refuses, so an
# import is seen even where the code that imported it swallows the ImportError.
USER_MODULE = (
    "from pathlib import Path\n"
    "Path(__file__).resolve().parent.joinpath('imported-{name}').touch()\n"
    'raise ImportError("the user\'s {file} was imported")\n'
)


def build_wheel(into: Path) -> Path:
    """The wheel pip builds from a copy of the packaging files (setuptools writes build/ beside its source)."""
    source = into / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (PACKAGE, *FOLDERS):  # plasticity_bench/'s relative links resolve to the copied folders
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=skip)
    dist = into / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = dist.glob("*.whl")
    return wheel


def data_files_in_checkout() -> set[str]:
    """Every package-data file of the four folders, as the wheel should name it."""
    found = set()
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                found.add(f"{PACKAGE}/{path.relative_to(ROOT).as_posix()}")
    return found


def fresh_environment(into: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel, seeing this venv's site-packages for the dependencies."""
    env_dir = into / "fresh-venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "dependencies-from-the-test-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # --force-reinstall: the editable install's metadata, which the new venv sees, has the wheel's name and version,
    # and pip would take it for the wheel already installed
    command = ["install", "--no-deps", "--no-index", "--force-reinstall", "-q", str(wheel)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *command],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return env_dir


def user_folder(into: Path) -> Path:
    """A user's project folder: `tasks.py`, a `reports/` package and `harness.py`, each refusing to be imported."""
    folder = into / "user-project"
    (folder / "reports").mkdir(parents=True)
    (folder / "tasks.py").write_text(USER_MODULE.format(name="tasks", file="tasks.py"))
    (folder / "harness.py").write_text(USER_MODULE.format(name="harness", file="harness.py"))
    (folder / "reports" / "__init__.py").write_text(
        USER_MODULE.format(name="reports", file="reports/").replace("resolve().parent", "resolve().parent.parent")
    )
    return folder


def test_wheel_installs_one_name_and_runs_beside_a_users_tasks(tmp_path: Path, bench_cache: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {PurePosixPath(name).parts[0] for name in names if not PurePosixPath(name).parts[0].endswith(".dist-info")}
    assert top == {PACKAGE}, f"top-level names in the wheel: {sorted(top)}"
    assert not set(FOLDERS) & top
    missing = data_files_in_checkout() - set(names)
    assert not missing, f"package data left out of the wheel: {sorted(missing)}"
    assert f"{PACKAGE}/tasks/suites/micro.yaml" in names
    assert f"{PACKAGE}/harness/sandbox/child/__main__.py" in names  # the sandbox's child runs from the install
    assert f"{PACKAGE}/harness/app/organism_weights/model.safetensors" in names  # the default organism ships
    assert f"{PACKAGE}/harness/app/organism_weights_in_context/model.safetensors" in names  # and the in-context one

    env_dir = fresh_environment(tmp_path, wheel)
    folder = user_folder(tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")},
        "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(folder),
        "PLASTICITY_BENCH_CACHE": str(bench_cache),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    found = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    assert found.returncode == 0, found.stderr[-3000:]
    where = found.stdout.strip()
    assert Path(where).resolve().is_relative_to(env_dir.resolve()), f"{PACKAGE} imported from {where}"

    shipped = subprocess.run(  # the default organism comes from the install, pre-trained nowhere
        [str(env_dir / "bin" / "bench"), "base", "-q"], capture_output=True, text=True, env=env, cwd=folder
    )
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    assert Path(shipped.stdout.strip()).resolve().is_relative_to(env_dir.resolve()), shipped.stdout

    out = tmp_path / "run"
    done = subprocess.run(
        [str(env_dir / "bin" / "bench"), "run", "--preset", "smoke", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "report.html").is_file()
    imported = sorted(p.name for p in folder.glob("imported-*"))
    assert not imported, f"the user's modules were imported: {imported}"
