"""The embedded model organism: a small Qwen3 pre-trained from scratch on the foundation mix.

It is an ordinary Hugging Face model folder (Qwen3ForCausalLM + a character-level fast
tokenizer), so transformers, vLLM and lm-eval load it like any real model. It is built
deterministically from `OrganismConfig` and cached under the hash of that config, so every run
on a machine shares one starting model.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from plasticity_bench.harness.app.organism_config import OrganismConfig
from plasticity_bench.harness.core.errors import writing
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.store import check_writable, save_checkpoint
from plasticity_bench.tasks.suites import Suite
from plasticity_bench.tasks.suites.items import foundation_items, load_eval_items
from plasticity_bench.trainers.common import LoopConfig, Stage, TrainContext, train
from plasticity_bench.trainers.sft import SFT

EOS, PAD, UNK = "<|endoftext|>", "<|pad|>", "<|unk|>"
CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " \n"


def cache_root() -> Path:
    return Path(os.environ.get("PLASTICITY_BENCH_CACHE", Path.home() / ".cache" / "plasticity-bench"))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; decoding concatenates (no spaces inserted)."""
    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK, *CHARACTERS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=OrganismConfig.max_positions,
    )


def build_model(config: OrganismConfig, vocab_size: int) -> Qwen3ForCausalLM:
    torch.manual_seed(config.seed)
    qwen = Qwen3Config(  # type: ignore[call-arg]  # torch_dtype: see below
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.hidden_size // config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=1,
        pad_token_id=0,
        torch_dtype="float32",  # an accepted **kwargs key: config.json records the organism's dtype
    )
    return Qwen3ForCausalLM(qwen)


def organism_path(config: OrganismConfig, suite: Suite) -> Path:
    return cache_root() / "organisms" / config.fingerprint(suite)


def ensure_organism(config: OrganismConfig, suite: Suite, quiet: bool = False) -> Path:
    """The cached organism's folder, pre-training it first if this machine has none yet."""
    folder = organism_path(config, suite)
    if (folder / "config.json").exists():
        return folder
    with writing(folder.parent):  # a read-only or full cache: one line naming it
        folder.parent.mkdir(parents=True, exist_ok=True)
        check_writable(folder.parent)  # before minutes of pre-training, not after
        try:
            return pretrain(config, suite, folder, quiet)
        except BaseException:  # no half-written organism that a later run would take as cached
            shutil.rmtree(folder, ignore_errors=True)
            raise


def pretrain(config: OrganismConfig, suite: Suite, folder: Path, quiet: bool) -> Path:
    started = time.time()
    tokenizer = build_tokenizer()
    model = build_model(config, len(tokenizer))
    exclude = load_eval_items(suite).prompts  # the organism never pre-trains on an evaluation prompt
    mix = foundation_items(suite, config.pretrain_steps * config.batch_size, config.seed, exclude)
    stage = Stage("foundation", mix, config.pretrain_steps, config.lr)
    loop = LoopConfig(
        batch_size=config.batch_size,
        warmup_fraction=0.05,
        min_lr_ratio=0.1,
        weight_decay=0.01,
        grad_clip=1.0,
        checkpoint_every=0,
        seed=config.seed,
    )
    with progress_bar(config.pretrain_steps, "pre-training the organism", quiet) as advance:
        train(model, SFT(), [stage], TrainContext(tokenizer, loop), on_step=lambda step, loss: advance(loss))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_checkpoint(model, tokenizer, folder)
    (folder / "organism.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "suite": suite.name,
                "pretrain_seconds": round(time.time() - started, 1),
                "parameters": model.num_parameters(),
            },
            indent=2,
        )
    )
    return folder


def remove_cached(config: OrganismConfig, suite: Suite) -> None:
    shutil.rmtree(organism_path(config, suite), ignore_errors=True)
