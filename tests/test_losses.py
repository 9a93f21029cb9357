"""Each method's loss against values worked out independently (by hand or another formulation)."""

from __future__ import annotations

import itertools
import math
import re
from functools import cache

import pytest
import torch

from plasticity_bench.harness.app.organism import OrganismConfig, build_model, build_tokenizer
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.options import check
from plasticity_bench.trainers.dpo import DPOOptions, dpo_loss
from plasticity_bench.trainers.grpo import GRPOOptions, clipped_surrogate, group_advantages, k3_kl
from plasticity_bench.trainers.pcr import GradientMoments, PCROptions, resolve_conflict
from plasticity_bench.trainers.policy import encode_completions, sequence_logprobs
from plasticity_bench.trainers.spot import RunningMean, SPoTOptions, change_ratio, spot_loss


def test_dpo_loss_by_hand() -> None:
    # r⁺ − r⁻ = 0.5  →  −log σ(0.5) = log(1 + e^−0.5)
    assert dpo_loss(torch.tensor([0.3]), torch.tensor([-0.2])).item() == pytest.approx(math.log1p(math.exp(-0.5)))
    assert dpo_loss(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(
        (math.log(2) + math.log1p(math.exp(-1))) / 2
    )


def test_spot_delta_batch_mean_vs_all_rewards_with_unequal_batches() -> None:
    """The released code's δ (TRL 0.20 bco_pair) averages each step's batch mean; the other form
    averages every reward. With unequal batch sizes they differ; each matches its own definition."""
    steps = [[1.0, 2.0], [3.0, 6.0, 9.0, 12.0], [-4.0]]
    batch_mean, all_rewards = RunningMean(batch_mean=True), RunningMean()
    for k, batch in enumerate(steps, start=1):
        got_batch_mean, got_all = batch_mean.add(torch.tensor(batch)), all_rewards.add(torch.tensor(batch))
        seen = steps[:k]
        assert got_batch_mean == pytest.approx(sum(sum(b) / len(b) for b in seen) / k)
        assert got_all == pytest.approx(sum(sum(b) for b in seen) / sum(len(b) for b in seen))
    assert got_batch_mean == pytest.approx((1.5 + 7.5 - 4.0) / 3) and got_all == pytest.approx(29.0 / 7)
    assert got_batch_mean != pytest.approx(got_all)
    # at a fixed batch size the two agree
    a, b = RunningMean(batch_mean=True), RunningMean()
    for batch in ([1.0, 5.0], [2.0, -3.0]):
        assert a.add(torch.tensor(batch)) == pytest.approx(b.add(torch.tensor(batch)))
    # the state (total, count) round-trips through state_dict
    restored = RunningMean(batch_mean=True)
    restored.load_state_dict(batch_mean.state_dict())
    assert restored.add(torch.tensor([0.0])) == pytest.approx(batch_mean.add(torch.tensor([0.0])))
    assert SPoTOptions().delta == "batch_mean"
    with pytest.raises(BenchError, match="options.delta must be one of batch_mean, all_rewards"):
        check(SPoTOptions(delta="median"), "options.")


def test_spot_bco_running_mean_and_loss_by_hand() -> None:
    delta = RunningMean()
    assert delta.add(torch.tensor([1.0, 2.0])) == pytest.approx(1.5)
    assert delta.add(torch.tensor([3.0, 6.0])) == pytest.approx(3.0)  # mean of all four seen so far
    # L = −log σ(r⁺ − δ) − log σ(−(r⁻ − δ)) with r⁺ = 1, r⁻ = −1, δ = 0.5
    expected = math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-1.5))  # −log σ(0.5) − log σ(1.5)
    assert spot_loss(torch.tensor([1.0]), torch.tensor([-1.0]), 0.5).item() == pytest.approx(expected)
    # SPoT-BCE is δ = 0: symmetric in the two rewards' signs
    assert spot_loss(torch.tensor([2.0]), torch.tensor([-2.0]), 0.0).item() == pytest.approx(
        2 * math.log1p(math.exp(-2))
    )


@cache
def _lcs_recursive(a: str, b: str) -> int:
    if not a or not b:
        return 0
    if a[0] == b[0]:
        return 1 + _lcs_recursive(a[1:], b[1:])
    return max(_lcs_recursive(a[1:], b), _lcs_recursive(a, b[1:]))


@pytest.mark.parametrize(
    ("rejected", "chosen"), [("abcd", "abed"), ("5+6=11#11", "5+6=11;11+3=14#14"), ("xyz", "abc"), ("aaaa", "aa")]
)
def test_change_ratio_is_one_minus_lcs_over_chosen_length(rejected: str, chosen: str) -> None:
    ids = lambda s: [ord(c) for c in s]  # noqa: E731
    assert change_ratio(ids(rejected), ids(chosen)) == pytest.approx(1 - _lcs_recursive(rejected, chosen) / len(chosen))
    assert change_ratio(ids("abcd"), ids("abed")) == pytest.approx(0.25)  # LCS "abd"


