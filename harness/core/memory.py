"""The device memory one training process needs, from plain numbers (the app reads the model's
shape, the method and the settings: harness/app/memory.py). docs/gpu-recipes.md explains it.

Per process, in bytes (e = bytes per element of the weights' dtype: 4 fp32, 2 bf16):

    weights      P·e                            (÷N under zero3/fsdp)
    gradients    T·e                            (÷N under zero2, zero3, fsdp)
    optimizer    2·T·e   AdamW's two moments, in the weights' dtype (÷N under zero2, zero3, fsdp)
    reference    R·e     frozen copies kept whole on every process (never sharded): the whole model
                         (π_ref) or the trained parameters (L2-SP's θ₀), and, for a method that samples
                         while training on weights sharded at rest, the policy's whole copy that samples
                         (trainers/sharded.py)
    method       M·T·e   what a method keeps per trained parameter (PCR's gradient moments)
    activations  the bound below, for one micro-batch of this process

Under zero3/fsdp on N > 1 processes every process first holds the whole model, P·e, once: it loads it
whole and the method's setup runs on it before `fully_shard` (trainers/fsdp.py). The check takes the
larger of that and the sum above ("whole before sharding" in `--dry-run`'s table).

P: all parameters, T: trained ones (all, or LoRA's adapters), N: processes. The parameters are
never cast: a model trains in the dtype its folder holds, so full fp32 training costs 16 bytes
a parameter and bf16 8 (no fp32 master copy: bf16 AdamW updates below 2⁻⁸ of a weight are lost).

Activation bound, per token and decoder layer, the tensors autograd keeps for the backward of a
Qwen3/Llama-style layer (the two RMSNorms, q/k/v and their head norms, rotary embeddings, the
attention output, the SwiGLU MLP):

    ACT_HIDDEN·h + ACT_MLP·i + ACT_ATTENTION·a·s     elements of `activation_bytes` each

plus LOGITS_KEPT·V float32 logits per token (the logits, their log-softmax and its gradient).
The a·s term (one attention matrix a sequence, per layer) counts only for eager attention: the
fused kernels transformers uses by default (sdpa: flash / memory-efficient attention on a GPU)
keep no s×s matrix, only O(s) statistics (on a CPU, sdpa's fallback may build the matrix and free
it after the forward; BENCHMARKS §17 measures the organism's peak).

With gradient checkpointing (`gradient_checkpointing: true`: transformers checkpoints each decoder
layer) the backward keeps each layer's input, h elements a token a layer, and recomputes one layer
at a time, so the bound becomes h·L + (one layer's terms above) elements a token, plus the logits.
Nothing is counted for the allocator's fragmentation, CUDA's own context (~0.5–1 GB a GPU), or a
rollout engine beside the trainer (vLLM keeps its own share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from plasticity_bench.harness.core.errors import BenchError

STRATEGIES = ("ddp", "zero2", "zero3", "fsdp")  # fsdp: FULL_SHARD, sharded like zero3


def sharded_at_rest(strategy: str, engine: str) -> bool:
    """Whether a strategy leaves the weights split over the processes between steps: FSDP2's always (its zero2
    gathers them from a forward to its backward only), DeepSpeed's only at ZeRO-3 (ZeRO-2 keeps them whole)."""
    return strategy in ("fsdp", "zero2", "zero3") and (engine != "deepspeed" or strategy == "zero3")


ACT_HIDDEN = 17  # 2+2 (norms) + 1 (q) + 2 (q norm) + 1 (rotary) + 2 (k, v repeated for GQA) + 2 (attention out) +
# up to 5 more for k and v themselves, their norm and rotary (each kv_heads·head_dim ≤ h)
ACT_MLP = 4  # gate, silu(gate), up, silu(gate)·up
ACT_ATTENTION = 1  # the softmax's output, a×s per token
LOGITS_KEPT = 3
GB = 1e9
MB = 1e6


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a decoder-only transformer."""

    parameters: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    vocab_size: int
    weight_bytes: int  # bytes per element of the weights as loaded: 4 (float32), 2 (bfloat16/float16)
    eager_attention: bool = False  # the s×s attention matrix kept (eager); False: a fused kernel (sdpa, flash)


@dataclass(frozen=True)
class Workload:
    """One training process's share of the run."""

    trained: int  # parameters that get gradients and optimizer state
    reference: int  # parameters of a frozen copy kept in memory (0: none)
    method_copies: float  # extra tensors the size of the trained parameters (PCR's moments: 4)
    examples: int  # examples in the largest micro-batch of the whole run (all processes together)
    seq_len: int  # the longest sequence assumed (tokens)
    activation_bytes: int  # bytes per element of the activations (2 under bf16 autocast or bf16 weights)
    per_example: int = 1  # sequences in one example: 2 for a preference pair (never split between processes)
    strategy: str = "ddp"
    processes: int = 1
    checkpointing: bool = False  # gradient checkpointing: each layer's input kept, one layer recomputed at a time
    samples_while_training: bool = False  # GRPO, online DPO: sharded at rest, a whole copy samples
    engine: str = "fsdp2"  # who shards: fsdp2 or deepspeed (its ZeRO-2 keeps the weights whole)


@dataclass(frozen=True)
class Estimate:
    weights: float
    gradients: float
    optimizer: float
    reference: float
    method: float
    activations: float
    device: float  # the device's memory, bytes
    # sharded (zero3/fsdp): every process holds the whole model once before sharding it (the method's setup
    # runs on it, trainers/fsdp.py), so the peak is at least this; 0 when the weights are not sharded
    whole_before_sharding: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.reference + self.method + self.activations

    @property
    def peak(self) -> float:
        return max(self.total, self.whole_before_sharding)

    @property
    def fits(self) -> bool:
        return self.peak <= self.device

    def rows(self) -> list[tuple[str, float]]:
        parts = ("weights", "gradients", "optimizer", "reference", "method", "activations")
        rows = [*((name, getattr(self, name)) for name in parts), ("total per process", self.total)]
        return rows + ([("whole before sharding", self.whole_before_sharding)] if self.whole_before_sharding else [])


def activation_bytes(shape: Shape, sequences: int, seq_len: int, element: int, checkpointing: bool = False) -> float:
    """The stated bound on what one micro-batch of `sequences` × `seq_len` tokens keeps for backward."""
    tokens = sequences * seq_len
    per_layer = ACT_HIDDEN * shape.hidden_size + ACT_MLP * shape.intermediate_size
    if shape.eager_attention:
        per_layer += ACT_ATTENTION * shape.num_heads * seq_len
    kept = shape.num_layers * shape.hidden_size + per_layer if checkpointing else shape.num_layers * per_layer
    return tokens * (kept * element + LOGITS_KEPT * shape.vocab_size * 4)


def estimate(shape: Shape, work: Workload, device_bytes: float) -> Estimate:
    """Bytes per process for `work` on a model of `shape` (the module docstring has the formulas)."""
    if work.strategy not in STRATEGIES:
        raise BenchError(f"strategy must be one of {', '.join(STRATEGIES)}, got {work.strategy!r}")
    n = work.processes
    shard_all = work.strategy in ("zero3", "fsdp")
    shard_state = 1 if work.strategy == "ddp" else n  # zero2 shards gradients and optimizer state
    e = shape.weight_bytes
    per_process = work.per_example * math.ceil(work.examples / n)  # data parallel: the micro-batch's examples split
    return Estimate(
        weights=shape.parameters * e / (n if shard_all else 1),
        gradients=work.trained * e / shard_state,
        optimizer=2 * work.trained * e / shard_state,
        reference=(work.reference + sampling_copy(shape, work)) * e,  # made whole before sharding, kept whole
        method=work.method_copies * work.trained * e,
        activations=activation_bytes(shape, per_process, work.seq_len, work.activation_bytes, work.checkpointing),
        device=device_bytes,
        whole_before_sharding=shape.parameters * e if shard_all and n > 1 else 0.0,
    )


