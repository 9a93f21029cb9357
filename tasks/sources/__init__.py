"""Where a suite's items come from: one class per kind of source, registered by name.

A suite YAML names a source per evaluation or training set (`source: {kind: file, path: ...}`);
the kind picks a class here, its other keys are that class's options, checked before anything
runs. A new kind of source is one file plus one registration line: in this package, its import
below; anywhere else, a module named in PLASTICITY_BENCH_PLUGINS (docs/extending.md).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from plasticity_bench.harness.core.errors import BenchError, warn
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.core.registry import Registry


class Source(ABC):
    """Items of one set. `options` are the YAML keys besides `kind` (and `n`, the item limit)."""

    name: ClassVar[str]  # set by SOURCES.register
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    default_scorer: ClassVar[str | None] = None  # the scorer a set uses when the suite names none
    default_max_new_tokens: ClassVar[int] = 512
    default_stop: ClassVar[tuple[str, ...]] = ()  # stop strings a set uses when the suite names none
    # What the items carry, matched against a scorer's declared needs when the suite is read
    # (tasks/suites/compat.py), so a scorer that cannot score these items is refused before any
    # generation. `provides`: capabilities (CAPABILITIES below); `meta_keys`: item.meta keys every item has.
    provides: ClassVar[frozenset[str]] = frozenset({"answer"})
    meta_keys: ClassVar[frozenset[str]] = frozenset()
    # The `prompt:` / `sampling:` keys the items honour (None: all). A set that sets another is refused;
    # one that inherits it from the suite's `defaults:` has it ignored (`bench suites --check` says so).
    prompt_settings: ClassVar[frozenset[str] | None] = None
    sampling_settings: ClassVar[frozenset[str] | None] = None
    requires: ClassVar[tuple[str, ...]] = ()  # distributions whose version decides the items (in the run's identity)
    # What the run asks of a source instead of its kind's name:
    # `generated_per_seed`: the items are made from a seed, as many as asked (a generator task), not read;
    #   a training set draws fresh ones per run seed, and they carry their own verifier (tasks/verify.py).
    # `runs_itself`: an outside evaluation harness renders the prompts, generates through the run's backend
    #   and scores each item while generating (lm-eval: the source has `task_reference()`); the pipeline
    #   neither renders its prompts nor checks their length, and its records come from that harness.
    generated_per_seed: ClassVar[bool] = False
    runs_itself: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any], where: str, base_dir: Path) -> None:
        self.options = dict(options)
        self.where = where  # e.g. "suite my.yaml, eval set 3": every error names it
        self.base_dir = base_dir  # the suite file's folder: relative paths start there
        known = {*self.required, *self.optional, "n"}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise BenchError(
                f"{where}: unknown option '{unknown[0]}' for source kind {self.name}; known: {', '.join(sorted(known))}"
            )
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
            raise BenchError(
                f"{self.where}: every training item is also an evaluation item; nothing is left to train on"
            )
        return items

    def max_new_tokens(self) -> int:
        return self.default_max_new_tokens

    def set_name(self) -> tuple[str, str] | None:
        """The (name, split) a set of this source takes where the suite names none (None: `set<i>`/`test`
        for an evaluation set, `train-<side>`/`<side>` for a training set)."""
        return None

    def provided_meta(self) -> frozenset[str]:
        """The item.meta keys every item of this set carries (a source whose meta the suite names overrides it)."""
        return self.meta_keys

    def data_files(self) -> list[Path]:
        """The local files the set's items are read from: their bytes are part of a run's identity
        (tasks/identity.py). Empty for sets a package makes or ships: its version (`requires`) covers them."""
        return []

    def path_option(self, key: str) -> Path:
        """A file option, relative to the suite file's folder; a one-line error if it is missing."""
        path = Path(str(self.options[key])).expanduser()
        path = path if path.is_absolute() else self.base_dir / path
        if not path.exists():
            raise BenchError(f"{self.where}: {key} {path} does not exist")
        return path


SOURCES: Registry[type[Source]] = Registry("source kind")

# What a source's items can carry besides meta keys; a scorer names the ones it needs (`Scorer.needs`).
CAPABILITIES = {
    "answer": "item.answer holds the gold answer",
    "generator_task": "item.task names the registered generator task that made the item (it scores its own items)",
    "lmeval_scores": "lm-eval computes each document's score while generating",
}


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def item_id(name: str, split: str, key: str) -> str:
    return f"{name}-{split}-{short_hash(key)}"


def dedupe(items: Sequence[Item], where: str) -> list[Item]:
    """Items sharing an id (a data file may repeat a question) kept once. A repeat with the same
    question and answer is dropped with one warning for the set; one whose question or answer
    differs is an error: which of the two is the gold answer is the user's call, not ours, and
    keeping either silently would score against the wrong one for every checkpoint."""
    first: dict[str, Item] = {}
    dropped = 0
    for item in items:
        kept = first.setdefault(item.id, item)
        if kept is item:
            continue
        named = f"{where} ({item.slice})"
        if kept.prompt != item.prompt:  # the data's own `id` column repeats an id
            raise BenchError(
                f"{named}: two rows share one id but hold different questions, {_short(kept.prompt)} and "
                f"{_short(item.prompt)}; give each row its own id"
            )
        if kept.answer != item.answer:
            raise BenchError(
                f"{named}: question {_short(kept.prompt)} appears twice with different answers, "
                f"{_short(kept.answer)} and {_short(item.answer)}; "
                "keep the row with the right answer and delete the other"
            )
        dropped += 1
    if dropped:
        message = (
            f"{where} ({items[0].slice}): {dropped} exact duplicate row(s) "
            f"(same question and answer) dropped; {len(first)} items kept"
        )
        if message not in _WARNED:  # a set is read more than once per command (checks, then the run): said once
            _WARNED.add(message)
            warn(message)
    return list(first.values())


_WARNED: set[str] = set()


def _short(text: str, limit: int = 60) -> str:
    """A question or answer as an error quotes it: on one line, cut at `limit` characters."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


from plasticity_bench.tasks.sources import code, files, generator, lmeval, math_sets, mbpp, reasoning_gym  # noqa: E402,F401  (registration)
