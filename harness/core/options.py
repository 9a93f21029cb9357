"""Declared settings: each field of a settings dataclass (a method's options, `lora:`) carries its
help, its choices and its range, written once beside its default:

    beta: float = option(0.1, "β, the strength of the pull towards π_ref", low=0, low_open=True)

`build` turns a user's mapping into such a dataclass and is the one place that checks it: an unknown
key, a wrong type, a value outside the choices or the range, each a one-line BenchError that names
the setting, what it allows and the value given (and its help). `describe` lists the declarations for
`bench methods --options METHOD`. This module is on the ground floor, free of torch, because the CLI
checks a config before it imports the trainers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from plasticity_bench.harness.core.errors import BenchError

DECLARED = "declared"  # the metadata key that holds a field's Declaration
WIDEST_DEFAULT = 32  # characters of a default shown in the table; a longer one is cut


@dataclass(frozen=True)
class Declaration:
    """What one setting means and which values it admits (choices, or a range with open or closed ends)."""

    help: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the low end itself is refused
    high_open: bool = False

    def allowed(self) -> str:
        """The admitted values in words: `one of a, b`, `positive`, `>= 2`, `in (0, 1]`; '' for any."""
        if self.choices is not None:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return "positive" if self.low == 0 and self.low_open else f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""

    def admits(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    choices: tuple[Any, ...] | None = None,  # noqa: A002
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field with its Declaration (`default_factory` for a nested settings dataclass)."""
    declared = Declaration(help, tuple(choices) if choices is not None else None, low, high, low_open, high_open)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={DECLARED: declared})


def declaration(item: dataclasses.Field[Any]) -> Declaration:
    return item.metadata.get(DECLARED) or Declaration("")


def check(settings: Any, prefix: str) -> None:
    """BenchError for the first field of `settings` (nested dataclasses too) outside its choices or range."""
    for item in fields(settings):
        value = getattr(settings, item.name)
        if dataclasses.is_dataclass(value):
            check(value, f"{prefix}{item.name}.")
            continue
        declared = declaration(item)
        if not declared.admits(value):  # the help says what the setting is, and why its limits are there
            meaning = f" ({declared.help})" if declared.help else ""
            raise BenchError(f"{prefix}{item.name} must be {declared.allowed()}, got {value!r}{meaning}")


def build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate a (nested) settings dataclass from a mapping: unknown keys, types, choices and
    ranges checked, each refusal one line naming `prefix + name`."""
    known = {item.name: item for item in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise BenchError(f"unknown setting '{prefix}{unknown[0]}'; known: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise BenchError(f"setting {prefix}{name} must be a mapping")
            kwargs[name] = build(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(f"{prefix}{name}", value, known[name].type)
    settings = replace(cls(), **kwargs)
    check(settings, prefix)
    return settings


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """The value if it has the setting's type; a number must be finite (no nan or inf) and an
    integer setting takes a whole float too (`steps: 1e3`)."""
    text = str(annotation)
    if value is None and "None" in text:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and text.startswith(("int", "float")) and not math.isfinite(value):
        raise BenchError(f"setting {name} must be a finite number, got {value}")
    if text.startswith("int") and number and float(value).is_integer():
        return int(value)
    if text.startswith("float") and number:
        return float(value)
    if text.startswith("bool") and isinstance(value, bool):
        return value
    if text.startswith("str") and isinstance(value, str):
        return value
    if text.startswith("dict") and isinstance(value, dict):
        return value
    if text.startswith("tuple[str") and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    kind = "a list of names" if text.startswith("tuple[str") else text.split(" ")[0]
    raise BenchError(f"setting {name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class Row:
    """One line of `bench methods --options`."""

    name: str
    type: str
    default: str
    allowed: str
    help: str


def describe(cls: type, prefix: str = "") -> list[Row]:
    """Every setting of a settings dataclass in declaration order, a nested one's as `outer.inner`."""
    rows: list[Row] = []
    defaults = cls()
    for item in fields(cls):
        value = getattr(defaults, item.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe(type(value), f"{prefix}{item.name}."))
            continue
        shown = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)
        shown = (
            shown if len(shown) <= WIDEST_DEFAULT else shown[: WIDEST_DEFAULT - 1] + "…"
        )  # e.g. PCR's recorded assumptions
        declared = declaration(item)
        rows.append(Row(prefix + item.name, str(item.type), shown, declared.allowed(), declared.help))
    return rows


def table(rows: list[Row]) -> list[str]:
    """The rows as aligned text lines under a header."""
    header = Row("option", "type", "default", "allowed", "help")
    every = [header, *rows]
    widths = [max(len(getattr(row, column)) for row in every) for column in ("name", "type", "default", "allowed")]
    return [
        f"{row.name:<{widths[0]}}  {row.type:<{widths[1]}}  {row.default:<{widths[2]}}  "
        f"{row.allowed:<{widths[3]}}  {row.help}".rstrip()
        for row in every
    ]