def sampling_copy(shape: Shape, work: Workload) -> int:
    """Parameters of the whole copy of the policy that samples while the weights are sharded (trainers/sharded.py)."""
    sharded = work.processes > 1 and sharded_at_rest(work.strategy, work.engine)
    return shape.parameters if work.samples_while_training and sharded else 0


def shown(size: float) -> str:
    """A size in words: `86.8 GB`, `286 MB` (the organism's parts are megabytes)."""
    return f"{size / GB:.1f} GB" if size >= GB else f"{size / MB:,.0f} MB"


def table(found: Estimate, work: Workload) -> list[str]:
    """The estimate as aligned lines, for `bench run --dry-run`."""
    head = f"memory per process ({work.strategy}, {work.processes} process{'es' if work.processes > 1 else ''})"
    unit, scale = ("GB", GB) if found.total >= GB else ("MB", MB)  # the organism's parts are megabytes
    width = max(18, *(len(name) for name, _ in found.rows()))  # "whole before sharding" widens it
    lines = [head] + [f"  {name:<{width}} {size / scale:>10,.2f} {unit}" for name, size in found.rows()]
    verdict = "fits" if found.fits else "does not fit"
    return [*lines, f"  {'device memory':<{width}} {found.device / scale:>10,.2f} {unit}  ({verdict})"]


def alternatives(
    shape: Shape, work: Workload, device_bytes: float, lora: Workload | None, can_shard: bool = True
) -> list[str]:
    """What would fit on this device, cheapest change first: LoRA (`lora`: this work with LoRA's
    default adapters; None when the run already uses LoRA), gradient checkpointing, zero3 on these
    processes, the fewest processes under zero3 (up to 64; only where the run `can_shard`), the
    smallest micro-batch (one example a process)."""

    def total(changed: Workload) -> float | None:
        found = estimate(shape, changed, device_bytes)
        return found.peak if found.fits else None

    candidates: list[tuple[str, Workload]] = []
    if lora is not None:
        candidates.append(("LoRA (lora: {r: 8})", lora))
    if not work.checkpointing:
        candidates.append(("gradient_checkpointing: true", replace(work, checkpointing=True)))
    sharded = replace(work, strategy="zero3")
    if can_shard and work.strategy not in ("zero3", "fsdp") and work.processes > 1:
        candidates.append(("strategy: zero3", sharded))
    more = (
        None
        if not can_shard or total(sharded)
        else next((n for n in range(work.processes + 1, 65) if total(replace(sharded, processes=n))), None)
    )
    if more:
        candidates.append((f"strategy: zero3 with num_processes: {more}", replace(sharded, processes=more)))
    if work.examples > work.processes:
        candidates.append(
            ("one example per micro-batch and process (grad_accum)", replace(work, examples=work.processes))
        )
    return [f"{name} ({shown(size)})" for name, changed in candidates if (size := total(changed)) is not None]


def check(shape: Shape, work: Workload, device_bytes: float, lora: Workload | None, can_shard: bool = True) -> Estimate:
    """The estimate; BenchError (one line) naming what would fit when it exceeds the device."""
    found = estimate(shape, work, device_bytes)
    if found.fits:
        return found
    options = alternatives(shape, work, device_bytes, lora, can_shard)
    advice = (
        "would fit: " + "; ".join(options)
        if options
        else "nothing simple fits: shorter sequences (seq_len_bound) or a smaller model"
    )
    loading = (
        f", and {shown(found.whole_before_sharding)} while it holds the whole model before sharding it"
        if found.whole_before_sharding > found.total
        else ""
    )
    raise BenchError(
        f"this run needs about {shown(found.total)} of device memory per process{loading} and the device has "
        f"{shown(device_bytes)} (weights {shown(found.weights)}, gradients {shown(found.gradients)}, "
        f"optimizer {shown(found.optimizer)}, reference {shown(found.reference)}, activations "
        f"{shown(found.activations)}); {advice}; `bench run --dry-run` shows the estimate"
    )
