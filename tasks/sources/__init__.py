"""Where a suite's items come from: one class per kind of source, registered by name.

A suite YAML names a source per evaluation or training set (`source: {kind: file, path: ...}`);
the kind picks a class here, its other keys are that class's options, checked before anything
runs. A new kind of source is one file in this package plus its import below.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from harness.core.errors import BenchError
from harness.core.items import Item
from harness.core.registry import Registry


class Source(ABC):
    """Items of one set. `options` are the YAML keys besides `kind` (and `n`, the item limit)."""

    name: ClassVar[str]  # set by SOURCES.register
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    default_scorer: ClassVar[str | None] = None  # the scorer a set uses when the suite names none
    default_max_new_tokens: ClassVar[int] = 512
    default_stop: ClassVar[tuple[str, ...]] = ()  # stop strings a set uses when the suite names none

    def __init__(self, options: Mapping[str, Any], where: str, base_dir: Path) -> None:
        self.options = dict(options)
        self.where = where  # e.g. "suite my.yaml, eval set 3": every error names it
        self.base_dir = base_dir  # the suite file's folder: relative paths start there
        known = {*self.required, *self.optional, "n"}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise BenchError(f"{where}: unknown option '{unknown[0]}' for source kind {self.name}; known: {', '.join(sorted(known))}")
        missing = [key for key in self.required if key not in self.options]
        if missing:
            raise BenchError(f"{where}: source kind {self.name} needs '{missing[0]}'")
        limit = self.options.get("n")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
            raise BenchError(f"{where}: n must be a positive integer, got {limit!r}")

    @abstractmethod
    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        """Every item of the set, in a fixed order (ids unique); `seed` only for generators."""

    def eval_items(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        items = self.load(name, split, family, seed)
        limit = self.options.get("n")
        items = items[:limit] if limit else items
        if not items:
            raise BenchError(f"{self.where}: the set has no items")
        return items

    def train_items(self, name: str, split: str, family: str, seed: int, n: int, exclude: frozenset[str]) -> list[Item]:
        """Items to train on, none whose prompt is in `exclude` (the suite's evaluation prompts)."""
        items = [item for item in self.eval_items(name, split, family, seed) if item.prompt not in exclude]
        if not items:
            raise BenchError(f"{self.where}: every training item is also an evaluation item; nothing is left to train on")
        return items

    def max_new_tokens(self) -> int:
        return self.default_max_new_tokens

    def path_option(self, key: str) -> Path:
        """A file option, relative to the suite file's folder; a one-line error if it is missing."""
        path = Path(str(self.options[key])).expanduser()
        path = path if path.is_absolute() else self.base_dir / path
        if not path.exists():
            raise BenchError(f"{self.where}: {key} {path} does not exist")
        return path


SOURCES: Registry[type[Source]] = Registry("source kind")


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def item_id(name: str, split: str, key: str) -> str:
    return f"{name}-{split}-{short_hash(key)}"


def dedupe(items: Sequence[Item]) -> list[Item]:
    """Keep the first of items sharing an id (a data file may repeat a question)."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            kept.append(item)
    return kept


from tasks.sources import code, files, generator, lmeval, math_sets, reasoning_gym  # noqa: E402,F401  (registration)
