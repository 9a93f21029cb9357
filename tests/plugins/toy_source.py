"""A source kind defined outside the project: one file, one registration line (the decorator).

`source: {kind: toy, count: 6, start: 10}` makes `count` additions "What is A + B?" from its own
options, scored by the shipped `numeric` scorer. tests/test_extension_points.py runs it through
`bench run` with PLASTICITY_BENCH_PLUGINS=tests.plugins.toy_source,...
"""

from __future__ import annotations

from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.sources import SOURCES, Source, item_id


@SOURCES.register("toy", "additions made from the set's own options: count, start")
class ToyAdditions(Source):
    required = ("count",)
    optional = ("start",)
    default_scorer = "numeric"
    default_max_new_tokens = 16  # an answer is a few tokens (and the smoke organism holds 128 positions)

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        start = int(self.options.get("start", 1))
        items = []
        for k in range(int(self.options["count"])):
            a, b = start + k, 2 * k + 3
            prompt = f"What is {a} + {b}?"
            items.append(Item(item_id(name, split, prompt), family, name, split, prompt, str(a + b), str(a + b), {}))
        return items
