"""The memory check of `bench run`: the run's model shape, method and settings turned into the plain
numbers of harness/core/memory.py, read without loading any weights (config.json, the safetensors
headers, or the architecture built on the meta device). docs/gpu-recipes.md explains the estimate.

Which methods keep what (read from trainers/): GRPO and PCR, and DPO with `pairs_from: policy`,
keep π_ref, a frozen copy of the whole model (`freeze_reference`); L2-SP keeps θ₀, a copy of the
trained parameters; SPoT, offline DPO and RPS/EPS's DPO stage compute π_ref's log-probs once and
keep no copy. Preference methods put a pair (two sequences) per example; GRPO's micro-batch is the
whole rollout (prompts_per_step × group_size), PCR's one group. A method of a plugin counts as SFT.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import plasticity_bench.trainers  # noqa: F401  (registers the methods)
from plasticity_bench.harness.app.config import LoraSettings, RunConfig, lora_settings, method_options
from plasticity_bench.harness.app.organism import build_model, build_tokenizer
from plasticity_bench.harness.app.organism_config import OrganismConfig
from plasticity_bench.harness.app.sharding import can_shard
from plasticity_bench.harness.core.errors import BenchError, warn
from plasticity_bench.harness.core.memory import GB, Estimate, Shape, Workload, check, estimate, table
from plasticity_bench.trainers.common import TRAINERS, Trainer
from plasticity_bench.trainers.device import choose_placement
from plasticity_bench.trainers.dpo import DPO
from plasticity_bench.trainers.grpo import GRPO
from plasticity_bench.trainers.l2sp import L2SP
from plasticity_bench.trainers.pcr import PCR
from plasticity_bench.trainers.policy import PairTrainer
from plasticity_bench.trainers.rps import TwoStage

DEFAULT_SEQ_LEN = 2048  # a model folder's assumed longest training sequence, when its context is longer
PCR_COPIES = 5.0  # two gradients' running sums and sums of squares, and one micro-batch's gradient in flight


class ShapeUnknown(BenchError):
    """The model's configuration lacks a number the estimate needs."""


@dataclass(frozen=True)
class MemoryCheck:
    shape: Shape
    work: Workload
    device: float  # bytes
    # the same run with LoRA's default adapters (None: it already uses LoRA), made only for a refusal
    lora: Callable[[], Workload | None]
    can_shard: bool = True  # whether the run could train sharded (zero3) on several processes

    def estimate(self) -> Estimate:
        return estimate(self.shape, self.work, self.device)

    def check(self) -> Estimate:
        """The estimate; BenchError (one line, naming what would fit) when it exceeds the device."""
        found = self.estimate()
        return found if found.fits else check(self.shape, self.work, self.device, self.lora(), self.can_shard)


def check_memory(config: RunConfig, trainer: Trainer) -> Estimate | None:
    """The estimate for this run; BenchError (one line) when it cannot fit the device. A model whose
    configuration does not say its shape is not refused: a warning says that nothing was checked."""
    try:
        plan = memory_plan(config, trainer)
    except ShapeUnknown as unknown:
        warn(f"{unknown}; device memory not checked")
        return None
    return plan.check()


def memory_plan(config: RunConfig, trainer: Trainer) -> MemoryCheck:
    """Everything the estimate needs, for the organism or the model folder `config.model`."""
    check_settings(config)
    shape = model_shape(config)
    placement = choose_placement(config.device)
    activation = 2 if shape.weight_bytes == 2 or placement.autocast_dtype is not None else 4
    examples, per_example = micro_batch(config, trainer)
    lora = lora_settings(config)
    work = Workload(
        trained=shape.parameters if lora is None else lora_parameters(config, lora),
        reference=0,
        method_copies=PCR_COPIES if isinstance(trainer, PCR) else 0.0,
        examples=examples,
        seq_len=seq_len(config),
        activation_bytes=activation,
        per_example=per_example,
        strategy=config.strategy,
        processes=config.num_processes,
        checkpointing=config.gradient_checkpointing,
        samples_while_training=samples_while_training(trainer),
        engine=config.sharding_engine,
    )
    work = replace(work, reference=reference_parameters(config, trainer, shape, work.trained))

    def with_lora() -> Workload | None:
        if lora is not None:
            return None
        adapters = lora_parameters(config, LoraSettings())
        return replace(work, trained=adapters, reference=reference_parameters(config, trainer, shape, adapters))

    return MemoryCheck(shape, work, device_bytes(config), with_lora, can_shard(config))


def check_settings(config: RunConfig) -> None:
    if config.device_memory_gb is not None and not config.device_memory_gb > 0:
        raise BenchError(f"device_memory_gb must be positive, got {config.device_memory_gb}")
    if config.seq_len_bound is not None and config.seq_len_bound <= 0:
        raise BenchError(f"seq_len_bound must be positive, got {config.seq_len_bound}")


def reference_parameters(config: RunConfig, trainer: Trainer, shape: Shape, trained: int) -> int:
    """Parameters of the frozen copy the method keeps whole in memory: π_ref or θ₀ (trainers/*.py's `setup`)."""
    if samples_while_training(trainer):
        return shape.parameters  # π_ref: a deepcopy of the model (with its adapters, when LoRA)
    if isinstance(trainer, L2SP):
        return trained  # θ₀ of the trained parameters
    return 0


