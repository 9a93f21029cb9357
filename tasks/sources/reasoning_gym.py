"""`kind: reasoning_gym`: a reasoning-gym generator by name, at its own prompts, scored by its
own `score_answer` (scorer `reasoning_gym`).

    source: {kind: reasoning_gym, dataset: propositional_logic, n: 200, config: {}}
"""

from __future__ import annotations

import json
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.sources import SOURCES, Source, item_id


@SOURCES.register("reasoning_gym", "a reasoning-gym generator by name, with its own prompts and scorer")
class ReasoningGym(Source):
    required = ("dataset",)
    optional = ("config",)
    default_scorer = "reasoning_gym"
    meta_keys = frozenset({"rg_dataset", "rg_config", "rg_entry"})
    requires = ("reasoning-gym",)

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        config = self.options.get("config") or {}
        if not isinstance(config, dict):
            raise BenchError(f"{self.where}: config must be a mapping of the generator's settings")
        dataset = make_dataset(str(self.options["dataset"]), int(self.options.get("n", 100)), seed, config, self.where)
        items = []
        for index, entry in enumerate(dataset):
            plain = json.loads(json.dumps(entry, default=str))
            key = f"{index}:{plain['question']}"
            meta = {"rg_dataset": self.options["dataset"], "rg_config": config, "rg_entry": plain}
            items.append(
                Item(
                    item_id(name, split, key),
                    family,
                    name,
                    split,
                    plain["question"],
                    str(plain["answer"]),
                    str(plain["answer"]),
                    meta,
                )
            )
        return items


def make_dataset(dataset: str, size: int, seed: int, config: dict[str, Any], where: str = "reasoning_gym") -> Any:
    import reasoning_gym

    try:
        return reasoning_gym.create_dataset(dataset, size=size, seed=seed, **config)
    except Exception as error:
        raise BenchError(
            f"{where}: reasoning-gym cannot make {dataset!r} ({type(error).__name__}: {str(error)[:150]})"
        ) from None
