"""The run report's few-shot recovery section (harness/evaluation/few_shot.py scores the probe).

Per probed family: the zero-shot and the few-shot score of the same items at every checkpoint, on
one panel (an inline SVG whose curves carry ids, `few-shot-<family>-<zero|few>-<run index>`), and
a table of what the examples recover of each run's zero-shot drop from the start to the final
checkpoint. Nothing is shown for runs without a probe.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from plasticity_bench.harness.evaluation import few_shot as probe
from plasticity_bench.harness.evaluation.runs import families_in_order
from plasticity_bench.harness.evaluation.scoring import ALL
from plasticity_bench.reports.charts import run_colour, svg_markup
from plasticity_bench.reports.data import RunData


def probe_aggregates(run: RunData) -> pd.DataFrame | None:
    path = probe.folder(run.root) / probe.AGGREGATES
    return pd.read_parquet(path) if path.is_file() else None


def few_shot_html(runs: Sequence[RunData]) -> str:
    """The section, or "" when no run has a probe."""
    found = [(index, run, probe_aggregates(run)) for index, run in enumerate(runs)]
    probed = [(index, run, agg) for index, run, agg in found if agg is not None and len(agg)]
    if not probed:
        return ""
    families = families_in_order(sorted({str(f) for _, _, agg in probed for f in agg.family}), runs[0].family_order())
    figure = svg_markup(
        probe_figure(probed, families),
        "few-shot recovery: zero-shot and few-shot accuracy of the probed items vs training step, per family",
    ).replace("<svg", "<svg style='display:block;width:100%;height:auto'", 1)  # the page sizes it
    return (
        "<h2 id=few-shot>Few-shot recovery</h2><p class=note>Forgetting of format or of skill? Each checkpoint answers "
        "the probed items of every held-out family that declares <code>few_shot: k</code> twice: as in the curves "
        "above (zero-shot, solid) and with k solved examples before the question (dashed; the examples are drawn "
        "per item, never the item itself). A drop the examples undo is lost format, one they do not undo is lost "
        "skill. <b>Recovered</b>: few-shot change − zero-shot change from the start to the final checkpoint, in "
        "points with its paired 95% bootstrap interval over items, and as a share of the zero-shot drop "
        "(100%: the examples undo the whole drop, 0%: none of it; – where the zero-shot score did not drop). "
        "Recovered below 0 (its interval too): the examples help less at the end than at the start, so the use of "
        "examples was forgotten as well, and the probe measures both forgettings at once (BENCHMARKS.md §30). "
        "The table compares the start with the final checkpoint; a checkpoint mid-run can give the other verdict "
        "(the curves show each). "
        "<b>Examples at the start</b>: few-shot − zero-shot score of the starting model, with its interval: a model "
        "the examples make worse from the start cannot use them (the default organism was pre-trained on one "
        "example per sequence), so its few-shot curve cannot tell format from skill and no share is given; "
        "<code>--preset in-context</code> starts from an organism that learns from examples.</p>"
        f"<figure style='max-width:{22 * min(len(families), 3)}rem'>{figure}</figure>{recovery_table_html(probed)}"
    )


def probe_figure(probed: Sequence[tuple[int, RunData, pd.DataFrame]], families: Sequence[str]) -> plt.Figure:
    """One panel per family: per run, the zero-shot (solid) and the few-shot (dashed) curve."""
    columns = min(len(families), 3)
    rows = math.ceil(len(families) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    for ax, family in zip(axes.flat, families):
        shots = set()
        for index, _run, agg in probed:
            whole = agg[(agg.family == family) & (agg.slice == ALL)]
            for few, part in ((False, whole[whole.shots == 0]), (True, whole[whole.shots > 0])):
                if not len(part):
                    continue
                series = part.groupby("step").score.mean().sort_index()
                (line,) = ax.plot(
                    series.index, series.to_numpy(), "--" if few else "-", marker="o", ms=3, color=run_colour(index)
                )
                line.set_gid(f"few-shot-{family}-{'few' if few else 'zero'}-{index}")
                shots |= {int(k) for k in part.shots} if few else set()
        ax.set_title(f"{family}: 0 vs {'/'.join(map(str, sorted(shots)))} examples", fontsize=10, loc="left")
        ax.set_ylim(-3, 103)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.25)
        ax.spines[["top", "right"]].set_visible(False)
    axes.flat[0].set_ylabel("accuracy of the probed items (%)")
    for ax in axes.flat[len(families) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=run_colour(index), lw=1.8, label=run.label) for index, run, _ in probed]
    handles += [
        Line2D([], [], color="#555", ls="-", label="zero-shot"),
        Line2D([], [], color="#555", ls="--", label="k solved examples first"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    return fig


def recovery_table_html(probed: Sequence[tuple[int, RunData, pd.DataFrame]]) -> str:
    """Per run and family: both scores' start → final, and what the examples recover."""
    rows = []
    for _, run, _ in probed:
        records = probe.read_probe(run.root)
        if records is None:
            continue
        table = probe.recovery(records, run.start_step, run.final_step)
        order = families_in_order(list(table.family), run.family_order()) if len(table) else []
        for row in table.set_index("family", drop=False).loc[order].itertuples() if order else ():
            share = share_text(row)
            rows.append(
                f"<tr><td>{html.escape(run.label)}</td><td>{html.escape(str(row.family))}</td><td>{row.shots}</td>"
                f"<td>{row.n}</td><td>{row.zero_start:.1f} → {row.zero_final:.1f} ({row.zero_change:+.1f})</td>"
                f"<td>{row.few_start:.1f} → {row.few_final:.1f} ({row.few_change:+.1f})</td>"
                f"<td>{row.start_effect:+.1f} [{row.start_effect_low:+.1f}, {row.start_effect_high:+.1f}]</td>"
                f"<td>{points_text(row)}</td>"
                f"<td class=recovered>{share}</td></tr>"
            )
    return (
        "<table class=few-shot><thead><tr><th>run</th><th>family</th><th>k</th><th>items</th>"
        "<th>zero-shot start → final</th><th>k-shot start → final</th><th>examples at the start</th>"
        "<th>recovered (points)</th>"
        f"<th>recovered share of the drop</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def share_text(row: Any) -> str:
    """The recovered share of the drop (`row`: a row of `recovery`), or why there is none."""
    if not math.isnan(row.recovered_share):
        return f"{100 * row.recovered_share:.0f}%"
    if not row.usable:
        return "– (the examples make the starting model worse: it cannot use them)"
    return "– (no drop)"


def points_text(row: Any) -> str:
    """The recovered points with their interval; none for a model that cannot use the examples (its
    few-shot score sits at a floor, so its change says nothing of the zero-shot drop)."""
    if not row.usable:
        return "–"
    return f"{row.recovered:+.1f} [{row.recovered_low:+.1f}, {row.recovered_high:+.1f}]"
