"""The embedded model organism: a small Qwen3 pre-trained from scratch on the foundation mix.

It is an ordinary Hugging Face model folder (Qwen3ForCausalLM + a character-level fast
tokenizer), so transformers, vLLM and lm-eval load it like any real model. The default preset's
organism ships with the package (`organism_weights/`, pinned by shipped.json), and so does the in-context
preset's (`organism_weights_in_context/`): another CPU's float kernels, or another thread count, pre-train
the same config to other weights (BENCHMARKS §14.1), so every machine starts from the shipped ones. Any
other config is built deterministically from `OrganismConfig` and cached under the hash of that config, so
every run on a machine shares one starting model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from plasticity_bench.harness.app.organism_config import IN_CONTEXT_SHOTS, OrganismConfig
from plasticity_bench.harness.core import provenance
from plasticity_bench.harness.core.errors import BenchError, writing
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.store import check_writable, save_checkpoint, write_folder_atomic
from plasticity_bench.tasks.base import Item
from plasticity_bench.tasks.suites import Suite
from plasticity_bench.tasks.suites.few_shot import with_solved_examples
from plasticity_bench.tasks.suites.items import foundation_items, load_eval_items
from plasticity_bench.trainers.common import LoopConfig, Stage, TrainContext, train
from plasticity_bench.trainers.sft import SFT

EOS, PAD, UNK = "<|endoftext|>", "<|pad|>", "<|unk|>"
CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " \n"

SHIPPED = Path(__file__).resolve().parent / "organism_weights"  # the default preset's organism, in the package
# every shipped organism by the preset it is the organism of (scripts/ship_organism.py writes these folders)
SHIPPED_ORGANISMS = {"default": SHIPPED, "in-context": SHIPPED.with_name("organism_weights_in_context")}
SHIPPED_RECORD = "shipped.json"  # its config fingerprint, every file's sha256, where it was pre-trained
SHIPPED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "organism.json",
)
REBUILT_SUFFIX = "-rebuilt"  # `bench base --rebuild` of the shipped organism: this machine's own pre-training


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
    """Where this machine caches the organism it pre-trains for `config` on `suite`."""
    return cache_root() / "organisms" / config.fingerprint(suite)


def shipped_record(folder: Path = SHIPPED) -> dict[str, Any] | None:
    """A shipped organism's shipped.json (the default preset's unless `folder` names another); None if absent."""
    record = folder / SHIPPED_RECORD
    return json.loads(record.read_text()) if record.is_file() else None


def shipped_for(config: OrganismConfig, suite: Suite) -> Path | None:
    """The shipped organism's folder when `config` on `suite` is an organism that ships, else None."""
    fingerprint = config.fingerprint(suite)
    for folder in SHIPPED_ORGANISMS.values():
        record = shipped_record(folder)
        if record is not None and record["fingerprint"] == fingerprint:
            return folder
    return None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_shipped(folder: Path = SHIPPED) -> None:
    """Every shipped file as shipped.json pins it: an edited or damaged install never passes for the organism."""
    for name, digest in (shipped_record(folder) or {}).get("files", {}).items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != digest:
            raise BenchError(
                f"the shipped organism's {name} in {folder} does not match its sha256 in {SHIPPED_RECORD}; "
                "reinstall plasticity-bench"
            )


def find_organism(config: OrganismConfig, suite: Suite) -> Path:
    """The organism's folder, built or not: the shipped one for its config, else this machine's cache entry."""
    return shipped_for(config, suite) or organism_path(config, suite)


def ensure_organism(config: OrganismConfig, suite: Suite, quiet: bool = False) -> Path:
    """The organism's folder: the shipped one when `config` is its config (no pre-training, on any machine),
    else the cached one, pre-training it first if this machine has none yet."""
    shipped = shipped_for(config, suite)
    if shipped is not None:
        check_shipped(shipped)  # 5 MB hashed in milliseconds
        return shipped
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


def start_source(folder: Path) -> str:
    """run.json's `base_model_source` for an organism folder: shipped with the package, or pre-trained here."""
    shipped = {folder.resolve() for folder in SHIPPED_ORGANISMS.values()}
    return "shipped" if folder.resolve() in shipped else "pre-trained"


def pretraining_mix(
    config: OrganismConfig, suite: Suite, n: int, seed: int, exclude: frozenset[str], tokenizer: Any
) -> list[Item]:
    """`n` items of the organism's pre-training mix drawn at `seed`: the suite's foundation items, with the
    recipe's `in_context` share of them shown after solved examples of their own task. Pre-training draws
    it at the organism's seed; replay draws it afresh at the run's, so it replays what the organism learnt
    from, the packed sequences included."""
    mix = foundation_items(suite, n, seed, exclude)
    if not config.in_context:
        return mix

    def fits(text: str) -> bool:  # room for the target's EOS too
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) < config.max_positions

    return with_solved_examples(mix, config.in_context, IN_CONTEXT_SHOTS, seed, fits)


def pretrain(config: OrganismConfig, suite: Suite, folder: Path, quiet: bool) -> Path:
    started = time.time()
    tokenizer = build_tokenizer()
    model = build_model(config, len(tokenizer))
    exclude = load_eval_items(suite).prompts  # the organism never pre-trains on an evaluation prompt
    mix = pretraining_mix(config, suite, config.pretrain_steps * config.batch_size, config.seed, exclude, tokenizer)
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


def rebuild(config: OrganismConfig, suite: Suite, quiet: bool = False) -> tuple[Path, str]:
    """Pre-train the organism on this machine again; returns its folder and how it compares with the shipped
    organism (for the shipped config: the rebuild lands beside the cache entry as `<fingerprint>-rebuilt`, and
    runs keep starting from the shipped weights) or with the cached one it replaces (any other config)."""
    shipped = shipped_for(config, suite)
    cached = organism_path(config, suite)
    reference = shipped or (cached if (cached / "config.json").exists() else None)
    target = cached.with_name(cached.name + REBUILT_SUFFIX) if shipped else cached
    verdict: list[str] = []

    def build(partial: Path) -> None:
        pretrain(config, suite, partial, quiet)
        verdict.append(compare_weights(partial, reference, "shipped" if shipped else "cached"))

    with writing(cached.parent):
        cached.parent.mkdir(parents=True, exist_ok=True)
        check_writable(cached.parent)  # before minutes of pre-training, not after
        write_folder_atomic(target, build)  # a cached entry stays usable until the rebuild replaces it
    return target, verdict[0]


def compare_weights(built: Path, reference: Path | None, label: str) -> str:
    """One line: whether `built`'s weights equal `reference`'s byte for byte, else their largest difference."""
    if reference is None:
        return "nothing shipped or cached to compare with: the first build of this organism here"
    ours, theirs = provenance.weights_digest(built), provenance.weights_digest(reference)
    if ours == theirs:
        return f"equal to the {label} organism ({reference}): byte-identical weights, sha256 {ours}"
    from safetensors.torch import load_file  # transformers' own dependency

    new, old = load_file(built / "model.safetensors"), load_file(reference / "model.safetensors")
    if new.keys() != old.keys() or any(new[name].shape != old[name].shape for name in new):
        return f"differs from the {label} organism ({reference}): other tensors"
    name, gap = max(((name, (new[name] - old[name]).abs().max().item()) for name in new), key=lambda pair: pair[1])
    return (
        f"differs from the {label} organism ({reference}): largest absolute weight difference {gap:.3g} ({name}); "
        f"weights sha256 {ours} here, {theirs} {label}"
    )
