"""Whether a set of a suite can run as written, decided from declarations when the suite is read,
so that nothing is generated (and no run folder written) for a set that would fail afterwards.

- A scorer declares what it reads of an item: `Scorer.needs` (capabilities, `tasks.sources.CAPABILITIES`:
  a gold answer, items made by a generator task, lm-eval's own scores) and `Scorer.needs_meta` (item.meta keys).
- A source declares what its items carry: `Source.provides` (capabilities; default: a gold answer) and
  `Source.provided_meta()` (its class's `meta_keys`; for file and hub sources the columns under `meta:`).
- A source declares the `prompt:` and `sampling:` keys its items honour (`Source.prompt_settings`,
  `Source.sampling_settings`; None: all). A set that gives another one itself is refused; one that
  inherits it from the suite's `defaults:` has it ignored, and `bench suites --check` says so.
- A scorer may refuse single items whose gold it cannot read (`Scorer.item_problem`), checked when the
  items are loaded (before generation), not when they are scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.scorers import SCORERS, Scorer
from plasticity_bench.tasks.sources import SOURCES, Source

# What a missing capability is called in an error (tasks.sources.CAPABILITIES describes each).
CAPABILITY_WORDS = {
    "answer": "a gold answer (item.answer)",
    "generator_task": "items made by a generator task (source kind generator)",
    "lmeval_scores": "lm-eval's own per-document scores (source kind lmeval)",
}
SETTING_SECTIONS = ("prompt", "sampling")


def missing(source: Source, scorer: type[Scorer]) -> list[str]:
    """What `scorer` reads that the items of `source` lack, in words; empty when it fits."""
    lacks = [CAPABILITY_WORDS.get(need, need) for need in sorted(scorer.needs - source.provides)]
    meta = sorted(scorer.needs_meta - source.provided_meta())
    if meta:
        lacks.append(f"item meta {', '.join(repr(key) for key in meta)}")
    return lacks


def fitting_scorers(source: Source) -> list[str]:
    return [entry.name for entry in SCORERS if not missing(source, entry.obj)]


def fit_problem(source: Source, scorer: str) -> str | None:
    """Why `scorer` cannot score the items of `source` (one line, with the way out), or None."""
    lacks = missing(source, SCORERS.get(scorer))
    if not lacks:
        return None
    ways = []
    if any(word.startswith("item meta") for word in lacks) and "meta" in source.optional:
        ways.append("list those columns under the source's `meta:`")
    judge = SCORERS.get(scorer)
    kinds = [
        entry.name for entry in SOURCES if judge.needs <= entry.obj.provides and judge.needs_meta <= entry.obj.meta_keys
    ]
    if kinds:
        ways.append(f"sources it scores: {', '.join(kinds)}")
    fitting = fitting_scorers(source)
    ways.append(f"scorers that fit source kind {source.name}: {', '.join(fitting) if fitting else 'none'}")
    return (
        f"scorer {scorer} needs {' and '.join(lacks)}, which items of source kind {source.name} lack "
        f"({'; '.join(ways)})"
    )


def resolve_scorer(source: Source, scorer: str, inherited: bool, where: str) -> tuple[str, tuple[str, ...]]:
    """The set's scorer and what of `defaults:` it ignores. A scorer the set names itself must fit
    its source; one inherited from `defaults:` that does not fit gives way to the source's own."""
    problem = fit_problem(source, scorer)
    if problem is None:
        return scorer, ()
    own = source.default_scorer
    if inherited and own is not None and fit_problem(source, own) is None:
        return own, ("scorer",)
    raise BenchError(f"{where}: {problem}")


def refuse_unhonoured(source: Source, raw: Mapping[str, Any], where: str) -> None:
    """A set's own `prompt:` / `sampling:` keys that its source ignores: a one-line error."""
    for section, honoured in zip(SETTING_SECTIONS, (source.prompt_settings, source.sampling_settings)):
        given = raw.get(section)
        if honoured is None or not isinstance(given, Mapping):
            continue
        ignored = [f"{section}.{key}" for key in sorted(str(key) for key in given if key not in honoured)]
        if ignored:
            kept = ", ".join(f"{section}.{key}" for key in sorted(honoured))
            keeps = f"it honours {kept} only" if honoured else f"it honours no {section} setting"
            raise BenchError(
                f"{where}: source kind {source.name} ignores {', '.join(ignored)} ({keeps}); "
                f"remove {'it' if len(ignored) == 1 else 'them'} from the set"
            )


def ignored_defaults(source: Source, defaults: Mapping[str, Any]) -> tuple[str, ...]:
    """The suite's `defaults:` settings the source ignores, as `section.key`."""
    ignored: list[str] = []
    for section, honoured in zip(SETTING_SECTIONS, (source.prompt_settings, source.sampling_settings)):
        given = defaults.get(section)
        if honoured is not None and isinstance(given, Mapping):
            ignored.extend(f"{section}.{key}" for key in sorted(str(k) for k in given) if key not in honoured)
    return tuple(ignored)


def check_items(scorer: str, items: Sequence[Item], where: str) -> None:
    """The first item whose gold `scorer` cannot read: a one-line error naming it."""
    judge = SCORERS.get(scorer)
    for item in items:
        problem = judge.item_problem(item)
        if problem is not None:
            raise BenchError(f"{where}: scorer {scorer} cannot score item {item.id}: {problem}")


def unique(lines: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(lines))
