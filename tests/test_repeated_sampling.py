"""Repeated sampling: avg@n, pass@n and standard errors clustered by item (Miller 2024), checked
against an independent computation (statsmodels' cluster-robust OLS), and n = 1 reducing to the
binomial error every run reported before."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from plasticity_bench.harness.evaluation.scoring import aggregate, clustered_stderr


def records(correct: np.ndarray) -> pd.DataFrame:
    """items × samples correctness → records of one step, family and slice."""
    items, samples = correct.shape
    rows = [
        {
            "item_id": f"i{i:03d}",
            "step": 0,
            "family": "math",
            "task": "set",
            "level": "test",
            "output": "",
            "score": float(correct[i, k]),
            "correct": bool(correct[i, k]),
            "outcome": "",
            "sample": k,
        }
        for i in range(items)
        for k in range(samples)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("samples", [2, 4, 16])
def test_clustered_error_equals_statsmodels_cluster_robust_ols(samples: int) -> None:
    rng = np.random.default_rng(samples)
    difficulty = rng.beta(0.3, 0.3, size=60)  # items differ a lot: the samples of one item are strongly correlated
    correct = rng.uniform(size=(60, samples)) < difficulty[:, None]
    row = aggregate(records(correct)).query("slice == 'all'").iloc[0]
    y = correct.reshape(-1).astype(float)
    groups = np.repeat(np.arange(60), samples)
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False})
    assert row.score == pytest.approx(100 * y.mean())
    assert row.stderr == pytest.approx(100 * fit.bse[0], rel=1e-9)
    naive = 100 * math.sqrt(y.mean() * (1 - y.mean()) / y.size)  # treating samples as independent understates it
    assert row.stderr > naive
    expected_pass = np.mean(
        [1.0 - math.comb(samples - c, samples) / math.comb(samples, samples) for c in correct.sum(axis=1)]
    )
    assert row.pass_at_n == pytest.approx(100 * expected_pass) and row.samples == samples


def test_one_sample_per_item_is_the_binomial_error() -> None:
    rng = np.random.default_rng(0)
    correct = rng.uniform(size=(200, 1)) < 0.3
    row = aggregate(records(correct)).query("slice == 'all'").iloc[0]
    p = correct.mean()
    assert row.stderr == 100 * math.sqrt(p * (1 - p) / 200)  # exactly the formula runs always used
    assert row.score == 100 * p and row.pass_at_n == pytest.approx(100 * p)
    means = rng.uniform(size=50)
    assert clustered_stderr(means) == pytest.approx(math.sqrt(((means - means.mean()) ** 2).sum()) / 50)
    assert math.isnan(clustered_stderr(np.array([1.0])))
