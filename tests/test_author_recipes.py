"""The seed recipes as their authors ran them (tasks/arms/authors.yaml): RPS with DPO+RPO in both
stages and LoRA, EPS the same at η, SPoT with TRL 0.20's `bco_pair` loss. The losses against values
worked out by hand and against a transcription of TRL's running mean; the three arms through
`bench study` on the shipped organism at a few steps."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from plasticity_bench.harness.app.config import merge_settings, method_options
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.trainers.dpo import rpo_loss
from plasticity_bench.trainers.rps import RPSOptions
from plasticity_bench.trainers.spot import RunningMoments, SPoT, SPoTOptions, spot_loss
from tests.conftest import ROOT
from tests.helpers import cli, rejected

pytestmark = pytest.mark.xdist_group("author_recipes")  # one worker builds the module's shared study/runs once

ARMS = ROOT / "tasks" / "arms" / "authors.yaml"
CLAIMS = ROOT / "tasks" / "arms" / "authors-claims.yaml"
NEW_ARMS = ("rps-authors", "eps-authors", "spot-released")


class TRLRunningMoments:
    """TRL 0.20's `RunningMoments` (trl/trainer/utils.py), single process, transcribed line for line
    as the reference the harness's δ must equal bit for bit."""

    def __init__(self) -> None:
        self.mean: Any = 0
        self.std: Any = 1
        self.var: Any = 1
        self.count: Any = 1e-24

    @torch.no_grad()
    def update(self, xs: torch.Tensor) -> None:
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        xs_mean, xs_var = xs_mean.float(), xs_var.float()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        new_sum = xs_var * xs_count
        old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
        tot_sum = old_sum + new_sum
        self.mean += (delta * xs_count / tot_count).item()
        new_var = tot_sum / tot_count
        self.std = (new_var * tot_count / (tot_count - 1)).float().sqrt().item()
        self.var = new_var.item()
        self.count = tot_count


def softplus(x: float) -> float:
    """−log σ(x) = log(1 + e^−x)"""
    return math.log1p(math.exp(-x))


def test_rpo_loss_by_hand() -> None:
    # L = −log σ(r⁺ − r⁻) + α·NLL(y⁺)/|y⁺|: margins 0.5 and 0 over the batch, NLL per chosen token 0.4
    r_chosen, r_rejected, nll = torch.tensor([0.3, 0.1]), torch.tensor([-0.2, 0.1]), torch.tensor(0.4)
    dpo = (softplus(0.5) + math.log(2)) / 2
    assert rpo_loss(r_chosen, r_rejected, nll, 1.0).item() == pytest.approx(dpo + 0.4)
    assert rpo_loss(r_chosen, r_rejected, nll, 0.0).item() == pytest.approx(dpo)  # α = 0: plain DPO
    assert rpo_loss(r_chosen, r_rejected, nll, 2.5).item() == pytest.approx(dpo + 1.0)


def test_bco_pair_running_delta_and_loss_by_hand() -> None:
    """δ after each batch is the mean of the batches' mean rewards (chosen and rejected together),
    updated with the current batch before the loss; batches of unequal size weigh alike."""
    running = RunningMoments()
    batches = [([1.0, 2.0], [0.0, -1.0]), ([3.0], [1.0]), ([0.5, 0.5, 0.5], [-1.0, -1.0, -1.0])]
    means = [0.5, 2.0, -0.25]
    for k, (r_chosen, r_rejected) in enumerate(batches, start=1):
        delta = running.add(torch.cat([torch.tensor(r_chosen), torch.tensor(r_rejected)]))
        assert delta == pytest.approx(sum(means[:k]) / k)
    assert delta == pytest.approx(0.75)
    # the third batch's loss with δ = 0.75: −log σ(0.5 − 0.75) − log σ(−(−1 − 0.75)), the same for every pair
    loss = spot_loss(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([-1.0, -1.0, -1.0]), delta)
    assert loss.item() == pytest.approx(softplus(-0.25) + softplus(1.75))


