"""A backend's predicted generation time on a CPU, from the rates measured in cpu_rates.json.

Predicted seconds = engine start (0 if an engine is already running) + new tokens / tokens per
second at the model's size. Tokens/s between the two measured sizes are interpolated log-log; the
smallest size's rates hold below it (per-step overheads bound tiny models); above the largest
they scale as 1/parameters (decoding is bound by the weights read per token). The numbers and the
machine they were measured on live in the data file, so re-measuring on another CPU is an edit
there, not here.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

RATES_FILE = Path(__file__).with_name("cpu_rates.json")


@lru_cache(maxsize=1)
def measured_rates() -> dict[str, Any]:
    """The data file: {"machine", "tokens_per_second": {parameters: {backend: rate}}, "engine_start_seconds"}."""
    data = json.loads(RATES_FILE.read_text())
    data["tokens_per_second"] = {int(size): rates for size, rates in data["tokens_per_second"].items()}
    return data


def cpu_tokens_per_second(parameters: int) -> dict[str, float]:
    """Tokens/s per measured backend for a model of `parameters` (see the module docstring)."""
    (small, small_rates), (large, large_rates) = sorted(measured_rates()["tokens_per_second"].items())
    if parameters <= small:
        return dict(small_rates)
    if parameters >= large:
        return {name: rate * large / parameters for name, rate in large_rates.items()}
    weight = math.log(parameters / small) / math.log(large / small)
    return {
        name: math.exp((1 - weight) * math.log(small_rates[name]) + weight * math.log(large_rates[name]))
        for name in small_rates
    }


def engine_start_seconds(backend: str) -> float:
    return float(measured_rates()["engine_start_seconds"].get(backend, 0.0))


def has_cpu_rates(backend: str) -> bool:
    return all(backend in rates for rates in measured_rates()["tokens_per_second"].values())
