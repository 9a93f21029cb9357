"""`bench eval --vllm-setting KEY=VALUE`: the vLLM engine's arguments for a sweep, as a run's `vllm:` block gives
them to `bench run` (docs/vllm-settings.md).

Each value is read as YAML (`true`, `0.3`, `null`, `bfloat16`) and the whole is checked by the same declaration
as the run config's `vllm:` block, so a bad key or value is the same one-line error. The settings that differ from
the engine's defaults join the sweep's identity (its fingerprint and run.json's `config.vllm`): a dtype changes
the numbers, and a sweep given none keeps the fingerprint it always had. This module imports no torch: the CLI
checks the settings before it loads anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import yaml

from plasticity_bench.harness.app.config import VllmSettings
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.options import build

OPTION = "--vllm-setting"
ENGINE_BACKENDS = ("vllm", "auto")  # the backends that may start a vLLM engine


def parse_vllm_settings(pairs: Sequence[str], backend: str) -> VllmSettings | None:
    """The engine settings `--vllm-setting` gives (None when none is given); one-line BenchError for a pair that
    is not KEY=VALUE, a key given twice, an unknown key or a bad value, or a backend that starts no vLLM engine."""
    if not pairs:
        return None
    if backend not in ENGINE_BACKENDS:
        raise BenchError(
            f"{OPTION} sets the vLLM engine's arguments: use it with --backend vllm or auto, not {backend}"
        )
    values: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise BenchError(f"{OPTION} takes KEY=VALUE (e.g. dtype=bfloat16), got {pair!r}")
        if key in values:
            raise BenchError(f"{OPTION} gives {key} twice")
        values[key] = _value(key, text)
    settings: VllmSettings = build(VllmSettings, values, "vllm.")
    settings.validate()
    return settings


def _value(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise BenchError(f"{OPTION} {key}: cannot read the value {text!r}") from None


def vllm_identity(settings: VllmSettings | None) -> dict[str, Any]:
    """What the settings add to a sweep's identity: those that differ from the engine's defaults, if any."""
    if settings is None:
        return {}
    defaults = asdict(VllmSettings())
    changed = {name: value for name, value in asdict(settings).items() if value != defaults[name]}
    return {"vllm": changed} if changed else {}


def pool_settings(settings: VllmSettings | None) -> dict[str, dict[str, Any]]:
    """The BackendPool's constructor arguments per backend name: the vllm backend gets the settings, as in a run."""
    return {"vllm": asdict(settings)} if settings is not None else {}


def check_on_this_machine(settings: VllmSettings | None) -> None:
    """Sleep mode on a CPU, more tensor-parallel workers than GPUs: refused now, not when the engine starts."""
    if settings is None:
        return
    import torch

    from plasticity_bench.harness.backends.vllm_backend import check_engine_settings

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check_engine_settings(settings.enable_sleep_mode, settings.tensor_parallel_size, gpus)
