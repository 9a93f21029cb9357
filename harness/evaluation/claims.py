"""Claims about methods, checked across seeds: each a comparison of two methods on a metric with a
direction, given a verdict (supported / contradicted / inconclusive / not run) with its interval.

A claim file (YAML; the shipped one is `claims.yaml` beside this module) is a list of claims:

    - claim: RPS gains more than EPS on the hard target
      a: rps
      b: eps
      tests:                       # all must hold; one test can be written inline instead
        - {metric: target_gain, direction: greater}

`direction: greater` means the claim says a's metric is higher than b's, `less` lower. A test
with `against: zero` compares a's metric with 0 instead of with b's. Metrics are per run (see
reports/study.py: target_gain, target_final, ood_change, held_out:<family>, kl_to_start,
target_roughness; for claims only, ood_change_at_matched_gain, RL's Razor's comparison). Per test,
the difference of the two methods' means across seeds gets a 95% Welch interval (t quantile with
the Welch–Satterthwaite degrees of freedom, rounded down); when the units are keyed by a shared block (the
organisms of a family study, harness/evaluation/family.py), the two methods are paired block by block
instead: the t interval of the per-block differences, blocks − 1 degrees of freedom. Supported when the
interval lies wholly on the claimed side of 0, contradicted when wholly on the other, inconclusive otherwise
(including when fewer than 2 units, so no interval exists). A claim is supported when every test is,
contradicted when any test is, else inconclusive; a claim naming a method the study did not run is
"not run".
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from plasticity_bench.harness.core.errors import BenchError

SHIPPED_CLAIMS = Path(__file__).with_name("claims.yaml")
DIRECTIONS = ("greater", "less")
# one method's values of one metric: per independent unit (a run), or keyed by a block two methods share (an
# organism), which pairs them
Units = Sequence[float] | Mapping[Any, float]
Block = TypeVar("Block", bound=Hashable)
SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"

# two-sided 95% quantiles of Student's t, df = 1..30
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: float) -> float:
    """t_{0.975, df} for df rounded down (conservative); beyond 30, the next tabulated value down."""
    whole = math.floor(df)
    if whole < 1:
        return float("nan")
    if whole <= 30:
        return _T975[whole - 1]
    return 2.021 if whole <= 40 else 2.000 if whole <= 60 else 1.980 if whole <= 120 else 1.960


@dataclass(frozen=True)
class Check:
    metric: str
    direction: str  # greater | less: a's metric vs b's (or vs 0)
    against_zero: bool = False


@dataclass(frozen=True)
class Claim:
    text: str
    a: str
    b: str | None
    tests: tuple[Check, ...]


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean across seeds and its standard error (sample sd / √k; nan with fewer than 2 values)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(variance / len(finite))


def difference_interval(a: Sequence[float], b: Sequence[float] | None) -> tuple[float, float, float]:
    """(mean(a) − mean(b), low, high): the 95% Welch interval; b None: a's mean and its t interval."""
    mean_a, se_a = mean_and_stderr(a)
    if b is None:
        k = len([v for v in a if not math.isnan(v)])
        half = t975(k - 1) * se_a if k >= 2 else float("nan")
        return mean_a, mean_a - half, mean_a + half
    mean_b, se_b = mean_and_stderr(b)
    diff = mean_a - mean_b
    k_a, k_b = len([v for v in a if not math.isnan(v)]), len([v for v in b if not math.isnan(v)])
    variance = se_a**2 + se_b**2
    if math.isnan(variance):
        return diff, float("nan"), float("nan")
    if variance == 0:
        return diff, diff, diff
    df = variance**2 / (se_a**4 / (k_a - 1) + se_b**4 / (k_b - 1))
    half = t975(df) * math.sqrt(variance)
    return diff, diff - half, diff + half


def paired_difference_interval(a: Mapping[Block, float], b: Mapping[Block, float]) -> tuple[float, float, float]:
    """(mean over the blocks both have of a − b, low, high): the 95% t interval of the paired differences. Whatever
    a block adds to both methods cancels in its difference."""
    return difference_interval([a[block] - b[block] for block in shared_blocks(a, b)], None)


def shared_blocks(a: Mapping[Block, float], b: Mapping[Block, float]) -> list[Block]:
    """The blocks both methods ran, in a's order: the pairs of a paired comparison."""
    return [block for block in a if block in b]


