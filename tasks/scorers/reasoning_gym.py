"""`reasoning_gym`: reasoning-gym's own `score_answer` for items of a `kind: reasoning_gym` source."""

from __future__ import annotations

from typing import Any

from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.scorers.base import SCORERS, Scorer


@SCORERS.register("reasoning_gym", "reasoning-gym's own score_answer (partial credit where it gives it)")
class ReasoningGymScorer(Scorer):
    needs_meta = frozenset({"rg_dataset", "rg_entry"})
    requires = ("reasoning-gym",)

    def __init__(self) -> None:
        self.datasets: dict[str, Any] = {}

    def check(self, item: Item, output: str) -> Score:
        import reasoning_gym

        name = item.meta["rg_dataset"]
        if name not in self.datasets:  # score_answer needs an instance; one per generator suffices
            config = item.meta.get("rg_config") or {}
            self.datasets[name] = reasoning_gym.create_dataset(name, size=1, seed=0, **config)
        answer = output.strip()  # what reasoning-gym's score_answer is given
        value = float(self.datasets[name].score_answer(answer, item.meta["rg_entry"]) or 0.0)
        return Score(value, value >= 1.0, "correct" if value >= 1.0 else "wrong_answer", answer)
