"""`bench methods --options METHOD`: a method's options as declared on its Options dataclass."""

from __future__ import annotations

import dataclasses

from plasticity_bench.harness.app.names import check_method
from plasticity_bench.harness.core.options import describe, table


def option_lines(method: str) -> list[str]:
    """The method's options, one line each (name, type, default, allowed values, help) under a header.
    A misspelt method is refused before the trainers (torch) are imported."""
    check_method(method)
    import plasticity_bench.trainers

    options = plasticity_bench.trainers.TRAINERS.get(method).Options
    if not dataclasses.is_dataclass(options):
        return [f"{method} takes no options"]
    return table(describe(options))
