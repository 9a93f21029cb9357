"""The paired change of accuracy between two results on the same items: one computation for the
gate and `bench compare` (harness/evaluation/gate.py) and for the report's change column
(reports/tables.py), so the three cannot disagree on a change, its interval or which items flipped.

Both results are pass/fail outcomes of the same items in the same order. The interval is the paired
one (stats.paired_difference_interval, Agresti–Min): it uses the items that flipped, not two
independent proportions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from plasticity_bench.harness.evaluation.stats import PairedCounts, paired_difference_interval

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedChange:
    """Second − first accuracy on paired items, in points, with its interval and the flipped items."""

    n: int
    change: float
    low: float
    high: float
    lost: int  # right in the first, wrong in the second
    gained: int  # wrong in the first, right in the second

    @property
    def significant(self) -> bool:
        """The interval excludes "no change"."""
        return self.low > 0 or self.high < 0


def paired_change(first: Sequence[bool], second: Sequence[bool], confidence: float = CONFIDENCE) -> PairedChange:
    """The paired change from `first` to `second` (outcomes of the same items, in the same order)."""
    counts = PairedCounts.from_outcomes(first, second)
    low, high = paired_difference_interval(counts, confidence)
    return PairedChange(counts.n, 100 * counts.difference, 100 * low, 100 * high, counts.lost, counts.gained)
