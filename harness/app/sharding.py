"""Which training processes shard the model (FSDP2, trainers/fsdp.py), and how, from the run's
`strategy` and accelerate's own config file (docs/scale.md):

- `strategy: fsdp`: FSDP2; with an accelerate config of `distributed_type: FSDP`, its
  `fsdp_config` says how (FULL_SHARD / reshard_after_forward: true frees each layer's gathered
  weights after its forward pass, SHARD_GRAD_OP / false keeps them until its backward pass; which
  layer class is sharded one by one); without one, FULL_SHARD and the model's decoder layer.
- `strategy: zero3` / `zero2`: ZeRO-3's and ZeRO-2's sharding, trained by the same FSDP2: FULL_SHARD and
  SHARD_GRAD_OP.
- an accelerate config of `distributed_type: FSDP` with `strategy: ddp` (the default) means fsdp.
- an accelerate config of `distributed_type: DEEPSPEED` means DeepSpeed's own ZeRO (trainers/deepspeed_zero.py):
  its `deepspeed_config.zero_stage` 2 or 3 makes the run's strategy zero2 or zero3 (a strategy given as well
  must agree); bench's own settings keep deciding what they decide elsewhere (grad_accum, grad_clip,
  mixed_precision), so the file must not set them otherwise. DeepSpeed is an optional extra.

The accelerate config file is checked when the run's settings are (nothing starts for a bad one);
the training processes read what `accelerate launch` exported from it (FSDP_* variables). Methods
that sample their policy during training, L2-SP and LoRA are refused sharded (`check_sharded_training`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plasticity_bench.harness.core.errors import BenchError

if TYPE_CHECKING:
    from plasticity_bench.harness.app.config import RunConfig
    from plasticity_bench.trainers.distributed import Sharding

SHARDED = ("fsdp", "zero2", "zero3")
DEEPSPEED_INSTALL = "pip install 'plasticity-bench[deepspeed]'"
ZERO_RESHARD = {"zero3": True, "zero2": False}  # reshard_after_forward: FULL_SHARD, SHARD_GRAD_OP
# accelerate's FSDP1 sharding strategies in its numbering (accelerate.utils.constants.FSDP_SHARDING_STRATEGY)
FSDP1_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2")
FSDP1_RESHARD = {"FULL_SHARD": True, "SHARD_GRAD_OP": False}
WRAP_POLICIES = ("", "TRANSFORMER_BASED_WRAP")  # bench shards decoder layers; accelerate's default is this one
# methods whose policy samples during training: every process would run a different number of forward passes
# through the sharded model, whose every forward pass is a collective


def accelerate_kind(path: Path) -> tuple[str, dict[str, Any]]:
    """The accelerate config file's distributed_type and its fsdp_config mapping (keys without `fsdp_`)."""
    from plasticity_bench.harness.app.config import read_config_file

    values = read_config_file(path, "accelerate config file")
    fsdp = values.get("fsdp_config") or {}
    if not isinstance(fsdp, dict):
        raise BenchError(f"accelerate config {path}: fsdp_config must be a mapping")
    return str(values.get("distributed_type", "MULTI_GPU")), {k.removeprefix("fsdp_"): v for k, v in fsdp.items()}


def deepspeed_stage(path: Path, grad_clip: float) -> int:
    """The ZeRO stage an accelerate DEEPSPEED config asks for, with settings bench honours; one line otherwise."""
    from plasticity_bench.harness.app.config import read_config_file

    values = read_config_file(path, "accelerate config file")
    section = values.get("deepspeed_config") or {}
    where = f"accelerate config {path}: deepspeed_config."
    if not isinstance(section, dict):
        raise BenchError(f"accelerate config {path}: deepspeed_config must be a mapping")
    if "deepspeed_config_file" in section:
        raise BenchError(f"{where}deepspeed_config_file is not read by bench: give zero_stage in the accelerate config")
    stage = str(section.get("zero_stage", "")).strip()
    if stage not in ("2", "3"):
        raise BenchError(f"{where}zero_stage must be 2 or 3 (ZeRO-2 or ZeRO-3), got {stage or 'nothing'}")
    for key in ("offload_optimizer_device", "offload_param_device"):
        if str(section.get(key, "none")).strip().lower() not in ("none", ""):
            raise BenchError(f"{where}{key} must be none: bench does not offload to the CPU or NVMe")
    if str(section.get("zero3_init_flag", "false")).strip().lower() == "true":
        raise BenchError(
            f"{where}zero3_init_flag must be false: bench loads the model whole, then ZeRO-3 partitions it"
        )
    if str(section.get("gradient_accumulation_steps", "1")).strip() != "1":
        raise BenchError(f"{where}gradient_accumulation_steps must be 1: use bench's grad_accum setting")
    clip = section.get("gradient_clipping")
    if clip is not None and str(clip).strip().lower() != "none" and float(clip) != grad_clip:
        raise BenchError(
            f"{where}gradient_clipping {clip} is not the run's grad_clip {grad_clip:g}: set grad_clip instead"
        )
    if str(values.get("mixed_precision", "no")).strip().lower() not in ("no", "fp32"):
        raise BenchError(
            f"accelerate config {path}: mixed_precision must be 'no' with DeepSpeed: "
            "bench's own mixed_precision setting decides autocast"
        )
    if importlib.util.find_spec("deepspeed") is None:
        raise BenchError(f"accelerate config {path} asks for DeepSpeed, which is not installed: {DEEPSPEED_INSTALL}")
    return int(stage)


