"""Turn the paths a user gives `bench eval` into an ordered sweep of loadable model folders.

The checkpoints may come from any trainer. Recognised inputs, per path:

* a **training output folder**: it holds `checkpoint-N` subfolders (transformers' `Trainer`, TRL,
  and the trainers built on them). Every checkpoint becomes a point; its step is `global_step`
  from its `trainer_state.json` (which must agree with N), or N when that file is missing.
  The final model that `Trainer.save_model()` writes into the folder itself is **not** included
  by default: its step is recorded nowhere, and with `save_strategy="steps"` the Trainer also
  saves a checkpoint at the last step, so it is normally a duplicate (with
  `load_best_model_at_end` it is the best checkpoint, not the last). It is included only when
  `steps` gives this path a step that no checkpoint in it has (see `steps` below).
* a **`checkpoint-N` folder** itself: one point, its step found as above.
* a **plain model folder** (config.json + weights) or a **LoRA adapter folder**
  (adapter_config.json + adapter weights): one point; its step comes from `steps`, else from a
  `trainer_state.json` in it, else a BenchError asks for `--steps`.

`steps`, when given, has exactly one entry per path, in order, strictly increasing (the rule and
why: harness/app/steps.py): the step of the model stored
directly in that path. For a folder whose step is recorded (`checkpoint-N`, trainer_state.json)
the entry must agree with the record. For a training output folder it is the step of its own
top-level model: if one of its checkpoints has that step the checkpoint is used and nothing is
added (so give the last checkpoint's step to add nothing), otherwise the top-level model is
added at that step.

`base_model`, the starting model, becomes step 0 unless a point already has step 0 (the
forgetting curve needs the start), and it is the model LoRA adapters are merged onto. With no
step 0 and no `base_model`, the smallest step is the start, and a warning says so.

LoRA adapters (also the `checkpoint-N` folders of a peft Trainer run, which hold adapters) are
merged onto their base with peft (`PeftModel.from_pretrained(base, adapter).merge_and_unload()`),
one at a time, and saved with a tokenizer (the adapter folder's, else the base's) to
`work_dir/merged/step-NNNNNN`. A merged folder is reused when its `merge.json` shows the same
adapter and base files. A full-model checkpoint without a tokenizer (a Trainer given no
`processing_class`) is presented as `work_dir/linked/step-NNNNNN`: links to its files plus the
tokenizer of the training output folder or of `base_model`.

Everything is checked before any model is loaded: missing paths, folders without weights,
duplicate steps, checkpoints of different architectures (config.json) or with different stored
tensors (safetensors headers), adapters whose base model is not on this machine. Each failure is one
BenchError line naming the path.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticity_bench.harness.app.steps import check_steps
from plasticity_bench.harness.backends.checkpoint import (
    SHARD_INDEX,
    SINGLE_FILE,
    check_same_tensors,
    read_model_config,
    read_tensor_shapes,
)
from plasticity_bench.harness.core.errors import BenchError, warn
from plasticity_bench.harness.store import checkpoint_name, write_folder_atomic

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# any of these makes a folder's tokenizer loadable by AutoTokenizer
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tokenizer_config.json",
)
MERGE_RECORD = "merge.json"
MERGE_RECORD_VERSION = 1

# config.json fields that define the architecture; dtype, _name_or_path, transformers_version,
# generation settings and the like may differ between checkpoints of one sweep.
ARCHITECTURE_FIELDS = (
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "intermediate_size",
    "head_dim",
)


@dataclass(frozen=True)
class SweepPoint:
    step: int
    model_dir: Path  # a loadable Hugging Face model folder: weights + config + tokenizer
    source: Path  # what the user gave (a training output folder, a checkpoint, a model or adapter folder)
    kind: str  # "model" | "lora"


@dataclass(frozen=True)
class _Found:
    """A model or adapter folder found on disk, before merging or linking."""

    step: int
    folder: Path
    source: Path
    kind: str  # "model" | "lora"
    training_dir: Path | None = None  # the training output folder it sits in, if any


# ---------------------------------------------------------------- what a folder holds


def has_model_weights(folder: Path) -> bool:
    """Full-model weights: safetensors files (other than an adapter's) or pytorch_model*.bin."""
    if any(path.name not in ADAPTER_WEIGHTS for path in folder.glob("*.safetensors")):
        return True
    return any(folder.glob("pytorch_model*.bin"))


def is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _no_weights(folder: Path, what: str) -> BenchError:
    hint = ""
    if any(folder.glob("global_step*")):
        hint = (
            "; it holds DeepSpeed ZeRO shards (global_step*/): "
            "consolidate them with the zero_to_fp32.py script saved next to them"
        )
    elif any(folder.glob("pytorch_model_fsdp*")):
        hint = "; it holds FSDP shards: consolidate them with `accelerate merge-weights`"
    return BenchError(
        f"{what} {folder} has no weights (no *.safetensors, pytorch_model*.bin or {ADAPTER_WEIGHTS[0]}){hint}"
    )


def _check_model_folder(folder: Path, what: str) -> str:
    """BenchError unless `folder` holds a full model or a LoRA adapter with weights; returns the kind."""
    if is_adapter(folder):
        if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
            raise _no_weights(folder, what)
        return "lora"
    if not has_model_weights(folder):
        raise _no_weights(folder, what)
    read_model_config(folder)  # BenchError if config.json is missing or corrupt
    return "model"


def _checkpoint_subfolders(folder: Path) -> list[Path]:
    return [child for child in folder.iterdir() if child.is_dir() and CHECKPOINT_DIR.fullmatch(child.name)]


def _recorded_step(folder: Path) -> int | None:
    """The step recorded for a folder: trainer_state.json's global_step, else N of `checkpoint-N`."""
    match = CHECKPOINT_DIR.fullmatch(folder.name)
    named = int(match.group(1)) if match else None
    state_file = folder / TRAINER_STATE
    if not state_file.is_file():
        return named
    try:
        global_step = json.loads(state_file.read_text())["global_step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BenchError(
            f"{state_file} is not a valid trainer state (no global_step); the checkpoint is corrupt"
        ) from None
    if not isinstance(global_step, int) or global_step < 0:
        raise BenchError(f"{state_file}: global_step is {global_step!r}, not a step number")
    if named is not None and global_step != named:
        raise BenchError(
            f"checkpoint {folder} is named step {named} but its {TRAINER_STATE} says global_step {global_step}"
        )
    return global_step


# ---------------------------------------------------------------- discovery


def _points_in(path: Path, given_step: int | None) -> list[_Found]:
    """The points one user path contributes (nothing loaded yet)."""
    if not path.exists():
        raise BenchError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        raise BenchError(f"checkpoint path {path} is a file; give the model folder that holds it")
    checkpoints = _checkpoint_subfolders(path)
    if checkpoints:
        found = []
        for folder in checkpoints:
            kind = _check_model_folder(folder, "checkpoint")
            step = _recorded_step(folder)
            assert step is not None  # named checkpoint-N
            found.append(_Found(step, folder, path, kind, training_dir=path))
        if given_step is not None and given_step not in {point.step for point in found}:
            # the folder's own (final) model, which the user placed at `given_step`
            if not (has_model_weights(path) or is_adapter(path)):
                raise BenchError(
                    f"--steps gives training output folder {path} step {given_step}, but it holds no model of its "
                    f"own and none of its checkpoints has that step (it has {sorted(point.step for point in found)})"
                )
            recorded = _recorded_step(path)
            if recorded is not None and recorded != given_step:
                raise BenchError(
                    f"--steps gives {path} step {given_step} but its {TRAINER_STATE} says global_step {recorded}"
                )
            found.append(_Found(given_step, path, path, _check_model_folder(path, "model folder"), training_dir=path))
        return found
    if not (has_model_weights(path) or is_adapter(path) or (path / "config.json").is_file()):
        raise BenchError(
            f"{path} is neither a model folder (config.json + weights, or a LoRA {ADAPTER_CONFIG}) "
            "nor a training output folder (checkpoint-N subfolders)"
        )
    what = "checkpoint" if CHECKPOINT_DIR.fullmatch(path.name) else "model folder"
    kind = _check_model_folder(path, what)
    recorded = _recorded_step(path)
    if given_step is not None and recorded is not None and given_step != recorded:
        raise BenchError(f"--steps gives {path} step {given_step} but its recorded step is {recorded}")
    step = given_step if given_step is not None else recorded
    if step is None:
        raise BenchError(
            f"{path} holds a model but no training step (no {TRAINER_STATE}, not named checkpoint-N); "
            "pass --steps with one step per path"
        )
    training_dir = path.parent if CHECKPOINT_DIR.fullmatch(path.name) else None
    return [_Found(step, path, path, kind, training_dir=training_dir)]


def _resolve_base(name: str | None, adapter: Path) -> Path:
    """The local folder of the base model an adapter's config names (a path, or a hub id in the local cache)."""
    how = "pass the base model's folder with --base"
    if not name:
        raise BenchError(
            f"LoRA adapter {adapter} names no base model (base_model_name_or_path is empty in {ADAPTER_CONFIG}); {how}"
        )
    candidate = Path(name).expanduser()
    if not candidate.is_absolute() and not candidate.exists():
        candidate = adapter / candidate  # a path relative to the adapter folder
    if candidate.is_dir():
        return candidate
    try:  # a hub id already in the local Hugging Face cache (nothing is downloaded)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        pass
    raise BenchError(
        f"LoRA adapter {adapter}: its base model {name!r} ({ADAPTER_CONFIG} base_model_name_or_path) "
        f"is neither a folder on this machine nor in the local Hugging Face cache, and nothing can be downloaded; {how}"
    )


def _adapter_base(adapter: Path, base_model: Path | None) -> Path:
    if base_model is not None:
        return base_model
    try:
        name = json.loads((adapter / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as error:
        raise BenchError(
            f"{adapter / ADAPTER_CONFIG} is not valid JSON (line {error.lineno}); the adapter is corrupt"
        ) from None
    base = _resolve_base(name, adapter)
    if not has_model_weights(base):
        raise _no_weights(base, f"base model of LoRA adapter {adapter},")
    return base


def architecture(config: dict) -> dict[str, Any]:
    """The config.json fields that define the architecture (a multimodal config's text_config fills gaps)."""
    text_config = config.get("text_config") or {}
    return {field: config.get(field, text_config.get(field)) for field in ARCHITECTURE_FIELDS}


def _check_same_architecture(configs: Sequence[tuple[Path, dict]]) -> None:
    reference_dir, reference = configs[0][0], architecture(configs[0][1])
    for folder, config in configs[1:]:
        fields = architecture(config)
        for field in ARCHITECTURE_FIELDS:
            if fields[field] != reference[field]:
                raise BenchError(
                    f"checkpoints of different architectures in one sweep: {folder} has {field}={fields[field]!r}, "
                    f"{reference_dir} has {reference[field]!r}"
                )


def _check_same_tensor_names(folders: Sequence[Path]) -> None:
    """Same tensors with the same shapes in every safetensors model (headers only; .bin folders are skipped).

    Same config.json but different tensors happens (tied vs untied embeddings, a truncated file)
    and would load with random or stale weights without an error.
    """
    readable = [folder for folder in folders if _has_safetensors(folder)]
    if len(readable) < 2:
        return
    reference = read_tensor_shapes(readable[0])
    for folder in readable[1:]:
        check_same_tensors(folder, reference, readable[0])


def _has_safetensors(folder: Path) -> bool:
    """Weights that read_tensor_shapes can read: model.safetensors or a sharded safetensors index."""
    return (folder / SINGLE_FILE).is_file() or (folder / SHARD_INDEX).is_file()


def discover_sweep(
    paths: Sequence[Path],
    steps: Sequence[int] | None = None,
    base_model: Path | None = None,
    *,
    work_dir: Path,
) -> list[SweepPoint]:
    """The sweep the paths describe, sorted by step, one point per step (see the module docstring).

    LoRA adapters are merged (one at a time) into `work_dir/merged/`; nothing else is written
    except links for checkpoints that lack a tokenizer (`work_dir/linked/`).
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise BenchError("no checkpoints given: pass a training output folder, checkpoint folders or model folders")
    if steps is not None:
        check_steps(steps, paths)
    if base_model is not None:
        base_model = _checked_base_model(Path(base_model))
    by_step = _points_by_step(paths, steps, base_model)
    bases, tokenizers = _check_loadable(by_step, base_model)
    _say_where_the_start_is(by_step, base_model)  # once every check has passed: a refused sweep says only why
    return _sweep_points(by_step, bases, tokenizers, Path(work_dir))


def _checked_base_model(base_model: Path) -> Path:
    """`--base`: BenchError unless it is a model folder with weights and a readable config.json."""
    if not base_model.exists():
        raise BenchError(f"base model {base_model} does not exist")
    if not base_model.is_dir() or not has_model_weights(base_model):
        raise BenchError(
            f"base model {base_model} is not a model folder with weights "
            "(config.json + *.safetensors or pytorch_model*.bin)"
        )
    read_model_config(base_model)
    return base_model


def _points_by_step(paths: Sequence[Path], steps: Sequence[int] | None, base_model: Path | None) -> dict[int, _Found]:
    """Every path's points, keyed by step (each step once), with `--base` at step 0 unless a path has it."""
    found: list[_Found] = []
    for index, path in enumerate(paths):
        found.extend(_points_in(path, steps[index] if steps is not None else None))
    by_step: dict[int, _Found] = {}
    for point in found:
        if point.step in by_step:
            other = by_step[point.step]
            raise BenchError(
                f"duplicate step {point.step} in the sweep: {other.folder} and {point.folder}; "
                "each step may appear once"
            )
        by_step[point.step] = point
    if base_model is not None and 0 not in by_step:
        by_step[0] = _Found(0, base_model, base_model, "model")
    return by_step


def _check_loadable(by_step: dict[int, _Found], base_model: Path | None) -> tuple[dict[int, Path], dict[int, Path]]:
    """Fail fast, before loading anything: every adapter's base exists, every model has a tokenizer,
    all share one architecture. Returns each adapter's base and each full model's tokenizer folder."""
    bases = {point.step: _adapter_base(point.folder, base_model) for point in by_step.values() if point.kind == "lora"}
    for step, base in bases.items():
        if not (has_tokenizer(by_step[step].folder) or has_tokenizer(base)):
            raise BenchError(
                f"neither LoRA adapter {by_step[step].folder} nor its base model {base} has a tokenizer; "
                "pass a base model with one via --base"
            )
    tokenizers = {
        point.step: _tokenizer_source(point, base_model) for point in by_step.values() if point.kind == "model"
    }
    configs = [
        (bases.get(step, point.folder), read_model_config(bases.get(step, point.folder)))
        for step, point in sorted(by_step.items())
    ]
    _check_same_architecture(configs)
    _check_same_tensor_names(list(dict.fromkeys(folder for folder, _ in configs)))
    return bases, tokenizers


def _sweep_points(
    by_step: dict[int, _Found], bases: dict[int, Path], tokenizers: dict[int, Path], work_dir: Path
) -> list[SweepPoint]:
    """The loadable folder of each point, in step order: adapters merged, tokenizer-less checkpoints linked."""
    sweep = []
    for step, point in sorted(by_step.items()):
        if point.kind == "lora":
            model_dir = merge_adapter(point.folder, bases[step], work_dir / "merged" / checkpoint_name(step))
        elif tokenizers[step] != point.folder:
            model_dir = _link_with_tokenizer(
                point.folder, tokenizers[step], work_dir / "linked" / checkpoint_name(step)
            )
        else:
            model_dir = point.folder
        sweep.append(SweepPoint(step=step, model_dir=model_dir, source=point.source, kind=point.kind))
    return sweep


# ---------------------------------------------------------------- tokenizers


def _say_where_the_start_is(by_step: dict[int, _Found], base_model: Path | None) -> None:
    """A warning where the start of every change is not what the command line suggests."""
    if 0 not in by_step:
        # Not an error: a window of late checkpoints, measured from its first, is a fair question. But every
        # "change" and "gain" in the report is then relative to that checkpoint, which the user must know.
        first = by_step[min(by_step)]
        warn(
            f"the sweep has no step 0 and no --base: step {first.step} ({first.folder}) is the start every change "
            "is measured from; to measure from the starting model, include it at step 0 (bench eval: --base MODEL; "
            "bench wise-ft: α = 0)"
        )
    elif base_model is not None and Path(by_step[0].folder).resolve() != base_model.resolve():
        # --base reads as "the starting model", but a point of the sweep already has step 0 and wins
        warn(
            f"--base {base_model} is not the start: {by_step[0].folder} has step 0 and every change is measured "
            "from it; --base serves only as the base of LoRA adapters"
        )


def _tokenizer_source(point: _Found, base_model: Path | None) -> Path:
    """The folder whose tokenizer goes with a full-model point: its own, else its training folder's, else the
    base's."""
    for folder in (point.folder, point.training_dir, base_model):
        if folder is not None and has_tokenizer(folder):
            return folder
    raise BenchError(
        f"checkpoint {point.folder} has no tokenizer (and neither has its training folder); "
        "pass the starting model, which has one, with --base"
    )


def _link_with_tokenizer(model_folder: Path, tokenizer_folder: Path, target: Path) -> Path:
    """A folder of links to a checkpoint's files plus a copy of a tokenizer, so it loads as one model folder."""
    from transformers import AutoTokenizer

    def write(partial: Path) -> None:
        partial.mkdir()
        for path in model_folder.iterdir():
            if path.is_file():
                (partial / path.name).symlink_to(path.resolve())
        AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True).save_pretrained(partial)

    return write_folder_atomic(target, write)


# ---------------------------------------------------------------- merging LoRA adapters


def _file_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _merge_record(adapter: Path, base: Path) -> dict[str, Any]:
    """What a merged folder was made from: the adapter's files by content, the base's by path, size and time."""
    adapter_files = [adapter / name for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS) if (adapter / name).is_file()]
    base_files = sorted(
        path for path in base.iterdir() if path.is_file() and (path.suffix in {".safetensors", ".bin", ".json"})
    )
    return {
        "version": MERGE_RECORD_VERSION,
        "adapter": str(adapter.resolve()),
        "adapter_sha256": _file_digest(adapter_files),
        "base": str(base.resolve()),
        "base_files": {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in base_files},
    }


def merge_adapter(adapter: Path, base: Path, target: Path) -> Path:
    """Merge a LoRA adapter onto its base model and save a full model folder at `target`.

    One model is in memory at a time; a folder merged earlier from the same files is reused.
    """
    record = _merge_record(adapter, base)
    record_file = target / MERGE_RECORD
    if record_file.is_file():
        try:
            if json.loads(record_file.read_text()) == record:
                return target
        except json.JSONDecodeError:
            pass

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_folder = adapter if has_tokenizer(adapter) else base
    if not has_tokenizer(tokenizer_folder):
        raise BenchError(f"neither LoRA adapter {adapter} nor its base model {base} has a tokenizer")

    def write(partial: Path) -> None:
        model: Any = AutoModelForCausalLM.from_pretrained(base, dtype="auto", local_files_only=True)
        try:
            try:
                model = PeftModel.from_pretrained(model, adapter, local_files_only=True).merge_and_unload()
            except Exception as error:  # shape mismatches, unknown target modules, ...: one line for the user
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise BenchError(f"LoRA adapter {adapter} does not fit base model {base}: {first}") from None
            with torch.no_grad():
                model.save_pretrained(partial)
            AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True).save_pretrained(partial)
            (partial / MERGE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
        finally:
            del model  # one model in memory at a time: free it before the next adapter is merged
            gc.collect()

    return write_folder_atomic(target, write)