def samples_while_training(trainer: Trainer) -> bool:
    """GRPO (and PCR) roll out, online DPO draws pairs, from the policy as it trains; both keep π_ref."""
    return isinstance(trainer, GRPO) or (isinstance(trainer, DPO) and trainer.online)


def micro_batch(config: RunConfig, trainer: Trainer) -> tuple[int, int]:
    """Examples in the largest micro-batch of one optimiser step (all processes together), and the
    sequences in one example (a preference pair: 2)."""
    options: Any = trainer.options
    if isinstance(trainer, PCR):
        return options.group_size, 1
    if isinstance(trainer, GRPO):
        return math.ceil(options.prompts_per_step * options.group_size / config.grad_accum), 1
    pairs = isinstance(trainer, PairTrainer) or (
        isinstance(trainer, TwoStage) and "dpo" in (options.stage1_loss, options.stage2_loss)
    )
    return math.ceil(config.batch_size / config.grad_accum), 2 if pairs else 1


def seq_len(config: RunConfig) -> int:
    """The longest training sequence assumed: seq_len_bound, else the organism's context, else the
    model's context up to DEFAULT_SEQ_LEN."""
    if config.seq_len_bound is not None:
        return config.seq_len_bound
    if config.model is None:
        return config.organism.max_positions
    context = getattr(text_config(config.model), "max_position_embeddings", None)
    return min(int(context or DEFAULT_SEQ_LEN), DEFAULT_SEQ_LEN)


@functools.lru_cache(maxsize=2)
def text_config(model: str) -> Any:
    """The model's configuration, its language model part (a multimodal model nests it); transformers
    maps each architecture's own names (GPT-2's n_embd) onto the common ones read here."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model).get_text_config()


def model_shape(config: RunConfig) -> Shape:
    """The model's size and shape; BenchError when its configuration lacks what the estimate needs."""
    if config.model is None:
        organism = config.organism
        return Shape(
            parameters=meta_parameters(config),
            hidden_size=organism.hidden_size,
            intermediate_size=organism.intermediate_size,
            num_layers=organism.num_layers,
            num_heads=organism.num_heads,
            vocab_size=len(build_tokenizer()),
            weight_bytes=4,  # built and saved in float32
        )
    text = text_config(config.model)
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [name for name in needed if not isinstance(getattr(text, name, None), int)]
    if missing:
        raise ShapeUnknown(f"the memory estimate needs {', '.join(missing)} in {config.model}/config.json")
    counted = safetensors_parameters(Path(config.model))
    return Shape(
        parameters=counted[0] if counted else meta_parameters(config),
        hidden_size=text.hidden_size,
        intermediate_size=int(getattr(text, "intermediate_size", None) or 4 * text.hidden_size),
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        vocab_size=text.vocab_size,
        weight_bytes=4,  # training loads the weights in float32 whatever the folder stores (stages/train.py)
        eager_attention=getattr(text, "_attn_implementation", None) == "eager",  # None: transformers' sdpa
    )


def safetensors_parameters(folder: Path) -> tuple[int, str] | None:
    """The parameter count and the commonest dtype from the safetensors files' headers (the first
    8 bytes give the JSON header's length); None when the folder has none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total, by_dtype = 0, dict[str, int]()
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = math.prod(tensor["shape"])
                total += count
                by_dtype[tensor["dtype"]] = by_dtype.get(tensor["dtype"], 0) + count
    return total, max(by_dtype, key=by_dtype.__getitem__)


def meta_model(config: RunConfig) -> torch.nn.Module:
    return _meta_model(config.model, config.organism)


@functools.lru_cache(maxsize=2)
def _meta_model(model: str | None, organism: OrganismConfig) -> torch.nn.Module:
    """The run's architecture on the meta device: shapes without memory (built once a process)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.random.fork_rng(), torch.device("meta"):  # build_model seeds torch
        if model:
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
        return build_model(organism, len(build_tokenizer()))


def meta_parameters(config: RunConfig) -> int:
    return sum(p.numel() for p in meta_model(config).parameters())


def lora_parameters(config: RunConfig, lora: LoraSettings) -> int:
    """LoRA's trained parameters: r·(in + out) for every Linear whose last name is a target."""
    total = 0
    for name, module in meta_model(config).named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.targets:
            total += lora.r * (module.in_features + module.out_features)
    return total


def device_bytes(config: RunConfig) -> float:
    """device_memory_gb, else the training device's own: the GPU's memory, or this machine's RAM."""
    if config.device_memory_gb is not None:
        return config.device_memory_gb * GB
    if choose_placement(config.device).device == "cuda":
        return float(torch.cuda.get_device_properties(0).total_memory)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def dry_run(config: RunConfig) -> tuple[list[str], MemoryCheck]:
    """What `bench run --dry-run` prints (the estimate's inputs, then its table), and the plan to check.
    Nothing is written and no data is read: only the settings, the method and the model's shape."""
    trainer_class = TRAINERS.get(config.method)
    trainer = trainer_class(method_options(trainer_class.Options, config.options, config.method))
    plan = memory_plan(config, trainer)
    shape, work, found = plan.shape, plan.work, plan.estimate()
    inputs = (
        f"model: {shape.parameters:,} parameters of {shape.weight_bytes} bytes, {work.trained:,} trained, "
        f"{work.reference:,} in a frozen copy; micro-batch: {work.examples} x {work.per_example} sequences "
        f"of up to {work.seq_len} tokens (all processes), activations of {work.activation_bytes} bytes"
    )
    return [inputs, *table(found, work)], plan