def check_accelerate_config(path: Path, strategy: str, grad_clip: float = 1.0) -> None:
    """MULTI_GPU (DDP: accelerate only starts the processes), FSDP or DEEPSPEED with settings bench honours;
    one line otherwise."""
    kind, fsdp = accelerate_kind(path)
    if kind == "DEEPSPEED":
        stage = deepspeed_stage(path, grad_clip)
        if strategy not in ("ddp", f"zero{stage}"):
            raise BenchError(
                f"accelerate config {path} asks for DeepSpeed ZeRO-{stage}, which sets the sharding itself: "
                f"use strategy: zero{stage} (or leave strategy out), not {strategy}"
            )
        return
    if kind == "FSDP":
        if strategy in ZERO_RESHARD:
            raise BenchError(
                f"accelerate config {path} asks for FSDP, which sets the sharding itself: use strategy: fsdp "
                f"(or leave strategy out), not {strategy}"
            )
        fsdp_settings(fsdp, f"accelerate config {path}: fsdp_")
        return
    if kind != "MULTI_GPU":
        raise BenchError(
            f"accelerate config {path} has distributed_type {kind}; bench starts its processes with MULTI_GPU "
            "(which also runs on CPUs: give no config file there)"
        )


def fsdp_settings(values: Mapping[str, Any], where: str, strategy: str = "fsdp") -> Sharding:
    """The sharding an accelerate `fsdp_config` (keys without the `fsdp_` prefix, as values or as the
    strings accelerate exports) asks for, with accelerate's defaults; one line for what bench does not do."""
    from plasticity_bench.trainers.distributed import Sharding

    def text(key: str, default: str) -> str:
        value = values.get(key)
        return default if value is None else str(value).strip()

    for key, instead in {
        "offload_params": "",
        "activation_checkpointing": " (use gradient_checkpointing: true)",
    }.items():
        if text(key, "false").lower() == "true":
            raise BenchError(f"{where}{key} is not supported by bench's FSDP training{instead}")
    if text("auto_wrap_policy", "").upper() not in WRAP_POLICIES:
        raise BenchError(f"{where}auto_wrap_policy must be TRANSFORMER_BASED_WRAP: bench shards each decoder layer")
    layers = tuple(name.strip() for name in text("transformer_layer_cls_to_wrap", "").split(",") if name.strip())
    return Sharding(reshard_after_forward(values, where), layers, strategy)


def reshard_after_forward(values: Mapping[str, Any], where: str) -> bool:
    """FSDP2's reshard_after_forward from fsdp_version 2's boolean, or version 1's sharding strategy."""
    version = str(values.get("version", "1")).strip()
    reshard = str(values.get("reshard_after_forward", "true")).strip().upper()
    if version == "2":
        if reshard not in ("TRUE", "FALSE"):
            raise BenchError(f"{where}reshard_after_forward must be true or false with fsdp_version 2, got {reshard}")
        return reshard == "TRUE"
    if version != "1":
        raise BenchError(f"{where}version must be 1 or 2, got {version}")
    # FSDP1: sharding_strategy, by name or accelerate's number; reshard_after_forward may name one instead
    named = reshard if reshard not in ("TRUE", "FALSE") else str(values.get("sharding_strategy", "FULL_SHARD"))
    named = named.strip().upper()
    if named.isdigit() and 1 <= int(named) <= len(FSDP1_STRATEGIES):
        named = FSDP1_STRATEGIES[int(named) - 1]
    if named not in FSDP1_RESHARD:
        raise BenchError(f"{where}sharding_strategy must be FULL_SHARD or SHARD_GRAD_OP for bench, got {named}")
    return FSDP1_RESHARD[named]


