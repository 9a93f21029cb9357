"""A tiny name → object registry, so adding a method, task or backend is one file plus one line.

Usage::

    TRAINERS: Registry[type[Trainer]] = Registry("method")

    @TRAINERS.register("sft", "supervised fine-tuning on the hard set")
    class SFT(Trainer): ...

    TRAINERS.get("sft")   # -> SFT; an unknown name raises BenchError listing the known ones
    SFT.name              # -> "sft": the registered name is written once, at registration

A registry asked for a name first imports the plugin modules PLASTICITY_BENCH_PLUGINS lists
(harness/core/plugins.py), so a class registered outside the project is found like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.plugins import load_plugins

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    description: str
    obj: T


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if isinstance(obj, type):  # a registered class knows its own name (`ClassVar[str]` on its base)
                setattr(obj, "name", name)  # noqa: B010  (T is not known to have the attribute)
            self._entries[name] = Entry(name, description, obj)
            return obj

        return decorate

    def get(self, name: str) -> T:
        load_plugins()
        if name not in self._entries:
            raise BenchError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name].obj

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in self.names())

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries
