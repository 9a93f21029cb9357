"""The per-item drill-down: items that flipped between the start and the final checkpoint, with
the model's output at both and, beside each, the answer the scorer parsed out of it, so a change
in the numbers can be read off actual answers (and a scorer's misreading seen)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd

from plasticity_bench.harness.evaluation.runs import slice_column
from plasticity_bench.reports.data import RunData

SHOWN_PER_DIRECTION = 8  # per family and direction; the rest is counted, not shown
LOST, GAINED = "right → wrong", "wrong → right"


def flipped_items(run: RunData) -> pd.DataFrame:
    """One row per item whose correctness differs between the start and the final checkpoint."""
    records = run.records.assign(slice=slice_column(run.records))
    # `parsed`: the scorer's answer (records' `answer`; the items' `answer` is the expected one)
    records = records.rename(columns={"answer": "parsed"}) if "answer" in records else records.assign(parsed="")
    start = records[records.step == run.start_step].set_index("item_id")
    final = records[records.step == run.final_step].set_index("item_id")
    shown = ["output", "parsed", "correct"]
    both = start[["family", "slice", *shown]].join(final[shown], rsuffix="_final")
    flips = both[both.correct != both.correct_final]
    prompts = run.items.set_index("id")[["prompt", "answer"]]
    flips = flips.join(prompts).assign(direction=[LOST if c else GAINED for c in flips.correct])
    # Take slices in turn (1st of each, then 2nd of each…) so a capped list shows every slice.
    turn = flips.groupby(["direction", "slice"]).cumcount()
    return flips.assign(turn=turn).sort_values(["turn", "slice"]).drop(columns="turn").reset_index()


def _output(text: str, correct: bool) -> str:
    return f"<code class='{'ok' if correct else 'bad'}'>{html.escape(text) or '<i>(empty)</i>'}</code>"


def _parsed(answer: str) -> str:
    """The scorer's parsed answer, beside the output it came from."""
    shown = html.escape(answer) if answer else "<i>(nothing parsed)</i>"
    return f"<div class=parsed>parsed: <code class=answer>{shown}</code></div>"


def flips_table_html(flips: pd.DataFrame, start_step: int, final_step: int) -> str:
    shown = flips.head(SHOWN_PER_DIRECTION)
    rows = "".join(
        f"<tr><td>{html.escape(r.slice)}</td><td><code>{html.escape(r.prompt.strip())}</code></td><td><code>{html.escape(r.answer)}</code></td>"
        f"<td>{_output(r.output, r.correct)}{_parsed(r.parsed)}</td>"
        f"<td>{_output(r.output_final, r.correct_final)}{_parsed(r.parsed_final)}</td></tr>"
        for r in shown.itertuples()
    )
    more = len(flips) - len(shown)
    rest = f"<p class=note>… and {more} more not shown.</p>" if more else ""
    return (
        "<table class=items><thead><tr><th>slice</th><th>prompt</th><th>expected</th>"
        f"<th>output at step {start_step}</th>"
        f"<th>output at step {final_step}</th></tr></thead><tbody>{rows}</tbody></table>{rest}"
    )


def flips_html(runs: Sequence[RunData]) -> str:
    parts = []
    for run in runs:
        flips = flipped_items(run)
        parts.append(f"<h3>{html.escape(run.label)}: step {run.start_step} → step {run.final_step}</h3>")
        for family in run.family_order():
            in_family = flips[flips.family == family]
            lost, gained = in_family[in_family.direction == LOST], in_family[in_family.direction == GAINED]
            sections = "".join(
                f"<h4>{direction} ({len(group)})</h4>{flips_table_html(group, run.start_step, run.final_step)}"
                for direction, group in ((LOST, lost), (GAINED, gained))
                if len(group)
            )
            parts.append(
                f"<details class=flips><summary><b>{html.escape(family)}</b>: "
                f"<span class={'down' if len(lost) else 'none'}>{len(lost)} {LOST}</span>, "
                f"<span class={'up' if len(gained) else 'none'}>{len(gained)} {GAINED}</span></summary>"
                f"{sections or '<p class=note>No item changed.</p>'}</details>"
            )
    return "".join(parts)
