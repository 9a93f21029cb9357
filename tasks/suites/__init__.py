"""Suites as data: a YAML file names a suite's evaluation sets and training sets.

    name: my-suite
    eval_seed: 1234                 # seeds generated sets (fixed: the sets are hashed)
    defaults:                       # applied to every eval set unless it says otherwise
      prompt: {chat: true, system: "Reason step by step.", enable_thinking: false}
      sampling: {temperature: 0.0, max_new_tokens: 512}
    families: {math: "in-domain math", reasoning: "held-out reasoning"}   # optional descriptions
    eval:
      - name: gsm8k                 # default: the source's task/level (generators) or "set<i>"
        split: test                 # the slice is name/split
        family: math                # free text: what the report groups by
        role: target                # target (its gain is plasticity) or held-out (its drop is forgetting)
        source: {kind: file, path: gsm8k.jsonl,
                 fields: {prompt: question, answer: {field: answer, pattern: "####\\s*(.+)$"}}}
        prompt: {...}               # tasks/prompting.py PromptFormat: chat, system, fewshot, enable_thinking,
                                    # question_template
        sampling: {temperature: 0.7, top_p: 0.8, n: 4, max_new_tokens: 1024, stop: []}
        scorer: math_verify         # a name in tasks/scorers.py (default: the source's own)
        published: {Qwen3-8B: 71.3} # optional: a paper's numbers, shown beside ours in the report
        few_shot: 3                 # optional: the few-shot recovery probe, k solved examples (few_shot.py)
        few_shot_items: 50          # optional: probe the first 50 items only (default: all)
    train:                          # what RPS/EPS (easy then hard) and every method trains on
      easy: {source: {...}, scorer: math_verify}
      hard: {source: {...}, scorer: math_verify}
    # or one set split by a difficulty field:  train: {source: {...}, difficulty: {field: level, threshold: 3}}

Shipped suites live beside this file (`bench suites` lists them); a user's suite is a path.
This module is the schema: parsing a suite checks every key, source option and scorer but reads
no data. Loading the items is the explicit next step (tasks/suites/items.py: `load_eval_items`
returns the items and the optional sets it skipped).
Every training item carries a verifiable answer (GRPO/PCR reward it, DPO labels samples, SPoT's
oracle checks corrections) and no training prompt is an evaluation prompt.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.tasks.sources import SOURCES, Source

SHIPPED = Path(__file__).resolve().parent
ROLES = ("target", "held-out")
SET_KEYS = {
    *("name", "split", "family", "role", "source", "prompt", "sampling", "scorer", "published", "optional"),
    *("few_shot", "few_shot_items"),  # the few-shot recovery probe (tasks/suites/few_shot.py)
}
SUITE_KEYS = {"name", "description", "eval_seed", "defaults", "families", "eval", "train", "foundation"}
SAMPLING_KEYS = {"temperature", "top_p", "n", "max_new_tokens", "stop"}
TRAIN_SET_KEYS = {"source", "scorer", "difficulty", "prompt", "name", "max_new_tokens"}


def check_keys(raw: dict[str, Any], known: set[str], where: str, what: str = "key") -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BenchError(f"{where}: unknown {what} '{unknown[0]}'; known: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class EvalSet:
    name: str
    split: str
    family: str
    role: str  # "target" or "held-out"
    source: Source
    prompt: dict[str, Any]  # a PromptFormat mapping (tasks/prompting.py)
    sampling: Sampling
    scorer: str
    published: dict[str, float] = field(default_factory=dict)
    optional: bool = False  # skipped (and said so in run.json) where its data is not available
    ignored: tuple[
        str, ...
    ] = ()  # the `defaults:` its source ignores ("prompt.system", "scorer"; tasks/suites/compat.py)
    few_shot: int = 0  # k solved examples per item of the few-shot recovery probe; 0: no probe (few_shot.py)
    few_shot_items: int | None = None  # how many of the set's items the probe asks again; None: all

    @property
    def slice(self) -> str:
        """The set's name in records and reports: every item has task = name, level = split."""
        return f"{self.name}/{self.split}"


