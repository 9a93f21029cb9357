"""The names a user may type for a method, a backend or a suite, known without importing what they name.

A usage error (`bench run --method nosuch`) must answer at once, but the registries that hold
these names fill only when torch, transformers and every trainer are imported (seconds). So the
names are read from the registration lines themselves (`@TRAINERS.register("name", …)` in
trainers/, `@BACKENDS.register("name", …)` in harness/backends/), as text, without executing
them: a new method or backend is still one file plus its decorator. tests/test_cli_startup.py
checks that what is read equals the registries. A plugin's names (PLASTICITY_BENCH_PLUGINS,
docs/extending.md) are asked of the registries themselves, which then import what they need:
only for a name not found here, and only where plugins are named.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.plugins import plugin_modules

AUTO = "auto"  # harness.backends.auto.AUTO: the backend chosen for the work and the machine


@cache
def registered_names(package: str, registry: str) -> tuple[str, ...]:
    """The names registered by `@REGISTRY.register("name", …)` lines in the package's own files, sorted."""
    spec = importlib.util.find_spec(package)  # located, not executed (a parent package is imported: harness is light)
    if spec is None or spec.origin is None:
        return ()
    pattern = re.compile(rf'@{registry}\.register\(\s*"([^"]+)"')
    return tuple(
        sorted({name for path in Path(spec.origin).parent.glob("*.py") for name in pattern.findall(path.read_text())})
    )


def method_names() -> tuple[str, ...]:
    return registered_names("plasticity_bench.trainers", "TRAINERS")


def backend_names() -> tuple[str, ...]:
    return registered_names("plasticity_bench.harness.backends", "BACKENDS")


def check_method(name: str) -> None:
    """BenchError, worded as the registry's own, for a method name no trainer registers."""
    if name not in method_names() and not _plugin_registers("method", name):
        raise BenchError(f"unknown method {name!r}; known: {', '.join(method_names())}")


def check_backend(name: str, noun: str = "backend") -> None:
    """BenchError, worded as `resolve_backend`'s, for a backend name that is neither auto nor registered."""
    if name != AUTO and name not in backend_names() and not _plugin_registers("backend", name):
        raise BenchError(f"unknown {noun} {name!r}; known: {AUTO}, {', '.join(backend_names())}")


def _plugin_registers(kind: str, name: str) -> bool:
    """Whether a plugin module registered `name` as a method or backend (imports the registry: slow)."""
    if not plugin_modules():
        return False
    if kind == "method":
        import plasticity_bench.trainers

        return name in plasticity_bench.trainers.TRAINERS
    from plasticity_bench.harness.backends import BACKENDS as REGISTERED

    return name in REGISTERED


def shipped_suite_names() -> list[str]:
    """The shipped suites' names (tasks/suites/*.yaml), found without importing `tasks`, whose
    import loads every task and reasoning-gym (≈ 0.8 s)."""
    spec = importlib.util.find_spec("plasticity_bench.tasks")  # located, not executed
    if spec is None or spec.origin is None:
        return []
    return sorted(path.stem for path in (Path(spec.origin).parent / "suites").glob("*.yaml"))


def check_suite(reference: str) -> None:
    """BenchError, worded as `tasks.suites.suite_file`'s, for a suite that is neither shipped nor a file."""
    shipped = shipped_suite_names()
    if reference in shipped:
        return
    path = Path(reference).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise BenchError(f"suite file {path} does not exist")
        return
    raise BenchError(f"unknown suite {reference!r}; shipped: {', '.join(shipped)} (or give a suite YAML file)")
