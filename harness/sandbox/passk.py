"""pass@k and program-synthesis reliability.

pass@k is the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models
Trained on Code"): with n samples of which c are correct, the probability that at least one of
k samples drawn without replacement is correct is ``1 - C(n-c, k) / C(n, k)``. The binomials
overflow floats for realistic n, so it is evaluated as the product
``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (the same rearrangement the paper's reference code uses).

``reliability`` is the share of attempts whose program ran to completion, right or wrong
(``PASS`` or ``WRONG_ANSWER``): the "program-synthesis reliability" the RPS author tracks to see
whether post-training breaks a model's ability to write code that runs at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .results import ExecutionResult

__all__ = ["mean_pass_at_k", "pass_at_k", "reliability"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    failure_probability = 1.0
    for i in range(n - c + 1, n + 1):
        failure_probability *= 1.0 - k / i
    return 1.0 - failure_probability


def mean_pass_at_k(samples_and_correct: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems, each given as ``(n, c)``; ``n`` may differ between problems."""
    scores = [pass_at_k(n, c, k) for n, c in samples_and_correct]
    if not scores:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return sum(scores) / len(scores)


def reliability(results: Sequence[ExecutionResult]) -> float:
    """Share of attempts whose program ran without error (PASS or WRONG_ANSWER)."""
    if not results:
        raise ValueError("reliability needs at least one result")
    return sum(result.ran_without_error for result in results) / len(results)
