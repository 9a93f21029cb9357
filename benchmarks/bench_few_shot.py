"""What the few-shot recovery probe says per method: one Markdown row per run folder and probed family.

    python benchmarks/bench_few_shot.py RUN [RUN ...]

For each run (named by its method from run.json; a `bench eval` folder by its folder name), between its
first and last scored checkpoint: the probed items' zero-shot and few-shot scores, the examples' effect
on the starting model, the points the examples recover (few-shot change − zero-shot change, paired 95%
bootstrap interval) and the share of the zero-shot drop that is (harness/evaluation/few_shot.py,
`recovery`; docs/few-shot.md).
¹: the examples make the starting model worse (it cannot use them): the points are an artefact of its floor.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from plasticity_bench.harness.evaluation.few_shot import read_probe, recovery

HEADER = (
    "| run | family | k | items | zero-shot start → final | k-shot start → final | examples at the start "
    "| recovered (points) | recovered share |\n|---|---|---|---|---|---|---|---|---|"
)


def rows(root: Path) -> list[str]:
    records = read_probe(root)
    if records is None:
        return [f"| {root.name} | (no few-shot probe) | | | | | | | |"]
    meta = json.loads((root / "run.json").read_text())
    method = meta.get("method", "eval")
    label = root.name if method == "eval" else method + (" + LoRA" if meta.get("lora") else "")
    steps = sorted(int(s) for s in records.step.unique())
    table = recovery(records, steps[0], steps[-1])
    found = []
    for row in table.itertuples():
        share = "–" if math.isnan(row.recovered_share) else f"{100 * row.recovered_share:.0f} %"
        found.append(
            f"| {label} | {row.family} | {row.shots} "
            f"| {row.n} "
            f"| {row.zero_start:.1f} → {row.zero_final:.1f} ({row.zero_change:+.1f}) "
            f"| {row.few_start:.1f} → {row.few_final:.1f} ({row.few_change:+.1f}) "
            f"| {row.start_effect:+.1f} [{row.start_effect_low:+.1f}, {row.start_effect_high:+.1f}] "
            f"| {row.recovered:+.1f} [{row.recovered_low:+.1f}, {row.recovered_high:+.1f}]{'' if row.usable else ' ¹'} "
            f"| {share} |"
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print(HEADER)
    for root in args.runs:
        print("\n".join(rows(root)))


if __name__ == "__main__":
    main()