@dataclass(frozen=True, eq=False)
class TrainSet:
    name: str
    split: str
    source: Source
    scorer: str
    prompt: dict[str, Any]
    difficulty: tuple[str, float, str] | None = None  # (meta field, threshold, "easy"|"hard"): keep that side
    max_new_tokens: int = 512  # the sampling budget of RL / preference methods' rollouts
    ignored: tuple[str, ...] = ()  # the suite's `defaults:` its source ignores (tasks/suites/compat.py)


@dataclass(frozen=True, eq=False)
class Suite:
    name: str
    description: str
    sha256: str  # of the suite file's bytes: recorded in run.json
    path: Path
    eval_seed: int
    eval_sets: tuple[EvalSet, ...]
    easy: TrainSet | None
    hard: TrainSet | None
    families: dict[str, str]  # family -> description, in report order (targets first)
    foundation: tuple[
        tuple[str, str, float], ...
    ] = ()  # the organism's pre-training mix (generator task, level, weight)

    def eval_set(self, slice_: str) -> EvalSet:
        for eval_set in self.eval_sets:
            if eval_set.slice == slice_:
                return eval_set
        raise BenchError(f"suite {self.name} has no evaluation set {slice_!r}")

    @property
    def target_sets(self) -> list[EvalSet]:
        """The sets the suite declares as targets (`role: target`), whether or not their data is here."""
        return [s for s in self.eval_sets if s.role == "target"]

    @property
    def target_family(self) -> str:
        return self.target_sets[0].family

    @property
    def target_slice(self) -> str:
        return self.target_sets[0].slice

    def to_summary(self, skipped: Mapping[str, str]) -> dict[str, Any]:
        """What run.json records: enough for reports, compare and gate to need no suite file.
        `skipped` (slice → why; `EvalItems.skipped`): the optional sets without items here, left
        out of the sets, so the target named is the first one the run has items of."""
        available = [s for s in self.eval_sets if s.slice not in skipped]
        target = next(s for s in available if s.role == "target")
        return {
            "name": self.name,
            "sha256": self.sha256,
            "path": str(self.path),
            "families": self.families,
            "family_order": list(self.families),  # run.json sorts keys: the order is kept here
            "target_family": target.family,
            "target_slice": target.slice,
            "sets": [
                {
                    "slice": s.slice,
                    "family": s.family,
                    "role": s.role,
                    "scorer": s.scorer,
                    "source": s.source.name,
                    "samples": s.sampling.n,
                    "published": s.published,
                }
                for s in available
            ],
            "skipped": dict(skipped),
        }


# ---------------------------------------------------------------- loading


def shipped_suites() -> dict[str, Path]:
    return {path.stem: path for path in sorted(SHIPPED.glob("*.yaml"))}


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a suite YAML by path; every problem is a one-line BenchError."""
    return _load(suite_file(name_or_path))


def suite_file(name_or_path: str) -> Path:
    """The YAML file of a shipped suite's name, or of a path (which must exist)."""
    shipped = shipped_suites()
    if name_or_path in shipped:
        return shipped[name_or_path].resolve()
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise BenchError(f"suite file {path} does not exist")
        return path.resolve()
    raise BenchError(f"unknown suite {name_or_path!r}; shipped: {', '.join(shipped)} (or give a suite YAML file)")


@lru_cache(maxsize=32)
def _load_cached(path: Path, sha256: str) -> Suite:
    return parse_suite(yaml.safe_load(path.read_text()), path, sha256)