def test_bco_pair_delta_is_trl_bit_for_bit_and_resumes_exactly() -> None:
    """The δ of `loss: bco_pair` equals TRL's RunningMoments.mean exactly (not merely to rounding)
    over batches of varying size, and a trainer restored from `state_dict` halfway continues with
    the same δ to the last bit."""
    rng = random.Random(0)
    batches = [torch.tensor([rng.gauss(0.3, 2.0) for _ in range(2 * rng.randint(1, 9))]) for _ in range(40)]
    trl, trainer = TRLRunningMoments(), SPoT(SPoTOptions(loss="bco_pair", nll_weight=0.0))
    assert isinstance(trainer.delta, RunningMoments)
    restored = SPoT(SPoTOptions(loss="bco_pair", nll_weight=0.0))
    for k, batch in enumerate(batches):
        trl.update(batch.mean())  # TRL hands its update the batch's mean reward, a 0-dim tensor
        assert trainer.delta.add(batch) == trl.mean
        if k == 19:
            state = trainer.state_dict()
            restored.load_state_dict(state)
            assert all(type(v) is float for v in state["delta"].values())  # plain values in the checkpoint
        if k >= 20:
            assert restored.delta.add(batch) == trl.mean
    # `bco` with `delta: batch_mean` is the same running mean, up to rounding only
    bco = SPoT(SPoTOptions(loss="bco", delta="batch_mean"))
    assert [bco.delta.add(b) for b in batches][-1] == pytest.approx(trl.mean, rel=1e-6)


def test_author_options_are_checked() -> None:
    with pytest.raises(BenchError, match="options.delta all_rewards applies to loss bco only"):
        method_options(SPoTOptions, {"loss": "bco_pair", "delta": "all_rewards"}, "spot")
    with pytest.raises(BenchError, match="options.stage1_loss must be one of sft, dpo"):
        method_options(RPSOptions, {"stage1_loss": "bco"}, "rps")
    # the defaults are the project's recipes: SFT stages, SPoT's bco with the NLL term
    assert (RPSOptions().stage1_loss, RPSOptions().stage2_loss) == ("sft", "sft")
    assert (SPoTOptions().loss, SPoTOptions().nll_weight) == ("bco", 1.0)


def test_the_arms_file_names_the_authors_recipes_beside_the_defaults() -> None:
    arms = yaml.safe_load(ARMS.read_text())
    assert list(arms) == [*NEW_ARMS, "sft", "rps", "eps", "spot"]  # the authors' first: a study cut short has them
    for label in ("rps-authors", "eps-authors"):
        options = arms[label]["options"]
        assert (options["stage1_loss"], options["stage2_loss"], options["dpo"]["nll_weight"]) == ("dpo", "dpo", 1.0)
        assert arms[label]["lora"]["r"] == 8 and "lr" not in arms[label]
    assert arms["spot-released"]["options"] == {"loss": "bco_pair", "beta": 0.1, "nll_weight": 0.0}
    claims = yaml.safe_load(CLAIMS.read_text())
    assert [(c["a"], c["b"]) for c in claims] == [("rps-authors", "eps-authors"), ("spot-released", "sft")]


def test_bench_study_accepts_the_shipped_arms_file(tmp_path: Path) -> None:
    """Every arm's settings are checked before anything runs: with them all valid, the first
    refusal is the bad --jobs (in-process CLI, no run)."""
    out = tmp_path / "study"
    done = cli(
        "study", "--arms", str(ARMS), "--claims", str(CLAIMS), "--seeds", "0", "--jobs", "0", "--out", str(out), "-q"
    )
    rejected(done, "--jobs must be at least 1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spot-released: {method: spot, options: {loss: bco_pair, delta: all_rewards}}\n")
    rejected(
        cli("study", "--arms", str(bad), "--seeds", "0", "--out", str(out), "-q"),
        "arm 'spot-released': options.delta all_rewards applies to loss bco only",
    )
    assert not out.exists()  # refused before the organism and any run