def check_sharding(config: RunConfig) -> None:
    """The run's strategy, accelerate config and number of processes agree (when its settings are checked)."""
    if config.sharding_engine == "deepspeed" and config.accelerate_config is None:
        raise BenchError(
            "sharding_engine deepspeed comes from an accelerate config of distributed_type DEEPSPEED: "
            "give one (--launcher accelerate --accelerate-config FILE), not the setting"
        )
    if config.accelerate_config is not None:
        check_accelerate_config(Path(config.accelerate_config), config.strategy, config.grad_clip)
    if sharded_strategy(config) in SHARDED and config.num_processes == 1:
        raise BenchError(
            f"strategy {sharded_strategy(config)} shards the model over the training processes: "
            "give num_processes (--num-processes) of 2 or more, or strategy: ddp"
        )


def sharded_strategy(config: RunConfig) -> str:
    """The strategy the run trains with: an accelerate config asking for FSDP turns the default ddp into fsdp,
    one asking for DeepSpeed into zero2 or zero3 (its ZeRO stage)."""
    if config.strategy == "ddp" and config.accelerate_config is not None and config.launcher == "accelerate":
        path = Path(config.accelerate_config)
        kind = accelerate_kind(path)[0]
        if kind == "FSDP":
            return "fsdp"
        if kind == "DEEPSPEED":
            return f"zero{deepspeed_stage(path, config.grad_clip)}"
    return config.strategy


def with_sharded_strategy(config: RunConfig) -> RunConfig:
    """`config` with the strategy it trains with and who shards (run.json and the fingerprint then say so)."""
    path = Path(config.accelerate_config) if config.accelerate_config is not None else None
    deepspeed = path is not None and config.launcher == "accelerate" and accelerate_kind(path)[0] == "DEEPSPEED"
    return replace(config, strategy=sharded_strategy(config), sharding_engine="deepspeed" if deepspeed else "fsdp2")


def check_sharded_training(config: RunConfig) -> None:
    """What sharded training cannot do here, refused before the training processes start (one line)."""
    if config.strategy not in SHARDED or config.num_processes == 1:
        return
    if config.lora is not None:
        raise BenchError(
            f"strategy {config.strategy} does not train LoRA adapters here: the adapters are small, "
            "train them data parallel with strategy: ddp"
        )
    if config.method == "pcr":
        raise BenchError(
            f"pcr's conflict resolution projects whole per-block gradients, which strategy {config.strategy} "
            "splits over the processes (not built yet); use strategy: ddp"
        )
    if config.method == "l2sp":
        raise BenchError(
            f"l2sp's pull towards the starting weights is not built for strategy {config.strategy} yet "
            "(its θ₀ is whole, the weights are sharded); use strategy: ddp"
        )


def can_shard(config: RunConfig) -> bool:
    """Whether this run could train sharded on several processes (what the memory check may suggest)."""
    try:
        check_sharded_training(replace(config, strategy="zero3", num_processes=max(2, config.num_processes)))
    except BenchError:
        return False
    return True


def sharding_from_environment(strategy: str, environ: Mapping[str, str]) -> Sharding | None:
    """In a training process: the sharding its run asks for, reading what `accelerate launch` exported
    from an FSDP config (ACCELERATE_USE_FSDP, FSDP_*); None for data parallel with whole models."""
    from plasticity_bench.trainers.distributed import Sharding

    if environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":  # checked with the run's settings
        stage = int(environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0"))
        return Sharding(strategy=f"zero{stage}", engine="deepspeed", zero_stage=stage)
    if environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        exported = {
            key.removeprefix("FSDP_").lower(): value for key, value in environ.items() if key.startswith("FSDP_")
        }
        if "transformer_cls_to_wrap" in exported:  # the config file's fsdp_transformer_layer_cls_to_wrap, exported
            exported["transformer_layer_cls_to_wrap"] = exported.pop("transformer_cls_to_wrap")
        return fsdp_settings(exported, "FSDP_", strategy)
    if strategy in ZERO_RESHARD:
        return Sharding(ZERO_RESHARD[strategy], (), strategy)
    return Sharding(True, (), strategy) if strategy == "fsdp" else None
