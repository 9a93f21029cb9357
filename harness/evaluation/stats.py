"""The statistics behind the report, `bench compare` and `bench gate`, in one place.

Everything here works in proportions (0–1) or in the units of the data given; callers convert
to points. Two checkpoints evaluated on the same items are *paired*: the tests below use the
pairing (only items whose result changed carry information), which is far more sensitive than
comparing two independent accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


def z_value(confidence: float) -> float:
    """The two-sided normal quantile: 1.96 for 95%."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Unlike p ± z·SE it stays inside [0, 1] and does not collapse to a point at 0% or 100%,
    which small evaluation slices hit often.
    """
    if n <= 0:
        raise ValueError("a proportion needs at least one trial")
    z = z_value(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


@dataclass(frozen=True)
class PairedCounts:
    """The 2×2 table of two pass/fail results on the same items (reference first, other second)."""

    both: int  # right in both
    lost: int  # right in the reference, wrong in the other
    gained: int  # wrong in the reference, right in the other
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.lost + self.gained + self.neither

    @property
    def difference(self) -> float:
        """Other − reference accuracy, as a proportion."""
        return (self.gained - self.lost) / self.n

    @classmethod
    def from_outcomes(cls, reference: Sequence[bool], other: Sequence[bool]) -> PairedCounts:
        ref = np.asarray(reference, dtype=bool)
        oth = np.asarray(other, dtype=bool)
        if ref.shape != oth.shape:
            raise ValueError("paired outcomes must have the same length")
        return cls(int((ref & oth).sum()), int((ref & ~oth).sum()), int((~ref & oth).sum()), int((~ref & ~oth).sum()))


def _binomial_half_cdf(k: int, n: int) -> float:
    """P(X ≤ k) for X ~ Binomial(n, ½), exactly (integer arithmetic, then one division)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact_p(lost: int, gained: int) -> float:
    """Exact McNemar test, two-sided: under "no change" each of the b = lost + gained discordant
    items is equally likely to go either way, so min(lost, gained) ~ Binomial(b, ½);
    p = min(1, 2·P(X ≤ min(lost, gained))). p = 1 when nothing changed."""
    discordant = lost + gained
    if discordant == 0:
        return 1.0
    return min(1.0, 2 * _binomial_half_cdf(min(lost, gained), discordant))


def mcnemar_midp(lost: int, gained: int) -> float:
    """Mid-p McNemar test (Fagerland, Lydersen & Laake 2013): the exact p-value less the
    probability of the observed table itself, p = 2·[P(X ≤ k) − ½·P(X = k)], k = min(lost, gained).
    Less conservative than the exact test, with type-I error close to nominal."""
    discordant = lost + gained
    if discordant == 0:
        return 1.0
    k = min(lost, gained)
    point = math.comb(discordant, k) / 2**discordant
    return min(1.0, 2 * (_binomial_half_cdf(k, discordant) - point / 2))


def paired_difference_interval(counts: PairedCounts, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for the difference of two paired proportions (other − reference).

    Agresti & Min (2005): add ½ to each of the four cells, then use the Wald interval of the
    paired difference, d ± z·√([p_lost + p_gained − d²] / n'), with n' = n + 2. The added ½s keep
    the interval from collapsing to a point when no item changed (e.g. 20 identical results
    still leave ±9 points of doubt) and give close to nominal coverage at small n.
    """
    adjusted_n = counts.n + 2
    p_lost = (counts.lost + 0.5) / adjusted_n
    p_gained = (counts.gained + 0.5) / adjusted_n
    difference = p_gained - p_lost
    half_width = z_value(confidence) * math.sqrt((p_lost + p_gained - difference**2) / adjusted_n)
    return max(-1.0, difference - half_width), min(1.0, difference + half_width)


@dataclass(frozen=True)
class BootstrapResult:
    difference: float  # mean of (other − reference) over items
    low: float
    high: float
    p_value: float


def paired_bootstrap(
    reference: Sequence[float], other: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> BootstrapResult:
    """Paired bootstrap of the mean per-item difference (for graded scores with partial credit).

    Items are resampled with replacement, keeping each item's two scores together. The interval
    is the percentile interval of the resampled means. The two-sided p-value is
    min(1, 2·(m + 1)/(B + 1)), m = the smaller of the counts of the B resampled means that are
    ≤ 0 and ≥ 0 (the +1s keep it from being reported as exactly 0). Seeded: same input, same
    answer.
    """
    differences = np.asarray(other, dtype=float) - np.asarray(reference, dtype=float)
    n = len(differences)
    if n == 0:
        raise ValueError("a paired bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [  # in chunks: B × n indices at once would be large for big suites
            differences[rng.integers(0, n, size=(size, n))].mean(axis=1)
            for size in _chunk_sizes(resamples, max(1, 2_000_000 // n))
        ]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    far_side = min(int((means <= 0).sum()), int((means >= 0).sum()))
    return BootstrapResult(
        float(differences.mean()), float(low), float(high), min(1.0, 2 * (far_side + 1) / (resamples + 1))
    )


def _chunk_sizes(total: int, chunk: int) -> list[int]:
    return [min(chunk, total - start) for start in range(0, total, chunk)]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (larger is better on both),
    ordered by the first coordinate."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_second = [], -math.inf
    for i in order:
        if points[i][1] > best_second:
            front.append(i)
            best_second = points[i][1]
    return sorted(front, key=lambda i: points[i][0])
