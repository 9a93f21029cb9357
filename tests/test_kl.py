"""KL to start (harness/evaluation/kl.py): 0 at step 0, positive after training, and equal to an
independent computation (a plain per-token loop) on one checkpoint; shown in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from plasticity_bench.harness.app.config import load_config
from plasticity_bench.harness.evaluation.kl import KL_FILE, KL_PROMPTS, sample_from_start
from plasticity_bench.harness.store import read_manifest
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.items import load_eval_items, training_items
from plasticity_bench.tasks.verify import max_new_tokens


def independent_sequence_logprob(model, prompt_ids: list[int], target_ids: list[int]) -> float:
    """Σ_t log π(y_t | x, y_<t) by one unpadded forward pass per sequence and explicit indexing."""
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(prompt_ids) + t - 1, token]) for t, token in enumerate(target_ids))


def test_kl_to_start_is_zero_at_start_positive_later_and_matches_by_hand(smoke_run: Path) -> None:
    meta = json.loads((smoke_run / "run.json").read_text())
    assert meta["stages"]["kl"]["done"]
    kl = pd.read_parquet(smoke_run / KL_FILE)
    manifest = read_manifest(smoke_run / "checkpoints")
    assert list(kl.step) == [r.step for r in manifest] and list(kl.columns) == ["step", "kl", "n"]
    assert kl.kl.iloc[0] == 0.0
    assert (kl.kl.iloc[1:] > 0).all()
    assert meta["stages"]["kl"]["final_kl"] == pytest.approx(kl.kl.iloc[-1])

    # independently: the same prompts and π₀ samples, log-probs by a per-sequence loop
    start_dir, final_dir = smoke_run / manifest[0].path, smoke_run / manifest[-1].path
    tokenizer = AutoTokenizer.from_pretrained(start_dir)
    suite = load_suite(meta["suite"])
    assert suite.hard is not None
    from plasticity_bench.harness.app.stages.prompts import rendered

    exclude = load_eval_items(suite).prompts
    hard = training_items(suite, suite.hard, meta["config"]["train_examples"], meta["seed"], exclude)
    items = rendered(hard, suite.hard.prompt, tokenizer)
    prompts = [item.prompt for item in items][:KL_PROMPTS]
    sequences = sample_from_start(start_dir, prompts, max(max_new_tokens(i) for i in items[:KL_PROMPTS]), meta["seed"])
    assert [p for p, _ in sequences] == [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    # sampled in left-padded batches: a completion is what π₀ drew, ended by its first EOS or by the token limit
    limit, eos = max(max_new_tokens(i) for i in items[:KL_PROMPTS]), tokenizer.eos_token_id
    for _, completion in sequences:
        assert eos not in completion[:-1] and (completion[-1] == eos or len(completion) == limit), completion
    assert any(completion[-1] == eos for _, completion in sequences)
    start = AutoModelForCausalLM.from_pretrained(start_dir).eval()
    final = AutoModelForCausalLM.from_pretrained(final_dir).eval()
    by_hand = [
        independent_sequence_logprob(start, p, c) - independent_sequence_logprob(final, p, c) for p, c in sequences
    ]
    assert kl.n.iloc[-1] == len(prompts)
    assert kl.kl.iloc[-1] == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-4, abs=1e-6)

    report = (smoke_run / "report.html").read_text()
    assert "id=kl>KL to start" in report and "KL(π₀‖π_step)" in report


def test_smoke_preset_has_hard_training_prompts() -> None:
    assert load_config("smoke").train_examples > 0


def test_report_notes_runs_without_kl() -> None:
    """`bench eval` runs have no training data, so no kl_to_start.parquet: the report says so and draws no KL chart."""
    from types import SimpleNamespace

    from plasticity_bench.reports.html import kl_html

    page = kl_html([SimpleNamespace(label="eval", kl=None)])  # type: ignore[list-item]
    assert "Not computed for eval" in page and "<img" not in page
    with_kl = kl_html([SimpleNamespace(label="sft", kl=pd.DataFrame({"step": [0, 2], "kl": [0.0, 0.5], "n": [4, 4]}))])  # type: ignore[list-item]
    assert "<img" in with_kl and "Not computed" not in with_kl


def test_report_notes_runs_without_a_training_log() -> None:
    """`bench eval` runs were not trained here: the training section says so instead of drawing an empty chart."""
    from types import SimpleNamespace

    from plasticity_bench.reports.html import training_html

    assert "No training log" in training_html([SimpleNamespace(label="eval", train_log=None)])  # type: ignore[list-item]
    log = pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, 0.7, 0.6], "reward_mean": [0.1, 0.2, 0.3]})
    page = training_html([SimpleNamespace(label="grpo", train_log=log)])  # type: ignore[list-item]
    assert "<img" in page and "No training log" not in page