def test_group_advantage_by_hand() -> None:
    # R = [1, 0, 0, 0]: mean 0.25, unbiased std √(0.75/3) = 0.5
    advantages = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]), eps=0.0 + 1e-12)
    assert advantages[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])
    assert advantages[1].abs().max() < 1e-6  # a group with equal rewards carries no signal


def test_clipped_surrogate_by_hand() -> None:
    logp = torch.log(torch.tensor([[1.5, 0.5, 0.5]]))
    old = torch.zeros(1, 3)
    value, clipped = clipped_surrogate(logp, old, torch.tensor([1.0]), clip_eps=0.2)
    assert value[0].tolist() == pytest.approx([1.2, 0.5, 0.5]) and clipped[0].tolist() == [True, False, False]
    value, clipped = clipped_surrogate(logp, old, torch.tensor([-1.0]), clip_eps=0.2)
    assert value[0].tolist() == pytest.approx([-1.5, -0.8, -0.8]) and clipped[0].tolist() == [False, True, True]


def test_k3_is_an_unbiased_kl_estimator() -> None:
    # By hand: π = 0.5, π_ref = 0.25 → 0.5 − log 0.5 − 1
    assert k3_kl(torch.log(torch.tensor(0.5)), torch.log(torch.tensor(0.25))).item() == pytest.approx(
        0.5 - math.log(0.5) - 1
    )
    # Exactly, over a categorical distribution: E_{y~π}[k3] = KL(π ‖ π_ref)
    pi, ref = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.2, 0.5, 0.3])
    expectation = (pi * k3_kl(pi.log(), ref.log())).sum()
    assert expectation.item() == pytest.approx((pi * (pi / ref).log()).sum().item())


def test_sequence_logprob_sums_completion_tokens_only() -> None:
    tokenizer = build_tokenizer()
    model = build_model(
        OrganismConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64), len(tokenizer)
    ).eval()
    prompt, completion = "calc 1+2\n", "1+2=3#3"
    with torch.no_grad():
        got = sequence_logprobs(model, encode_completions(tokenizer, [prompt], [completion]))[0]
        # Independent: score each completion token (and EOS) one prefix at a time
        ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        expected = 0.0
        for t in range(len(prompt), len(ids)):
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
            expected += torch.log_softmax(logits, -1)[ids[t]].item()
    assert got.item() == pytest.approx(expected, rel=1e-4)


def _pcgrad(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """PCGrad (Yu et al. 2020): drop g's component along s when they conflict."""
    return g - min(0.0, float(g @ s)) / float(s @ s) * s


def test_pcr_without_conflict_is_the_plain_sum() -> None:
    g, s = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.1])
    resolution = resolve_conflict(g, s, var_pla=1.0, var_sta=1.0)
    assert not resolution.conflict and resolution.alpha == 0
    assert torch.allclose(resolution.update, g + s)


def test_pcr_hard_limit_is_pcgrad_and_soft_weights_by_precision() -> None:
    g, s = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-1.0, 1.0, 0.0])
    hard = resolve_conflict(g, s, var_pla=1.0, var_sta=1e-12)  # stability certain: α → 1
    assert hard.conflict and hard.alpha == pytest.approx(1.0)
    assert torch.allclose(hard.update, _pcgrad(g, s) + s, atol=1e-6)
    assert float((hard.update - s) @ s) == pytest.approx(0.0, abs=1e-6)  # projected μ_pla ⟂ μ_sta
    soft = resolve_conflict(g, s, var_pla=1.0, var_sta=3.0)  # α = λ_sta/(λ_pla+λ_sta) = (1/3)/(1 + 1/3)
    assert soft.alpha == pytest.approx(0.25)
    assert torch.allclose(soft.update, g - 0.25 * float(g @ s) / float(s @ s) * s + s)
    assert soft.cosine == pytest.approx(float(g @ s / (g.norm() * s.norm())))


def test_gradient_moments_match_torch_var() -> None:
    grads = [torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    moments = GradientMoments([torch.nn.Parameter(torch.zeros(3, 4))])
    for grad in grads:
        moments.add((grad,))
    stacked = torch.stack(grads)
    assert torch.allclose(moments.mean(0), stacked.mean(0), atol=1e-6)
    assert moments.trace_variance([0]) == pytest.approx(stacked.var(0, unbiased=True).sum().item(), rel=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lambda: DPOOptions(beta=-0.1), "beta must be positive"),
        (lambda: SPoTOptions(beta=-1), "beta must be positive"),
        (lambda: SPoTOptions(gamma=0.0), "gamma must be in (0, 1]"),
        (lambda: SPoTOptions(gamma=1.5), "gamma must be in (0, 1]"),
        (lambda: SPoTOptions(loss="mse"), "loss must be one of bco, bce"),
        (lambda: GRPOOptions(group_size=1), "group_size must be >= 2"),
        (lambda: GRPOOptions(beta=-0.01), "beta must be >= 0"),
        (lambda: PCROptions(prompts_per_step=1), "prompts_per_step must be >= 2"),
    ],
)
def test_invalid_method_options_are_rejected(options, message: str) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        check(options(), "options.")


