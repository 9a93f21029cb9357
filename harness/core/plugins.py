"""Plugins: modules outside the project that register a source kind, a backend, a scorer or a method.

A plugin is an ordinary importable module whose import registers its classes, e.g.::

    from plasticity_bench.tasks.sources import SOURCES, Source

    @SOURCES.register("questions", "my questions, from wherever they live")
    class MyQuestions(Source): ...

Name the modules, comma-separated, in the environment variable PLASTICITY_BENCH_PLUGINS
(`PLASTICITY_BENCH_PLUGINS=my_sources,my_backend bench run ...`). Every registry imports them the
first time it is asked for a name, so the registrations are there before any name is looked up,
and a command that never looks one up (`bench --help`) imports none of them. See docs/extending.md.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

from plasticity_bench.harness.core.errors import BenchError

PLUGINS_ENV = "PLASTICITY_BENCH_PLUGINS"


def plugin_modules() -> tuple[str, ...]:
    """The module names PLASTICITY_BENCH_PLUGINS lists, in its order."""
    return tuple(name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip())


def load_plugins() -> None:
    """Import every plugin module (once per distinct list: Python's module cache keeps each import)."""
    _import_all(plugin_modules())


@lru_cache(maxsize=8)
def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:  # a typo in the variable or a module not on the path: one line
            raise BenchError(f"{PLUGINS_ENV}: cannot import plugin module {name!r} ({error})") from None
