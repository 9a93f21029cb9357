"""Writes organism_arith.jsonl: the first 40 chain_sum/easy items of the micro suite's evaluation
set, in lm-eval's terms. Shipped pre-made (lm-eval reads the file; nothing is generated at run
time); re-run `python tasks/lmeval/make_organism_arith.py` only if the micro suite changes.

The same items as the harness's own chain_sum/easy slice, so lm-eval's score on them can be
checked against the harness's scorer (tests/test_lmeval.py does).
"""

from __future__ import annotations

import json
from pathlib import Path

import plasticity_bench.tasks  # noqa: F401  (registers the tasks)
from plasticity_bench.tasks.arithmetic import ANSWER_MARK
from plasticity_bench.tasks.suites import load_suite
from plasticity_bench.tasks.suites.items import load_eval_items

N_ITEMS = 40
OUT = Path(__file__).with_name("organism_arith.jsonl")


def to_record(index: int, item) -> dict:
    answer = int(item.answer)
    # four candidate answers around the right one; where the right one sits varies with the index
    shift = index % 4
    offsets = [-1, 0, 1, 2][shift:] + [-1, 0, 1, 2][:shift]
    choices = [str(answer + offset) for offset in offsets]
    return {
        "id": item.id,
        "prompt": item.prompt,
        "target": item.target,
        "answer": item.answer,
        "steps": item.target.split(ANSWER_MARK)[0],
        "choices": choices,
        "label": choices.index(item.answer),
    }


def main() -> None:
    chosen = [
        item for item in load_eval_items(load_suite("micro")).items if (item.task, item.level) == ("chain_sum", "easy")
    ][:N_ITEMS]
    OUT.write_text("".join(json.dumps(to_record(i, item)) + "\n" for i, item in enumerate(chosen)))
    print(f"wrote {len(chosen)} items to {OUT}")


if __name__ == "__main__":
    main()
