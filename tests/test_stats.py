"""plasticity_bench.harness.evaluation.stats against independent implementations (scipy, statsmodels) and by
simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest, bootstrap
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from plasticity_bench.harness.evaluation.stats import (
    PairedCounts,
    mcnemar_exact_p,
    mcnemar_midp,
    paired_bootstrap,
    paired_difference_interval,
    pareto_front,
    wilson_interval,
)

DISCORDANT = [(0, 0), (0, 1), (1, 0), (3, 3), (2, 9), (9, 2), (0, 12), (17, 40), (40, 0), (150, 170), (600, 540)]


@pytest.mark.parametrize("lost,gained", DISCORDANT)
def test_exact_mcnemar_matches_scipy_and_statsmodels(lost: int, gained: int) -> None:
    ours = mcnemar_exact_p(lost, gained)
    table = [[50, lost], [gained, 50]]
    assert ours == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9, abs=1e-300)
    if lost + gained:
        assert ours == pytest.approx(binomtest(min(lost, gained), lost + gained, 0.5).pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("lost,gained", DISCORDANT)
def test_mid_p_mcnemar_matches_its_definition_via_scipy(lost: int, gained: int) -> None:
    n, k = lost + gained, min(lost, gained)
    expected = 1.0 if n == 0 else min(1.0, 2 * binom.cdf(k, n, 0.5) - binom.pmf(k, n, 0.5))
    assert mcnemar_midp(lost, gained) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_midp(lost, gained) <= mcnemar_exact_p(lost, gained)


@pytest.mark.parametrize("successes,n", [(0, 4), (4, 4), (1, 20), (57, 100), (399, 400)])
def test_wilson_interval_matches_statsmodels(successes: int, n: int) -> None:
    low, high = wilson_interval(successes, n)
    expected = proportion_confint(successes, n, alpha=0.05, method="wilson")
    assert (low, high) == pytest.approx(expected, abs=1e-12)


def test_paired_counts_from_outcomes() -> None:
    counts = PairedCounts.from_outcomes([True, True, False, False, True], [True, False, True, False, False])
    assert (counts.both, counts.lost, counts.gained, counts.neither, counts.n) == (1, 2, 1, 1, 5)
    assert counts.difference == pytest.approx(-0.2)


def test_paired_interval_hand_computed_and_never_a_point() -> None:
    # Agresti–Min by hand: n' = 22, p_lost = 1.5/22, p_gained = 0.5/22, d = -1/22.
    low, high = paired_difference_interval(PairedCounts(10, 1, 0, 9))
    d, var = -1 / 22, (2 / 22 - (1 / 22) ** 2) / 22
    assert (low, high) == pytest.approx((d - 1.959964 * var**0.5, d + 1.959964 * var**0.5), abs=1e-6)
    same_low, same_high = paired_difference_interval(PairedCounts(12, 0, 0, 8))  # 20 identical results
    assert same_low < -0.08 and same_high > 0.08


def test_paired_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    n, p_lost, p_gained, trials = 60, 0.08, 0.15, 3000
    cells = rng.multinomial(n, [0.5, p_lost, p_gained, 1 - 0.5 - p_lost - p_gained], size=trials)
    covered = 0
    for both, lost, gained, neither in cells:
        low, high = paired_difference_interval(PairedCounts(both, lost, gained, neither))
        covered += low <= p_gained - p_lost <= high
    assert 0.93 <= covered / trials <= 0.975


def test_paired_bootstrap_agrees_with_scipy() -> None:
    rng = np.random.default_rng(2)
    reference = rng.random(300).round(1)
    other = np.clip(reference - 0.05 + rng.normal(0, 0.2, 300), 0, 1)
    ours = paired_bootstrap(reference, other)
    theirs = bootstrap(
        (reference, other),
        lambda a, b: np.mean(b - a),
        paired=True,
        method="percentile",
        n_resamples=10_000,
        random_state=3,
    ).confidence_interval
    assert ours.difference == pytest.approx(float(np.mean(other - reference)))
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=0.004)
    assert ours.p_value < 0.01
    assert paired_bootstrap(reference, reference).p_value == 1.0
    assert paired_bootstrap(reference, other) == ours  # seeded


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(0, 0), (10, -5), (5, -10), (20, -20), (20, -25), (-1, 1)]
    assert pareto_front(points) == [5, 0, 1, 3]
