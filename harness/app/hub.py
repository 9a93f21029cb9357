"""Hugging Face hub ids wherever a model folder is asked for (`bench run --model`, `bench eval`'s
checkpoints and `--base`), as lm-eval and lighteval accept them.

A reference is resolved in this order:

1. a path that exists on this machine is that folder, always (a local folder named like a hub id wins);
2. a hub id, `org/name` or `org/name@revision` (a branch, tag or commit), is looked up in the local
   Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`), with nothing downloaded;
3. when it is not cached (or the cached snapshot holds no weights) and the hub may be reached, it
   is downloaded into that cache; offline (`HF_HUB_OFFLINE=1`), or when the download fails, that
   is one BenchError line.

The snapshot's folder name is the commit it was made from: run.json records the id, the revision
asked for, that commit and the folder, and the folder (so the commit) is part of the run's identity.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError

# org/name (or a bare name), optionally @revision; no leading "/", "." or "~": those are paths
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)?(?:@[A-Za-z0-9_./-]+)?")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin")
# what a causal LM's snapshot does not need: other frameworks' weights and export formats
SKIPPED_FILES = [
    "*.gguf",
    "*.onnx",
    "*.onnx_data",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.tflite",
    "onnx/*",
    "original/*",
    "coreml/*",
]


@dataclass(frozen=True)
class HubModel:
    """A model resolved from a hub id: what run.json records."""

    id: str  # the repository, e.g. Qwen/Qwen3-0.6B
    revision: str  # what was asked for: main unless `@revision` was given
    commit: str  # the snapshot's commit (its folder name in the cache)
    folder: str  # the snapshot folder in the local cache

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def looks_like_hub_id(reference: str) -> bool:
    return HUB_ID.fullmatch(reference) is not None


def resolve_model(reference: str | Path, what: str = "model") -> tuple[Path, HubModel | None]:
    """The local folder `reference` names, and the hub model it came from (None for a local path).

    A reference that neither exists nor looks like a hub id comes back as the path unchanged, for
    the caller's own "does not exist" message."""
    text = str(reference)
    path = Path(text).expanduser()
    if path.exists() or not looks_like_hub_id(text):
        return path, None
    hub = resolve_hub_id(text, what)
    return Path(hub.folder), hub


def resolve_hub_id(reference: str, what: str = "model") -> HubModel:
    """The cached snapshot of a hub id, downloading it when it is not cached and the hub is reachable."""
    repo_id, _, revision = reference.partition("@")
    revision = revision or "main"
    cached = _cached_snapshot(repo_id, revision)
    if cached is not None and _has_weights(cached):
        return HubModel(repo_id, revision, cached.name, str(cached))
    if _offline():
        state = f"cached at {cached} without weights" if cached is not None else "not in the local Hugging Face cache"
        raise BenchError(
            f"{what} {reference!r} is not a folder on this machine and the hub model is {state} ({_cache_dir()}); "
            "offline (no network, or HF_HUB_OFFLINE=1), so it cannot be downloaded: "
            "download it where there is network, or give a local folder"
        )
    return _download(repo_id, revision, reference, what)


def _cached_snapshot(repo_id: str, revision: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (
        Exception
    ):  # not cached (LocalEntryNotFoundError), or an id the hub library refuses: not in the cache either way
        return None


def _download(repo_id: str, revision: str, reference: str, what: str) -> HubModel:
    from huggingface_hub import snapshot_download

    if sys.stderr.isatty():  # a person waiting sees why; a script's stderr keeps only the error line, if any
        print(f"downloading {reference} from the Hugging Face hub into {_cache_dir()}", file=sys.stderr, flush=True)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, ignore_patterns=SKIPPED_FILES))
    except Exception as error:  # not found, gated, no network, a full disk...: one line for the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BenchError(
            f"{what} {reference!r} is not a folder on this machine and could not be downloaded "
            f"from the Hugging Face hub ({type(error).__name__}: {first})"
        ) from None
    if not _has_weights(folder):
        raise BenchError(
            f"{what} {reference!r}: the hub repository has no model weights (*.safetensors or pytorch_model*.bin)"
        )
    return HubModel(repo_id, revision, folder.name, str(folder))


def _has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