def _load(path: Path) -> Suite:
    data = path.read_bytes()
    try:
        yaml.safe_load(data)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise BenchError(f"suite file {path} is not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    return _load_cached(path, hashlib.sha256(data).hexdigest())


def parse_suite(data: Any, path: Path, sha256: str, problems: list[str] | None = None) -> Suite:
    """The suite; the first problem is a BenchError. With `problems` (`bench suites --check`) every
    problem is appended there instead, one line each, and the suite holds the sets that parsed."""
    where = f"suite {path.name}"
    if not isinstance(data, dict):
        raise BenchError(f"{where}: must be a mapping with name, eval and train")
    _attempt(problems, check_keys, data, SUITE_KEYS, where)
    name = data.get("name") or path.stem
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - {"prompt", "sampling", "scorer"}:
        _attempt(problems, _fail, f"{where}: defaults may hold prompt, sampling and scorer only")
        defaults = {}  # (collecting) the sets are still read, without the broken defaults
    raw_sets = data.get("eval")
    if not isinstance(raw_sets, list) or not raw_sets:
        _attempt(problems, _fail, f"{where}: `eval` must list at least one evaluation set")
        raw_sets = []
    parsed = [_attempt(problems, parse_eval_set, raw, index, defaults, path) for index, raw in enumerate(raw_sets, 1)]
    eval_sets = tuple(s for s in parsed if s is not None)
    slices = [s.slice for s in eval_sets]
    duplicate = next((s for s in slices if slices.count(s) > 1), None)
    if duplicate:
        _attempt(
            problems, _fail, f"{where}: two evaluation sets are both named {duplicate!r}; give one a `name` or `split`"
        )
    if raw_sets and len(eval_sets) == len(raw_sets) and not any(s.role == "target" for s in eval_sets):
        _attempt(problems, _fail, f"{where}: no evaluation set has role: target (the set whose gain is plasticity)")
    easy, hard = parse_training(data.get("train"), defaults, path, problems)
    described = data.get("families") or {}
    if not isinstance(described, dict):
        _attempt(problems, _fail, f"{where}: families must map each family to a description")
        described = {}
    targets = [s.family for s in eval_sets if s.role == "target"]
    order = targets[:1] + [s.family for s in eval_sets]
    families = {f: str(described.get(f, "")) for f in dict.fromkeys(order)}
    foundation = _attempt(problems, parse_foundation, data.get("foundation"), where) or ()
    seed = data.get("eval_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        _attempt(problems, _fail, f"{where}: eval_seed must be an integer")
        seed = 0
    return Suite(
        str(name), str(data.get("description", "")), sha256, path, seed, eval_sets, easy, hard, families, foundation
    )


R = TypeVar("R")


def _attempt(problems: list[str] | None, work: Callable[..., R], *args: Any) -> R | None:
    """`work(*args)`; when collecting (`problems` is a list) a BenchError is noted there and None returned."""
    try:
        return work(*args)
    except BenchError as error:
        if problems is None:
            raise
        problems.append(str(error))
        return None


def _fail(message: str) -> None:
    raise BenchError(message)


def parse_source(raw: Any, where: str, path: Path) -> Source:
    if not isinstance(raw, dict) or "kind" not in raw:
        raise BenchError(f"{where}: `source` must be a mapping with a `kind` ({', '.join(SOURCES.names())})")
    kind = raw["kind"]
    if kind not in SOURCES:
        raise BenchError(f"{where}: unknown source kind {kind!r}; known: {', '.join(SOURCES.names())}")
    return SOURCES.get(kind)({k: v for k, v in raw.items() if k != "kind"}, where, path.parent)


def parse_eval_set(raw: Any, index: int, defaults: dict[str, Any], path: Path) -> EvalSet:
    from plasticity_bench.tasks.scorers import SCORERS  # noqa: PLC0415  (scorers import sources' helpers)
    from plasticity_bench.tasks.suites.compat import ignored_defaults, refuse_unhonoured, resolve_scorer
    from plasticity_bench.tasks.suites.few_shot import parse_few_shot

    where = f"suite {path.name}, eval set {index}"
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: must be a mapping")
    check_keys(raw, SET_KEYS, where)
    source = parse_source(raw.get("source"), where, path)
    own = source.set_name()
    name = str(raw.get("name") or (own[0] if own else f"set{index}"))
    split = str(raw.get("split") or (own[1] if own else "test"))
    if "/" in name or "/" in split:
        raise BenchError(f"{where}: name and split may not contain '/'")
    family = raw.get("family")
    if not isinstance(family, str) or not family:
        raise BenchError(f"{where}: needs a family (free text, e.g. math, reasoning, code)")
    role = raw.get("role", "held-out")
    if role not in ROLES:
        raise BenchError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    scorer = raw.get("scorer") or defaults.get("scorer") or source.default_scorer
    if scorer is None:
        raise BenchError(f"{where}: needs a scorer; known: {', '.join(SCORERS.names())}")
    if scorer not in SCORERS:
        raise BenchError(f"{where}: unknown scorer {scorer!r}; known: {', '.join(SCORERS.names())}")
    named = f"{where} ({name}/{split})"
    inherited = not raw.get("scorer") and bool(defaults.get("scorer"))  # a default that does not fit gives way
    scorer, ignored_scorer = resolve_scorer(source, str(scorer), inherited, named)
    refuse_unhonoured(source, raw, named)  # the set's own settings; the suite's defaults it ignores are noted
    ignored = ignored_defaults(source, defaults) + ignored_scorer
    prompt = {**(defaults.get("prompt") or {}), **(raw.get("prompt") or {})}
    check_prompt(prompt, where)
    sampling = parse_sampling({**(defaults.get("sampling") or {}), **(raw.get("sampling") or {})}, source, where)
    published = raw.get("published") or {}
    if not isinstance(published, dict) or not all(isinstance(v, (int, float)) for v in published.values()):
        raise BenchError(f"{where}: published must map a label to a number (points)")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise BenchError(f"{where}: optional must be true or false")
    shots, probed = parse_few_shot(raw, source, named)
    return EvalSet(
        name,
        split,
        family,
        role,
        source,
        prompt,
        sampling,
        str(scorer),
        {str(k): float(v) for k, v in published.items()},
        optional,
        ignored,
        shots,
        probed,
    )


def check_prompt(prompt: dict[str, Any], where: str) -> None:
    from plasticity_bench.tasks.prompting import PromptFormat

    try:
        PromptFormat.from_mapping(prompt)
    except BenchError as error:
        raise BenchError(f"{where}: {error}") from None


def parse_sampling(raw: dict[str, Any], source: Source, where: str) -> Sampling:
    check_keys(raw, SAMPLING_KEYS, where, "sampling setting")
    values = {"max_new_tokens": source.max_new_tokens(), "stop": source.default_stop, **raw}
    number = lambda key, low: _number(values[key], f"{where}: sampling.{key}", low)  # noqa: E731
    sampling = Sampling(
        max_new_tokens=int(number("max_new_tokens", 1)),
        temperature=number("temperature", 0.0) if "temperature" in values else 0.0,
        top_p=number("top_p", 0.0) if "top_p" in values else 1.0,
        n=int(number("n", 1)) if "n" in values else 1,
        stop=tuple(str(s) for s in values["stop"]),
    )
    if not 0 < sampling.top_p <= 1:
        raise BenchError(f"{where}: sampling.top_p must be in (0, 1], got {sampling.top_p}")
    if sampling.n > 1 and sampling.temperature == 0:
        raise BenchError(
            f"{where}: sampling.n = {sampling.n} samples at temperature 0 would all be the same; set a temperature"
        )
    return sampling


def _number(value: Any, name: str, low: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads 1e-4 as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise BenchError(f"{name} must be a finite number >= {low}, got {value!r}")
    return float(value)


def parse_training(
    raw: Any, defaults: dict[str, Any], path: Path, problems: list[str] | None = None
) -> tuple[TrainSet | None, TrainSet | None]:
    """The easy and hard training sets; `problems`: collect every problem (see `parse_suite`)."""
    where = f"suite {path.name}, train"
    if raw is None:
        return None, None  # an evaluation-only suite (bench eval); bench run will say it cannot train
    if not isinstance(raw, dict):
        _attempt(problems, _fail, f"{where}: must be a mapping: easy/hard sets, or one source with a difficulty split")
        return None, None
    prompt = {**(defaults.get("prompt") or {}), **(raw.get("prompt") or {})}
    if "source" in raw:

        def split_sets() -> tuple[TrainSet, TrainSet]:
            check_keys(raw, TRAIN_SET_KEYS, where)
            difficulty = raw.get("difficulty")
            if not isinstance(difficulty, dict) or set(difficulty) != {"field", "threshold"}:
                raise BenchError(
                    f"{where}: one training source needs `difficulty: {{field: META_FIELD, threshold: NUMBER}}` "
                    "to split easy from hard"
                )
            threshold = _number(difficulty["threshold"], f"{where}: difficulty.threshold", -math.inf)
            sets = [
                train_set(raw, where, path, prompt, (str(difficulty["field"]), threshold, side), side)
                for side in ("easy", "hard")
            ]
            return sets[0], sets[1]

        return _attempt(problems, split_sets) or (None, None)
    unknown = sorted(set(raw) - {"easy", "hard", "prompt"})
    if unknown or "easy" not in raw or "hard" not in raw:
        _attempt(problems, _fail, f"{where}: needs `easy` and `hard` sets (or one `source` with a `difficulty` split)")
        return None, None
    return (
        _attempt(problems, train_set, raw["easy"], f"{where}.easy", path, prompt, None, "easy"),
        _attempt(problems, train_set, raw["hard"], f"{where}.hard", path, prompt, None, "hard"),
    )


def train_set(
    raw: Any, where: str, path: Path, prompt: dict[str, Any], difficulty: tuple[str, float, str] | None, side: str
) -> TrainSet:
    from plasticity_bench.tasks.scorers import SCORERS
    from plasticity_bench.tasks.suites.compat import ignored_defaults, refuse_unhonoured, resolve_scorer

    if not isinstance(raw, dict):
        raise BenchError(f"{where}: must be a mapping with a source")
    check_keys(raw, TRAIN_SET_KEYS, where)
    source = parse_source(raw.get("source"), where, path)
    scorer = raw.get("scorer") or source.default_scorer
    if scorer is None:
        raise BenchError(f"{where}: needs a scorer (the verifier of its answers); known: {', '.join(SCORERS.names())}")
    if scorer not in SCORERS:
        raise BenchError(f"{where}: unknown scorer {scorer!r}; known: {', '.join(SCORERS.names())}")
    scorer, _ = resolve_scorer(source, str(scorer), False, where)
    budget_given = {"max_new_tokens": raw["max_new_tokens"]} if "max_new_tokens" in raw else None
    refuse_unhonoured(source, {"prompt": raw.get("prompt"), "sampling": budget_given}, where)
    ignored = ignored_defaults(source, {"prompt": prompt})  # the suite's and the train section's prompt
    own = source.set_name()
    name = str(raw.get("name") or (own[0] if own else f"train-{side}"))
    split = own[1] if own else side
    set_prompt = {**prompt, **(raw.get("prompt") or {})}
    check_prompt(set_prompt, where)
    budget = int(_number(raw.get("max_new_tokens", source.max_new_tokens()), f"{where}: max_new_tokens", 1))
    return TrainSet(name, split, source, str(scorer), set_prompt, difficulty, budget, ignored)


def parse_foundation(raw: Any, where: str) -> tuple[tuple[str, str, float], ...]:
    """`foundation:` entries [task, level] or [task, level, weight] (weight 1 when left out)."""
    entries = []
    for entry in raw or ():
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise BenchError(f"{where}: each foundation entry is [task, level] or [task, level, weight], got {entry!r}")
        weight = entry[2] if len(entry) == 3 else 1.0
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or weight == float("inf"):
            raise BenchError(f"{where}: foundation weight must be a positive number, got {weight!r} in {entry!r}")
        entries.append((str(entry[0]), str(entry[1]), float(weight)))
    return tuple(entries)