def test_all_pairs_of_small_cases_agree_with_recursive_lcs() -> None:
    for a, b in itertools.product(["", "a", "ab", "ba", "abc"], ["a", "ab", "cab"]):
        assert change_ratio([ord(c) for c in a], [ord(c) for c in b]) == pytest.approx(
            1 - _lcs_recursive(a, b) / len(b)
        )


def test_held_out_pairs_are_whole_prompts_every_tenth_at_most_64() -> None:
    from plasticity_bench.trainers.policy import held_out_flags

    prompts = [f"p{i // 2}" for i in range(60)]  # 30 prompts, two pairs each
    flags = held_out_flags(prompts)
    held = {p for p, f in zip(prompts, flags) if f}
    assert held == {"p0", "p10", "p20"} and sum(flags) == 6
    assert not held & {p for p, f in zip(prompts, flags) if not f}  # no held-out prompt is trained on
    assert not any(held_out_flags(prompts[:19]))  # too few pairs: nothing held out
    assert sum(held_out_flags([f"p{i}" for i in range(2000)])) == 64


def test_dpo_pairs_per_prompt_pairs_each_wrong_sample_with_the_right_ones_in_turn() -> None:
    from plasticity_bench.harness.core.items import Item
    from plasticity_bench.trainers.dpo import prompt_pairs

    item = Item("i", "math", "chain_sum", "hard", "calc 1+1\n", "1+1=2#2", "2", {})
    samples = ["w1", "r1", "w2", "w3", "r2", "w4", "w5", "w6"]
    scores = [1.0 if c.startswith("r") else 0.0 for c in samples]
    pairs = prompt_pairs(item, samples, scores, DPOOptions(pairs_per_prompt=4))
    assert [(chosen, rejected) for _, chosen, rejected in pairs] == [
        ("r1", "w1"),
        ("r2", "w2"),
        ("r1", "w3"),
        ("r2", "w4"),
    ]
    assert [(c, r) for _, c, r in prompt_pairs(item, samples, scores, DPOOptions(pairs_per_prompt=1))] == [("r1", "w1")]
    assert prompt_pairs(item, samples, [0.0] * len(samples), DPOOptions()) == []  # no right sample: no pair


@pytest.mark.parametrize(
    ("chosen", "rejected", "cut"),
    [
        (
            "7-4=3;3-7=-4;-4+0=-4#-4",
            "7-4=2;2-7=-5;-5+0=-6#-6",
            ("7-4=3;", "7-4=2;"),
        ),  # wrong at step 1: its sound-looking rest is dropped
        (
            "7-4=3;3-7=-4;-4+0=-4#-4",
            "7-4=3;3-7=-4;-4+0=-3#-3",
            ("7-4=3;3-7=-4;-4+0=-4#-4", "7-4=3;3-7=-4;-4+0=-3#-3"),
        ),  # last step: whole
        (
            "7-4=3;3-7=-4#-4",
            "7-4=3#3",
            ("7-4=3;", "7-4=3#3"),
        ),  # the wrong one stopped early: it stays whole, the right one is cut
        (
            "x = 1\ny = 2\nanswer 3\n",
            "x = 1\ny = 5\nanswer 6\n",
            ("x = 1\ny = 2\n", "x = 1\ny = 5\n"),
        ),  # a real model's lines
    ],
)
def test_first_step_pairs_end_after_the_first_step_that_differs(
    chosen: str, rejected: str, cut: tuple[str, str]
) -> None:
    from plasticity_bench.trainers.dpo import through_first_differing_step

    assert through_first_differing_step(chosen, rejected) == cut


def test_a_cut_completion_is_encoded_without_eos() -> None:
    from plasticity_bench.trainers.policy import PreferencePair, pair_batch

    tokenizer = build_tokenizer()
    batch = pair_batch(
        tokenizer,
        [
            PreferencePair("calc 1+1\n", "1+1=2;", "1+1=3;", chosen_whole=False, rejected_whole=False),
            PreferencePair("calc 1+1\n", "1+1=2#2", "1+1=3#3"),
        ],
    )
    chosen_labels = [[t for t in row if t != -100] for row in batch["chosen_labels"].tolist()]
    assert chosen_labels[0][-1] != tokenizer.eos_token_id and chosen_labels[1][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(chosen_labels[0]) == "1+1=2;"
