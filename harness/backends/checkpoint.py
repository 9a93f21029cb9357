"""Checks on a model folder before a backend loads it, so bad input fails with one clear line.

Why here and not in each backend: transformers fills missing tensors with random values (a
warning, not an error) and vLLM's in-place weight reload keeps the previous checkpoint's tensors
for anything the new file lacks (also only a warning). Both would score the wrong model
silently, so every checkpoint is compared with a reference (the run's first checkpoint) first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from safetensors import safe_open

from plasticity_bench.harness.core.errors import BenchError

TensorShapes = dict[str, tuple[int, ...]]

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


def read_model_config(model_dir: Path) -> dict:
    """config.json of a Hugging Face model folder; BenchError if absent or unreadable."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise BenchError(f"model folder {model_dir} has no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BenchError(f"{path} is not valid JSON (line {error.lineno}); the checkpoint is corrupt") from None
    except UnicodeDecodeError:
        raise BenchError(f"{path} is not text (not UTF-8); the checkpoint is corrupt") from None
    if not isinstance(config, dict):
        raise BenchError(
            f"{path} holds a JSON {type(config).__name__}, not a model configuration; the checkpoint is corrupt"
        )
    return config


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_folder(model_dir: Path) -> None:
    """BenchError unless `model_dir` looks loadable: a JSON config naming its model_type, a
    tokenizer and complete weights (safetensors headers are read; no tensor is loaded)."""
    config = read_model_config(model_dir)
    if not isinstance(config.get("model_type"), str):
        raise BenchError(
            f"{Path(model_dir) / 'config.json'} names no model_type; not a Hugging Face model configuration"
        )
    if not any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES):
        raise BenchError(
            f"model folder {model_dir} has no tokenizer ({', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer next to the model"
        )
    read_tensor_shapes(model_dir)


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files holding the model's weights (one file, or the shards of an index)."""
    model_dir = Path(model_dir)
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE]
    index = model_dir / SHARD_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError):
            raise BenchError(f"{index} is not a valid safetensors index; the checkpoint is corrupt") from None
        missing = [name for name in shards if not (model_dir / name).is_file()]
        if missing:
            raise BenchError(f"checkpoint {model_dir} lacks weight shard {missing[0]} listed in {SHARD_INDEX}")
        return [model_dir / name for name in shards]
    raise BenchError(f"checkpoint {model_dir} has no weights ({SINGLE_FILE} or {SHARD_INDEX} missing)")


def read_tensor_shapes(model_dir: Path) -> TensorShapes:
    """Name → shape of every stored tensor, from the safetensors headers (no tensor data is read).

    safetensors checks that the header covers the file exactly, so a truncated or overwritten
    file is caught here.
    """
    read_model_config(model_dir)
    shapes: TensorShapes = {}
    for path in weight_files(model_dir):
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except Exception as error:  # safetensors raises its own error type, varying by version
            raise BenchError(f"weights file {path} is corrupt or truncated ({str(error).splitlines()[0]})") from None
    return shapes


def check_same_tensors(model_dir: Path, reference: TensorShapes, reference_dir: Path) -> None:
    """BenchError unless `model_dir` stores exactly the reference's tensors with the same shapes."""
    shapes = read_tensor_shapes(model_dir)
    missing = sorted(set(reference) - set(shapes))
    if missing:
        raise BenchError(
            f"checkpoint {model_dir} lacks {len(missing)} tensor(s) that {reference_dir} has, e.g. {missing[0]}"
        )
    extra = sorted(set(shapes) - set(reference))
    if extra:
        raise BenchError(f"checkpoint {model_dir} has tensor(s) that {reference_dir} lacks, e.g. {extra[0]}")
    for name, shape in reference.items():
        if shapes[name] != shape:
            raise BenchError(
                f"checkpoint {model_dir}: tensor {name} has shape {list(shapes[name])}, "
                f"{reference_dir} has {list(shape)}"
            )


def context_length(config: dict) -> int | None:
    """The longest sequence (prompt + completion) the model's positions allow; None if unstated."""
    text_config = config.get("text_config", config)  # multimodal configs nest the language model's
    value = text_config.get("max_position_embeddings")
    return int(value) if value else None


def check_prompts_fit(prompt_lengths: Sequence[int], max_new_tokens: int, limit: int | None, what: str) -> None:
    """BenchError if the longest prompt plus `max_new_tokens` exceeds the model's context.

    A too-long request would otherwise be cut short (vLLM stops at the context end) or run past
    the trained positions (transformers), and the two backends would disagree without a word.
    """
    if limit is None or not prompt_lengths:
        return
    longest = max(prompt_lengths)
    if longest + max_new_tokens > limit:
        raise BenchError(
            f"{what}: the longest prompt has {longest} tokens and {max_new_tokens} more are generated, "
            f"but the model's context is {limit} tokens (max_position_embeddings); use a model with a longer context"
        )


def count_parameters(model_dir: Path) -> int:
    """Number of weights stored in the folder's safetensors files (headers only, nothing loaded)."""
    return sum(math.prod(shape) for shape in read_tensor_shapes(model_dir).values())