def unit_list(values: Units) -> list[float]:
    """The values of every unit, blocks' keys dropped."""
    return list(values.values()) if isinstance(values, Mapping) else list(values)


def interval_of(a: Units, b: Units | None) -> tuple[float, float, float]:
    """a − b (or a − 0): paired when both are keyed by blocks, else Welch across independent units."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return paired_difference_interval(a, b)
    return difference_interval(unit_list(a), None if b is None else unit_list(b))


def verdict_of(direction: str, low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    sign = 1 if direction == "greater" else -1
    low, high = sorted((sign * low, sign * high))
    return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in verdicts else INCONCLUSIVE


def evaluate_claims(claims: Sequence[Claim], metrics: Mapping[str, Mapping[str, Units]]) -> list[dict[str, Any]]:
    """metrics: method → metric → one value per seed (or per organism, keyed by it: paired). One result per claim,
    with each test's interval."""
    results = []
    for claim in claims:
        needed = [claim.a] + ([claim.b] if claim.b and not all(t.against_zero for t in claim.tests) else [])
        missing = [m for m in needed if m not in metrics]
        result: dict[str, Any] = {"claim": claim.text, "a": claim.a, "b": claim.b, "tests": []}
        if missing:
            results.append({**result, "verdict": NOT_RUN, "missing": missing})
            continue
        for test in claim.tests:
            a_values = metrics[claim.a].get(test.metric, [])
            b_values = None if test.against_zero else metrics[claim.b or ""].get(test.metric, [])
            diff, low, high = interval_of(a_values, b_values)
            pairs = (
                len(shared_blocks(a_values, b_values))
                if isinstance(a_values, Mapping) and isinstance(b_values, Mapping)
                else None
            )
            result["tests"].append(
                {
                    "metric": test.metric,
                    "direction": test.direction,
                    "versus": "zero" if test.against_zero else claim.b,
                    **({"pairs": pairs} if pairs is not None else {}),  # paired by block: how many blocks
                    "difference": diff,
                    "low": low,
                    "high": high,
                    "verdict": verdict_of(test.direction, low, high),
                }
            )
        results.append({**result, "verdict": combine([t["verdict"] for t in result["tests"]])})
    return results


def load_claims(path: Path, known_metrics: Sequence[str] | None = None) -> list[Claim]:
    """A claim file; a one-line BenchError naming what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise BenchError(f"cannot read claims file {path}: {error.strerror or error}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise BenchError(f"claims file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, list):
        raise BenchError(f"claims file {path} must be a list of claims (each with claim, a, b, tests)")
    return [parse_claim(entry, f"{path} claim {i + 1}", known_metrics) for i, entry in enumerate(data)]


def parse_claim(entry: Any, where: str, known_metrics: Sequence[str] | None = None) -> Claim:
    if not isinstance(entry, dict) or not isinstance(entry.get("claim"), str) or not isinstance(entry.get("a"), str):
        raise BenchError(f"{where}: needs `claim` (text) and `a` (a method)")
    raw_tests = entry.get("tests", [{k: entry[k] for k in ("metric", "direction", "against") if k in entry}])
    if not isinstance(raw_tests, list) or not raw_tests:
        raise BenchError(f"{where}: `tests` must be a non-empty list of {{metric, direction}}")
    tests = []
    for raw in raw_tests:
        if not isinstance(raw, dict) or not isinstance(raw.get("metric"), str):
            raise BenchError(f"{where}: every test needs a `metric`")
        if raw.get("direction") not in DIRECTIONS:
            raise BenchError(f"{where}: direction must be one of {', '.join(DIRECTIONS)}, got {raw.get('direction')!r}")
        metric = raw["metric"]
        if known_metrics is not None and metric not in known_metrics and not metric.startswith("held_out:"):
            raise BenchError(
                f"{where}: unknown metric {metric!r}; known: {', '.join(known_metrics)}, held_out:<family>"
            )
        against = raw.get("against")
        if against not in (None, "zero"):
            raise BenchError(f"{where}: `against` can only be zero, got {against!r}")
        tests.append(Check(metric, raw["direction"], against == "zero"))
    b = entry.get("b")
    if b is not None and not isinstance(b, str):
        raise BenchError(f"{where}: `b` must be a method name")
    if b is None and not all(t.against_zero for t in tests):
        raise BenchError(f"{where}: needs `b` (the method compared with) unless every test is `against: zero`")
    return Claim(entry["claim"], entry["a"], b, tuple(tests))
