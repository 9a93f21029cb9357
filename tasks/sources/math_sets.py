"""`kind: champ`: CHAMP's 270 competition-math problems, shipped in the `champ-dataset` wheel
(no download), with their final answers and worked solutions: an in-domain math set for real
models that works offline."""

from __future__ import annotations

from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.sources import SOURCES, Source, item_id


@SOURCES.register("champ", "CHAMP competition math (champ-dataset package, offline)")
class Champ(Source):
    optional = ("version",)
    default_scorer = "math_verify"
    meta_keys = frozenset({"category", "champ_id"})
    requires = ("champ-dataset",)
    default_max_new_tokens = 1024

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        import champ_dataset

        dataset = champ_dataset.load(str(self.options.get("version", "v0")))
        items = []
        for key in sorted(dataset.problems):
            problem = dataset.problems[key]
            solution = " ".join(step.text for step in problem.solution.steps)
            items.append(
                Item(
                    item_id(name, split, key),
                    family,
                    name,
                    split,
                    problem.text,
                    solution,
                    problem.answer,
                    {"category": problem.category, "champ_id": key},
                )
            )
        return items
