"""Scorers by name, for tasks built on real benchmarks. Importing this package registers every
scorer (one module each) in SCORERS; `get_scorer(name)` returns a new instance."""

from plasticity_bench.tasks.scorers import choice, exact, mbpp, numeric, programs, reasoning_gym, symbolic, task  # noqa: F401  (registration side effects)
from plasticity_bench.tasks.scorers.base import SCORERS, Scorer, get_scorer

__all__ = ["SCORERS", "Scorer", "get_scorer"]