# A few steps on the shipped organism (the smoke organism answers no easy item right, so its
# samples give no easy pairs): few prompts, four evaluation items a slice.
TINY = {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "train_examples": 32, "eval_per_slice": 4}
SMALL = {
    "rps-authors": {"options": {"dpo": {"pair_prompts": 16, "samples_per_prompt": 4}}},
    "eps-authors": {"options": {"dpo": {"pair_prompts": 16, "samples_per_prompt": 4}}},
    "spot-released": {"options": {"error_prompts": 32}},
}


@pytest.fixture(scope="module")
def authors_study(bench, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The three new arms of the shipped arms file (with fewer prompts) × seed 0 through `bench study`."""
    root = tmp_path_factory.mktemp("authors")
    shipped = yaml.safe_load(ARMS.read_text())
    arms = {label: shipped[label] for label in NEW_ARMS}
    for label, smaller in SMALL.items():
        merge_settings(arms[label], smaller)
    (root / "arms.yaml").write_text(yaml.safe_dump(arms))
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = root / "study"
    done = bench(
        "study",
        *("--arms", str(root / "arms.yaml"), "--claims", str(CLAIMS), "--config", str(root / "tiny.yaml")),
        *("--seeds", "0", "--jobs", "3", "--out", str(out), "-q"),
    )
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_rps_and_eps_as_the_author_ran_them(authors_study: tuple[Path, str]) -> None:
    out, stdout = authors_study
    assert "inconclusive  RPS gains more than EPS on the hard target (the author's recipe" in stdout  # one seed
    assert "not run       SPoT gains in-domain" in stdout  # sft is not in this study
    for label, stage2_ratio in (("rps-authors", 0.1), ("eps-authors", 1.0)):
        run = out / f"{label}-seed0"
        meta = json.loads((run / "run.json").read_text())
        options = meta["method_options"]
        assert (options["stage1_loss"], options["stage2_loss"], options["dpo"]["nll_weight"]) == ("dpo", "dpo", 1.0)
        assert meta["config"]["lora"]["r"] == 8
        log = pd.read_parquet(run / "train_log.parquet")
        assert list(log.stage) == ["easy", "easy", "hard", "hard"]
        assert log.reward_margin.notna().all()  # DPO in both stages
        eta = log.lr.iloc[0]
        assert log.lr.iloc[2] == pytest.approx(stage2_ratio * eta)  # each stage warms up and decays afresh
        easy = pd.read_parquet(run / "preference_pairs_easy.parquet")
        hard = pd.read_parquet(run / "preference_pairs.parquet")
        assert len(easy) > 0 and len(hard) > 0
        assert set(easy.prompt).isdisjoint(hard.prompt)  # each stage's pairs from its own set
        # the first step: θ = θ₀ = π_ref, so r⁺ = r⁻ = 0 and the loss is log 2 + α·NLL(y⁺) > log 2
        assert log.loss.iloc[0] > math.log(2) and log.reward_margin.iloc[0] == pytest.approx(0.0, abs=1e-6)


def test_spot_as_released(authors_study: tuple[Path, str]) -> None:
    out, _ = authors_study
    run = out / "spot-released-seed0"
    options = json.loads((run / "run.json").read_text())["method_options"]
    assert (options["loss"], options["beta"], options["nll_weight"]) == ("bco_pair", 0.1, 0.0)
    log = pd.read_parquet(run / "train_log.parquet")
    # δ_k: the mean over steps 1..k of each batch's mean reward (equal numbers of chosen and rejected)
    batch_means = (log.reward_chosen + log.reward_rejected) / 2
    assert list(log.delta) == pytest.approx(list(batch_means.expanding().mean()), abs=1e-6)
    # no NLL term: step 1's loss is −log σ(r⁺ − δ) − log σ(−(r⁻ − δ)) at r⁺ = r⁻ = δ = 0, i.e. 2·log 2
    assert log.loss.iloc[0] == pytest.approx(2 * math.log(2), abs=1e-5)
