"""Run configuration: one frozen dataclass, a preset (tasks/presets/*.yaml), a YAML/JSON file, CLI
overrides, validation.

Precedence: preset < config file < command-line options. Every value is validated before
anything is written, so bad input never leaves a half-made run folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from plasticity_bench.harness.app.names import check_backend, check_method, check_suite
from plasticity_bench.harness.app.organism_config import OrganismConfig  # not .organism: answers before torch loads
from plasticity_bench.harness.app.presets import preset_file
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.memory import STRATEGIES
from plasticity_bench.harness.core.options import build as _build
from plasticity_bench.harness.core.options import option

VLLM_DTYPES = ("auto", "float32", "float", "bfloat16", "float16", "half")  # what vllm.LLM takes
ENGINES = ("fsdp2", "deepspeed")  # who shards the model under strategy zero2/zero3 (harness/app/sharding.py)
LAUNCHERS = ("torchrun", "accelerate")  # what starts N training processes (harness/app/stages/train_launch.py)
PRECISIONS = ("auto", "no", "bf16")  # mixed_precision


@dataclass(frozen=True)
class VllmSettings:
    """`vllm:`: arguments of the vLLM engine, passed to `vllm.LLM` unchanged, for the engine that
    generates the evaluation sets and the one that samples rollouts alike (docs/vllm-settings.md).
    The defaults are the engine the vllm backend starts without them."""

    tensor_parallel_size: int = option(1, "GPUs one engine's weights are split over", low=1)
    gpu_memory_utilization: float = option(
        0.85,
        "share of each GPU's memory the engine takes for weights and KV cache; unused on CPU",
        low=0,
        high=1,
        low_open=True,
    )
    max_model_len: int | None = option(None, "longest prompt + completion in tokens; null: the model's context")
    dtype: str = option(
        "float32", "the engine's weights and compute; float32 agrees with the hf backend", choices=VLLM_DTYPES
    )
    enable_prefix_caching: bool = option(True, "reuse the KV cache of prompts' shared beginnings")
    enable_sleep_mode: bool = option(
        False, "free the engine's GPU memory while a trainer on that GPU updates (CUDA only)"
    )

    def validate(self) -> None:
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise BenchError(f"vllm.max_model_len must be positive or null, got {self.max_model_len}")


@dataclass(frozen=True)
class RunConfig:
    method: str = "rps"
    suite: str = "micro"
    seed: int = 0
    model: str | None = None  # a Hugging Face model folder; None = the embedded organism
    # set when `model` was given as a hub id: {id, revision, commit, folder} (harness/app/hub.py); `model` is then
    # the folder
    model_hub: dict[str, Any] | None = None
    organism: OrganismConfig = field(default_factory=OrganismConfig)
    # `--organism-seed S`: start from organism S of the family, this CPU's pre-training of `organism` with seed S
    # (harness/app/organism_family.py); None = the preset's organism (the shipped one for the default preset)
    organism_seed: int | None = None
    backend: str = "hf"  # generates the evaluation sets at every checkpoint: hf, vllm or auto
    rollout_backend: str = "hf"  # samples the policy during training (GRPO, PCR, DPO, SPoT): hf, vllm or auto
    vllm: VllmSettings = field(default_factory=VllmSettings)  # the vLLM engine's own arguments (both purposes)
    # independent engines the evaluation's checkpoints are shared over (harness/app/engines.py); the records are
    # those of one engine, so not part of the fingerprint
    engines: int = option(1, "generation engines sharing the checkpoints out (one GPU each on GPUs)", low=1)
    # post-training
    steps: int | None = None  # post-training steps; None = the method's default (Trainer.default_steps)
    lr: float | None = None  # η; None = the method's default (Trainer.default_lr)
    batch_size: int = 32
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    # what stays on disk after the run (docs/run-folder.md): all | evaluated | last; not part of the fingerprint
    keep_checkpoints: str = "all"
    device: str = (
        "auto"  # where training runs: auto (a CUDA GPU when there is one, bf16 autocast where supported), cpu or cuda
    )
    grad_accum: int = 1  # micro-batches per optimiser step (batch_size is the global batch)
    train_examples: int = 4000  # size of each post-training set (easy and hard)
    options: dict[str, Any] = field(default_factory=dict)  # the method's own hyperparameters
    # LoRA adapters (peft) for any method, e.g. {r: 8, alpha: 16, targets: [q_proj, v_proj], dropout: 0.0}
    # (LoraSettings below); None = full fine-tuning
    lora: dict[str, Any] | None = None
    # evaluation
    eval_per_slice: int | None = None  # None = the suite's full evaluation sets
    # experiment trackers that get every training step and checkpoint score: tensorboard, wandb, mlflow
    # (harness/app/tracking.py, docs/tracking.md); not part of the fingerprint
    report_to: tuple[str, ...] = ()
    # the memory estimate (harness/app/memory.py, docs/gpu-recipes.md): device_memory_gb, strategy and
    # seq_len_bound feed the check and `bench run --dry-run`; of them only strategy also decides how N processes
    # train (below), the others are not part of the fingerprint
    device_memory_gb: float | None = None  # None = the device's own (the GPU's memory, or this machine's RAM)
    # training processes, data parallel (docs/scale.md): N processes compute what one does with grad_accum N,
    # so the number enters the fingerprint (only when it is not 1: one-process runs keep their identity)
    num_processes: int = option(1, "training processes (data parallel); also what the memory estimate assumes", low=1)
    # ddp: whole models; fsdp, zero3, zero2: sharded by torch's FSDP2 (harness/app/sharding.py); fingerprinted unless
    # ddp under N processes (one process trains the same whatever it says: the memory estimate alone reads it)
    strategy: str = option("ddp", "how processes share the model: ddp, zero2, zero3, fsdp", choices=STRATEGIES)
    # who shards under zero2/zero3: torch's FSDP2, or DeepSpeed when the accelerate config asks for DEEPSPEED (set
    # from that file, not by hand); the same computation, other float sums: part of the fingerprint with the strategy
    sharding_engine: str = option("fsdp2", "set from the accelerate config: fsdp2 or deepspeed", choices=ENGINES)
    seq_len_bound: int | None = None  # longest training sequence assumed; None = the model's context (≤ 2048)
    # what starts the training processes when num_processes > 1; the same computation either way (not fingerprinted)
    launcher: str = option("torchrun", "starts the training processes: torchrun or accelerate", choices=LAUNCHERS)
    accelerate_config: str | None = None  # `accelerate launch --config_file` with launcher accelerate
    # autocast precision of the forward passes: auto = bf16 on a GPU that has it, else fp32 (fingerprinted unless auto)
    mixed_precision: str = option("auto", "forward passes' precision: auto, no (fp32) or bf16", choices=PRECISIONS)
    # recompute activations in the backward pass: less memory, the same numbers (not fingerprinted)
    gradient_checkpointing: bool = False

    def fingerprint(self, extra: dict[str, Any] | None = None) -> str:
        """Identity of the run: two folders with the same fingerprint hold the same experiment
        (`extra`: what else defines it, e.g. the content hash of a user's suite file). Settings that
        change what is kept on disk, not the results, are left out."""
        values = {k: v for k, v in asdict(self).items() if k not in NOT_FINGERPRINTED}
        values["organism"] = self.organism.identity()
        if self.organism_seed is None:  # the preset's organism: the identity every run had before families
            del values["organism_seed"]
        for name, default in FINGERPRINTED_UNLESS.items():  # one-process runs keep the identity they always had
            if values[name] == default:
                del values[name]
        if self.strategy != "ddp" and self.num_processes > 1:  # sharded training: FSDP sums the gradients
            deepspeed = self.sharding_engine == "deepspeed"
            values["strategy"] = f"{self.strategy}/deepspeed" if deepspeed else self.strategy
        return hashlib.sha256(json.dumps({**values, **(extra or {})}, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# where and what is kept or logged, not what is computed
NOT_FINGERPRINTED = frozenset(
    {
        "keep_checkpoints",
        "device",
        "report_to",
        "device_memory_gb",
        "strategy",
        "sharding_engine",
        "seq_len_bound",
        "engines",
        "launcher",
        "accelerate_config",
        "gradient_checkpointing",
    }
)
# settings that change results but enter the fingerprint only away from these defaults, so that every
# run made before they existed (one process, the device's own precision) keeps its identity
FINGERPRINTED_UNLESS: dict[str, Any] = {"num_processes": 1, "mixed_precision": "auto"}


@dataclass(frozen=True)
class LoraSettings:
    """`lora:`: train low-rank adapters ΔW = (alpha/r)·B·A on the `targets` modules (peft), the
    base weights frozen; every checkpoint is saved merged (W + ΔW), a full model like any other."""

    r: int = option(8, "rank of the adapters A (r × in) and B (out × r)", low=0, low_open=True)
    alpha: int = option(16, "the adapters' scale is alpha/r", low=0, low_open=True)
    targets: tuple[str, ...] = option(
        ("q_proj", "v_proj"), "module names: the last part of the path, as peft matches them"
    )
    dropout: float = option(0.0, "dropout on the adapters' input", low=0, high=1, high_open=True)

    def validate(self) -> None:
        if not self.targets:
            raise BenchError("lora.targets must name at least one module, e.g. [q_proj, v_proj]")


def lora_settings(config: RunConfig) -> LoraSettings | None:
    """The config's `lora:` mapping as validated LoraSettings; None for full fine-tuning."""
    if config.lora is None:
        return None
    settings: LoraSettings = _build(LoraSettings, config.lora, "lora.")
    settings.validate()
    return settings


def backend_settings(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Per backend name, the keyword arguments a run's backends are made with (BackendPool)."""
    return {"vllm": asdict(config.vllm)}


KEEP_CHECKPOINTS = ("all", "evaluated", "last")


def load_config(
    preset: str = "default", path: Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Build and validate a RunConfig from a preset (a shipped name or a file, harness/app/presets.py),
    an optional file and CLI overrides."""
    values = read_config_file(preset_file(preset), "preset file")
    if path is not None:
        merge_settings(values, read_config_file(path))
    merge_settings(values, {k: v for k, v in (overrides or {}).items() if v is not None})
    config = _build(RunConfig, values, "")
    validate(
        replace(config, model=None)
    )  # every other setting first: nothing is downloaded for a run that cannot start
    config = with_hub_model(config)
    validate(config)
    if config.accelerate_config is not None:  # an accelerate config asking for FSDP: strategy fsdp
        from plasticity_bench.harness.app.sharding import with_sharded_strategy

        config = with_sharded_strategy(config)
    if config.organism_seed is not None:  # organism S of the family: the preset's organism pre-trained with seed S
        config = replace(config, organism=replace(config.organism, seed=config.organism_seed))
    return config


def with_hub_model(config: RunConfig) -> RunConfig:
    """`model` given as a hub id (`Qwen/Qwen3-0.6B`): its snapshot folder in the local Hugging Face
    cache (downloaded when online and not cached), and the id, revision and commit in `model_hub`.
    A path that exists here is a folder, whatever it looks like."""
    if config.model is None:
        return config
    from plasticity_bench.harness.app.hub import resolve_model

    folder, hub = resolve_model(config.model, "model")
    return config if hub is None else replace(config, model=str(folder), model_hub=hub.to_dict())


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 (and JSON) do.

    PyYAML implements YAML 1.1, whose floats need a dot and a signed exponent: `1e-4`, `1E-4`
    and `1.0e4` come back as *strings* (and so does JSON's `1e-4`). Floats with an exponent in
    any of these spellings resolve as floats here; PyYAML reads `.5`, `1.0e-4` and `1_000` as numbers itself.
    """


ConfigLoader.yaml_implicit_resolvers = {
    key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_config_file(path: Path, what: str = "config file") -> dict[str, Any]:
    if not path.is_file():
        raise BenchError(f"{what} {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=ConfigLoader)  # YAML is a superset of JSON: one parser for both
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BenchError(f"{what} {path} is not valid YAML/JSON{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BenchError(f"{what} {path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def merge_settings(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_settings(into[key], value)
        else:
            into[key] = value


def method_options(options_class: type, values: dict[str, Any], method: str) -> object:
    """The method's Options dataclass from the config's `options` mapping, validated."""
    if not dataclasses.is_dataclass(options_class):
        if values:
            raise BenchError(f"method {method} takes no options, got {', '.join(sorted(values))}")
        return options_class()
    options = _build(options_class, values, "options.")  # unknown keys, types, choices and ranges
    check = getattr(options, "validate", None)  # a rule across fields, where a method has one
    if check:
        check()
    return options


def check_organism_seed(config: RunConfig) -> None:
    """--organism-seed picks a pre-training of the embedded organism: a seed >= 0, and no --model."""
    if config.organism_seed is None:
        return
    if config.organism_seed < 0:
        raise BenchError(f"organism_seed must be >= 0, got {config.organism_seed}")
    if config.model is not None:
        raise BenchError("organism_seed picks one of the embedded organisms; it cannot be combined with --model")


def validate(config: RunConfig) -> None:
    """Range checks that a type cannot express, and the names of the method, backends and suite
    (harness/app/names.py: a misspelt name is refused before torch and the registries load)."""
    check_method(config.method)
    check_backend(config.backend)
    check_backend(config.rollout_backend, "rollout backend")
    check_suite(config.suite)
    config.organism.validate()
    config.vllm.validate()
    lora_settings(config)
    from plasticity_bench.harness.app.tracking import check_report_to

    check_report_to(config.report_to)
    for item in fields(config):  # _build already refuses nan/inf; here for a RunConfig built in code
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"setting {item.name} must be a finite number, got {value}")
    positive = {
        "steps": config.steps if config.steps is not None else 1,
        "lr": config.lr if config.lr is not None else 1.0,
        "batch_size": config.batch_size,
        "train_examples": config.train_examples,
        "grad_clip": config.grad_clip,
    }
    for name, value in positive.items():
        if value <= 0:
            raise BenchError(f"{name} must be positive, got {value}")
    if config.seed < 0:
        raise BenchError(f"seed must be >= 0, got {config.seed}")
    check_organism_seed(config)
    if config.weight_decay < 0:
        raise BenchError(f"weight_decay must be >= 0, got {config.weight_decay}")
    if config.checkpoint_every < 0:
        raise BenchError(f"checkpoint_every must be >= 0 (0 = only at stage ends), got {config.checkpoint_every}")
    if config.grad_accum < 1 or config.grad_accum > config.batch_size:
        raise BenchError(f"grad_accum must be between 1 and batch_size ({config.batch_size}), got {config.grad_accum}")
    check_processes(config)
    if config.keep_checkpoints not in KEEP_CHECKPOINTS:
        raise BenchError(
            f"keep_checkpoints must be one of {', '.join(KEEP_CHECKPOINTS)}, got {config.keep_checkpoints!r}"
        )
    if config.eval_per_slice is not None and config.eval_per_slice <= 0:
        raise BenchError(f"eval_per_slice must be positive, got {config.eval_per_slice}")
    for name in ("warmup_fraction", "min_lr_ratio"):
        if not 0 <= getattr(config, name) < 1:
            raise BenchError(f"{name} must be in [0, 1), got {getattr(config, name)}")
    from plasticity_bench.trainers.device import DEVICES  # imports every trainer (torch): after the cheap checks above

    if config.device not in DEVICES:
        raise BenchError(f"device must be one of {', '.join(DEVICES)}, got {config.device!r}")
    if config.model is not None:
        if not (Path(config.model) / "config.json").is_file():
            raise BenchError(f"model {config.model} is not a Hugging Face model folder (no config.json there)")
        from plasticity_bench.harness.backends.checkpoint import (
            check_model_folder,
        )  # imports every backend (torch, transformers)

        check_model_folder(Path(config.model))


def check_processes(config: RunConfig) -> None:
    """Every training process needs at least one row of each micro-batch; an accelerate config file must exist."""
    rows_needed = config.num_processes * config.grad_accum
    if config.num_processes > 1 and config.batch_size < rows_needed:
        raise BenchError(
            f"batch_size ({config.batch_size}) must be at least num_processes × grad_accum ({rows_needed}): "
            "every process trains on its own rows of each batch"
        )
    if config.accelerate_config is not None:
        if config.launcher != "accelerate":
            raise BenchError("accelerate_config is read by launcher accelerate only; add --launcher accelerate")
        if not Path(config.accelerate_config).is_file():
            raise BenchError(f"accelerate config file {config.accelerate_config} does not exist")
    if config.strategy != "ddp" or config.accelerate_config is not None:
        from plasticity_bench.harness.app.sharding import check_sharding  # DDP or FSDP configs; sharding needs N > 1

        check_sharding(config)
