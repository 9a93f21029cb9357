"""`bench eval --vllm-setting KEY=VALUE` (harness/app/eval_vllm.py): the vLLM engine's arguments for a sweep, checked
as a run's `vllm:` block is, reaching the vllm backend's engine arguments and the sweep's fingerprint.

No engine is started: `VLLMBackend.engine_arguments` is the pure function that builds what `vllm.LLM` gets
(tests/test_vllm_settings.py starts a real one for a run's settings)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from plasticity_bench.harness.app.config import VllmSettings
from plasticity_bench.harness.app.eval_vllm import parse_vllm_settings, pool_settings, vllm_identity
from plasticity_bench.harness.backends import BackendPool
from plasticity_bench.harness.backends.vllm_backend import SLEEP_ON_CPU, VLLMBackend
from plasticity_bench.harness.core.errors import BenchError
from tests.helpers import cli, rejected
from tests.test_sweep import TINY, save_organism

MODEL_CONFIG = {"max_position_embeddings": 4096}
GIVEN = [
    "tensor_parallel_size=4",
    "gpu_memory_utilization=0.3",
    "max_model_len=2048",
    "dtype=bfloat16",
    "enable_prefix_caching=false",
    "enable_sleep_mode=true",
]
EXPECTED = {
    "tensor_parallel_size": 4,
    "gpu_memory_utilization": 0.3,
    "max_model_len": 2048,
    "dtype": "bfloat16",
    "enable_prefix_caching": False,
    "enable_sleep_mode": True,
}


def test_every_setting_is_read_as_yaml_and_reaches_the_engine_arguments(tmp_path: Path) -> None:
    settings = parse_vllm_settings(GIVEN, "vllm")
    assert settings == VllmSettings(**EXPECTED)  # type: ignore[arg-type]
    backend = BackendPool(pool_settings(settings)).get("vllm")  # the pool `bench eval` generates with
    assert isinstance(backend, VLLMBackend)
    arguments = backend.engine_arguments(tmp_path, MODEL_CONFIG, on_gpu=True)
    assert {name: arguments[name] for name in EXPECTED} == EXPECTED
    # null is the model's own context, as in a run's `vllm:` block
    context = BackendPool(pool_settings(parse_vllm_settings(["max_model_len=null"], "auto"))).get("vllm")
    assert isinstance(context, VLLMBackend)
    assert context.engine_arguments(tmp_path, MODEL_CONFIG, on_gpu=False)["max_model_len"] == 4096


def test_only_settings_that_change_the_engine_join_the_identity() -> None:
    assert parse_vllm_settings([], "hf") is None and pool_settings(None) == {} and vllm_identity(None) == {}
    assert vllm_identity(parse_vllm_settings(["dtype=float32", "enable_prefix_caching=true"], "vllm")) == {}
    assert vllm_identity(parse_vllm_settings(GIVEN[:4], "vllm")) == {
        "vllm": {k: EXPECTED[k] for k in list(EXPECTED)[:4]}
    }


@pytest.mark.parametrize(
    ("pairs", "fragment"),
    [
        (["dtype"], "--vllm-setting takes KEY=VALUE (e.g. dtype=bfloat16), got 'dtype'"),
        (["dtype=half", "dtype=float32"], "--vllm-setting gives dtype twice"),
        (["tensor_parallel=2"], "unknown setting 'vllm.tensor_parallel'"),
        (["dtype=int8"], "vllm.dtype must be one of auto, float32"),
        (["gpu_memory_utilization=1.5"], "vllm.gpu_memory_utilization must be in (0, 1]"),
        (["max_model_len=0"], "vllm.max_model_len must be positive or null, got 0"),
        (["enable_prefix_caching=maybe"], "setting vllm.enable_prefix_caching must be bool"),
    ],
)
def test_bad_settings_are_the_run_configs_one_line_errors(pairs: list[str], fragment: str) -> None:
    with pytest.raises(BenchError) as error:
        parse_vllm_settings(pairs, "vllm")
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--vllm-setting", "dtype=int8"), "vllm.dtype must be one of"),
        (("--backend", "hf", "--vllm-setting", "dtype=bfloat16"), "use it with --backend vllm or auto, not hf"),
        (("--vllm-setting", "enable_sleep_mode=true"), SLEEP_ON_CPU),  # refused before the engine would start
    ],
)
def test_the_cli_refuses_in_one_line_and_writes_nothing(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    model = save_organism(tmp_path / "model", TINY)
    out = tmp_path / "run"
    backend = () if "--backend" in args else ("--backend", "auto")
    done = cli("eval", str(model), "--steps", "0", "--suite", "micro", "--out", str(out), *backend, *args)
    rejected(done, fragment)
    assert not out.exists()


def test_the_settings_are_in_the_sweeps_identity(tmp_path: Path) -> None:
    """Through the real CLI, with `--backend auto` (which picks transformers for this tiny sweep on a CPU: no
    engine starts): the sweep records the settings in run.json's config and they change its fingerprint."""
    model = save_organism(tmp_path / "model", replace(TINY, max_positions=128))  # room for the sets' answers
    common = ("eval", str(model), "--steps", "0", "--suite", "micro", "--limit", "1", "--backend", "auto", "-q")
    done = cli(*common, "--out", str(tmp_path / "bf16"), "--vllm-setting", "dtype=bfloat16")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "bf16" / "run.json").read_text())
    assert meta["config"]["vllm"] == {"dtype": "bfloat16"}
    # the same sweep into that folder without the setting is another sweep: refused, not mixed
    again = cli(*common, "--out", str(tmp_path / "bf16"))
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0, again.stderr
