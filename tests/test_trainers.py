"""Shared training machinery and the curricula of SFT, RPS and EPS."""

from __future__ import annotations

import math

import pytest
import torch

import plasticity_bench.trainers  # noqa: F401
from plasticity_bench.harness.app.organism import build_tokenizer
from plasticity_bench.tasks.base import Item
from plasticity_bench.trainers.common import TRAINERS, MethodSettings, TrainingData, collate, cosine_lr, encode

EASY = [Item("e", "math", "chain_sum", "easy", "calc 1+2\n", "1+2=3#3", "3")]
HARD = [Item("h", "math", "chain_sum", "hard", "calc 1+2+3+4\n", "1+2=3;3+3=6;6+4=10#10", "10")]
SETTINGS = MethodSettings(steps=300, lr=1e-3)


def test_cosine_schedule_warms_up_peaks_and_decays_to_the_floor() -> None:
    lrs = [cosine_lr(step, 100, 1.0, warmup=10, min_ratio=0.1) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1)
    # step 54 is 44 of the 89 post-warm-up intervals into the decay
    assert lrs[54] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 44 / 89)))


def test_rps_drops_stage_two_lr_by_ninety_percent_and_eps_does_not() -> None:
    data = TrainingData(EASY, HARD)
    rps = TRAINERS.get("rps")().stages(data, SETTINGS)
    eps = TRAINERS.get("eps")().stages(data, SETTINGS)
    assert [(s.name, s.steps) for s in rps] == [("easy", 150), ("hard", 150)] == [(s.name, s.steps) for s in eps]
    assert rps[0].items is EASY and rps[1].items is HARD
    assert (rps[0].peak_lr, rps[1].peak_lr) == (1e-3, pytest.approx(1e-4))
    assert (eps[0].peak_lr, eps[1].peak_lr) == (1e-3, 1e-3)
    sft = TRAINERS.get("sft")().stages(data, SETTINGS)
    assert [(s.name, s.steps, s.peak_lr) for s in sft] == [("hard", 300, 1e-3)]


def test_completion_only_loss_masks_prompt_and_padding() -> None:
    tokenizer = build_tokenizer()
    ids, labels = encode(tokenizer, HARD[0])
    prompt_len = len(HARD[0].prompt)
    assert labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:] and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]) == HARD[0].prompt + HARD[0].target  # one token per character, lossless
    batch = collate([encode(tokenizer, EASY[0]), (ids, labels)], tokenizer.pad_token_id)
    short = len(encode(tokenizer, EASY[0])[0])
    assert batch["attention_mask"][0, short:].sum() == 0 and (batch["labels"][0, short:] == -100).all()
    assert batch["input_ids"].dtype == torch.long


def test_every_method_is_listed_with_a_description() -> None:
    assert {"sft", "rps", "eps"} <= set(TRAINERS.names())
    assert all(entry.description for entry in TRAINERS)
