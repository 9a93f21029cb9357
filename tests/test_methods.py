"""SPoT, DPO, GRPO and PCR end to end through the CLI (smoke preset), and their bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from plasticity_bench.harness.store import read_manifest
from plasticity_bench.trainers.common import TRAINERS
from plasticity_bench.trainers.policy import held_out_flags
from tests.helpers import cli, rejected

METHOD_METRICS = {
    "dpo": {"reward_margin", "pair_accuracy"},
    "spot": {"delta", "reward_chosen", "reward_rejected"},
    "grpo": {"reward_mean", "kl", "clip_fraction"},
    "pcr": {"reward_mean", "kl", "clip_fraction", "conflict_rate", "alpha", "cos_block0"},
}


# The smoke organism (10 pre-training steps) never writes a whole chain right, so DPO finds pairs
# only when a right final answer counts (`reward: answer`; the default also checks every step).
# Here DPO's offline pairs (sampled once from the start); its default, online pairs, has its own test below.
SMOKE_DPO = "options: {reward: answer, pairs_from: start}\n"
# Online DPO on the smoke organism: 8 prompts a step rarely hold a right and a wrong sample
SMOKE_ONLINE_DPO = "options: {reward: answer, prompts_per_step: 32}\n"


@pytest.mark.parametrize("method", sorted(METHOD_METRICS))
def test_method_runs_end_to_end(bench, tmp_path: Path, method: str) -> None:
    out = tmp_path / method
    config = tmp_path / "c.yaml"
    config.write_text(SMOKE_DPO if method == "dpo" else "{}\n")
    done = bench("run", "--method", method, "--preset", "smoke", "-c", str(config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert [r.step for r in read_manifest(out / "checkpoints")] == [0, 2, 4]
    log = pd.read_parquet(out / "train_log.parquet")
    assert list(log.step) == [1, 2, 3, 4] and METHOD_METRICS[method] <= set(log.columns)
    assert log.loss.notna().all()
    report = (out / "report.html").read_text()  # the method's own objectives are charted in its report
    assert "id=training>Training objectives" in report and "alt='training objectives vs step" in report
    assert len(pd.read_parquet(out / "records.parquet")) == 3 * len(pd.read_parquet(out / "eval_items.parquet"))
    meta = json.loads((out / "run.json").read_text())
    assert meta["method_options"], "the method's hyperparameters are recorded"
    assert meta["config"]["lr"] == pytest.approx(TRAINERS.get(method).default_lr)  # the method's own default η
    if method == "pcr":
        assert any("micro-batch" in a for a in meta["method_options"]["assumptions"])
        assert log.conflict_rate.between(0, 1).all() and log.alpha.between(0, 1).all()
    if method == "spot":  # the rectified pairs are saved with their change ratios R ≤ γ
        pairs = pd.read_parquet(out / "rectified_pairs.parquet")
        assert len(pairs) > 0 and (pairs.change_ratio <= 0.6).all() and (pairs.chosen != pairs.rejected).all()
        assert {"prompt", "chosen", "rejected", "ref_chosen", "ref_rejected"} <= set(pairs.columns)
    if method == "dpo":
        pairs = pd.read_parquet(out / "preference_pairs.parquet")
        assert len(pairs) > 0 and (pairs.chosen != pairs.rejected).all()
    if method in ("dpo", "spot"):  # the held-out pairs: saved, never trained on, and their margin logged every step
        pairs = pd.read_parquet(out / ("preference_pairs.parquet" if method == "dpo" else "rectified_pairs.parquet"))
        assert list(pairs.held_out) == held_out_flags(list(pairs.prompt))
        assert ("heldout_margin" in log) == bool(pairs.held_out.any())
        if pairs.held_out.any():
            assert log.heldout_margin.notna().all() and log.heldout_pair_accuracy.between(0, 1).all()
    if method in ("grpo", "pcr"):
        assert log.kl.iloc[0] == pytest.approx(0, abs=1e-6)  # first step: the policy is the reference
        state = torch.load(out / "checkpoints" / "step-000002.trainer_state.pt", weights_only=False)
        assert state["method"] == {"rollout": None}  # one update per rollout: no checkpoint needs the rollout itself
        assert (log.kl.iloc[1:] >= 0).all()


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("spot", "beta: -0.1", "options.beta must be positive"),
        ("spot", "gamma: 0", "options.gamma must be in (0, 1]"),
        ("spot", "gamma: 1.2", "options.gamma must be in (0, 1]"),
        ("grpo", "group_size: 1", "options.group_size must be >= 2, got 1"),
        ("pcr", "beta: -1", "options.beta must be >= 0"),
        ("dpo", "beta: 0", "options.beta must be positive"),
        ("dpo", "bogus: 1", "unknown setting 'options.bogus'"),
        ("dpo", "pairs_per_prompt: 0", "options.pairs_per_prompt must be positive, got 0"),
        ("dpo", "pairs_from: teacher", "options.pairs_from must be one of start, policy"),
        ("rps", "dpo: {pairs_from: policy}", "only the dpo method samples pairs from the policy"),
        ("dpo", "nll_weight: -1", "options.nll_weight must be >= 0"),
        ("dpo", "pairs: steps", "options.pairs must be one of full, first_step"),
        ("dpo", "reward: steps", "options.reward must be one of verified, answer"),
        ("pcr", "reward: partial", "options.reward must be one of verified, answer"),
        ("spot", "nll_weight: -0.5", "options.nll_weight must be >= 0"),
        ("sft", "beta: 0.1", "method sft takes no options"),
        ("replay", "replay_fraction: 1", "options.replay_fraction must be in [0, 1)"),
        ("replay", "source: old", "options.source must be one of"),
        ("l2sp", "lam: -1", "options.lam must be >= 0"),
        ("rps", "stage2_loss: bco", "options.stage2_loss must be one of sft, dpo"),
        ("eps", "dpo: {beta: 0}", "options.dpo.beta must be positive"),
        ("eps", "dpo: {gamma: 1}", "unknown setting 'options.dpo.gamma'"),
    ],
)
def test_invalid_method_options_exit_2_and_write_nothing(
    tmp_path: Path, method: str, options: str, message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"options:\n  {options}\n")
    out = tmp_path / "run"
    rejected(cli("run", "--method", method, "--preset", "smoke", "--config", str(config), "--out", str(out)), message)
    assert not out.exists()


def test_empty_rectified_set_is_a_clear_error(bench, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("options:\n  gamma: 0.000001\n")  # no wrong answer is that close to its correction
    out = tmp_path / "run"
    rejected(
        bench("run", "--method", "spot", "--preset", "smoke", "--config", str(config), "--out", str(out), "-q"),
        "empty rectified set",
    )
    assert not out.exists()


def test_dpo_first_step_pairs_end_to_end(bench, tmp_path: Path) -> None:
    """`pairs: full` (plain DPO) samples whole pairs; `first_step` cuts each after the first step
    where the two differ, saves which completions were cut, and trains on them."""
    config = tmp_path / "c.yaml"
    config.write_text("options: {pairs: full, reward: answer, pairs_from: start}\n")
    full = bench(
        "run", "--method", "dpo", "--preset", "smoke", "-c", str(config), "--out", str(tmp_path / "full"), "-q"
    )
    assert full.returncode == 0, full.stderr[-3000:]
    config.write_text("options: {pairs: first_step, reward: answer, pairs_from: start}\n")
    out = tmp_path / "step"
    done = bench("run", "--method", "dpo", "--preset", "smoke", "-c", str(config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["method_options"]["pairs"] == "first_step"
    whole = pd.read_parquet(tmp_path / "full" / "preference_pairs.parquet")
    cut = pd.read_parquet(out / "preference_pairs.parquet")
    assert whole.chosen_whole.all() and whole.rejected_whole.all()
    assert len(cut) <= len(whole) and not cut.duplicated(["prompt", "chosen", "rejected"]).any()
    for pair in cut.itertuples():  # a cut completion ends at a step boundary; each pair differs
        assert pair.chosen != pair.rejected
        for text, is_whole in ((pair.chosen, pair.chosen_whole), (pair.rejected, pair.rejected_whole)):
            assert is_whole or text.endswith((";", "\n"))
    assert pd.read_parquet(out / "train_log.parquet").loss.notna().all()


def test_dpo_online_pairs_come_from_the_policy_at_every_step(bench, tmp_path: Path) -> None:
    """DPO's default, `pairs_from: policy` (online DPO): each step samples new pairs from the
    current policy, logs how many it found and the samples' mean reward; the pairs file holds only
    held-out pairs."""
    config = tmp_path / "c.yaml"
    config.write_text(SMOKE_ONLINE_DPO)
    out = tmp_path / "online"
    done = bench("run", "--method", "dpo", "--preset", "smoke", "-c", str(config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["method_options"]["pairs_from"] == "policy"
    log = pd.read_parquet(out / "train_log.parquet")
    assert (log.pairs >= 1).all() and log.reward_mean.between(0, 1).all() and log.loss.notna().all()
    manifest = read_manifest(out / "checkpoints")
    assert manifest[-1].examples_seen == log.pairs.sum()  # a step's examples are the pairs it found
    pairs = pd.read_parquet(out / "preference_pairs.parquet")
    assert pairs.held_out.all()  # online training never trains on a saved pair
    assert "id=training>Training objectives" in (out / "report.html").read_text()
