"""The report's numbers (per family and slice: start, final, best, paired change; per run: cost
and gain vs forgetting) and the HTML tables that show them."""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd

from harness.evaluation.scoring import ALL
from harness.evaluation.stats import PairedCounts, paired_difference_interval
from reports.data import RunData, display_name, family_order

STAGE_TIMES = ("train", "generate", "score")


def headline_rows(aggregates: pd.DataFrame, target_family: str, families: list[str]) -> pd.DataFrame:
    """Every family as a whole, plus each slice of the in-domain family if it has several (easy
    vs hard matters), in report order: in-domain family first, its whole before its slices."""
    chosen = aggregates.slice == ALL
    in_domain_slices = (aggregates.family == target_family) & (aggregates.slice != ALL)
    if aggregates[in_domain_slices].slice.nunique() > 1:
        chosen |= in_domain_slices
    rows = aggregates[chosen]
    family_rank = {family: i for i, family in enumerate(family_order(aggregates, families))}
    ranked = rows.assign(family_rank=rows.family.map(family_rank), is_slice=rows.slice != ALL)
    return ranked.sort_values(["family_rank", "is_slice", "slice", "step"], ignore_index=True).drop(columns=["family_rank", "is_slice"])


def change_table(run: RunData) -> pd.DataFrame:
    """Per family/slice: start, final and best score, and final − start with a 95% interval.

    Start and final are the same items, so the interval is the paired one
    (stats.paired_difference_interval, Agresti–Min): it uses the items that flipped.
    `significant` means the interval excludes 0.
    """
    records = run.records.assign(slice=run.records.task + "/" + run.records.level)
    start = records[records.step == run.start_step].set_index("item_id").sort_index()
    final = records[records.step == run.final_step].set_index("item_id").loc[start.index]
    rows = []
    for (family, slice_), group in headline_rows(run.aggregates, run.target_family, run.family_order()).groupby(["family", "slice"], sort=False):
        first, last = group.iloc[0], group.iloc[-1]
        in_group = (start.family == family) & ((start.slice == slice_) | (slice_ == ALL))
        counts = PairedCounts.from_outcomes(start.correct[in_group], final.correct[in_group])
        low, high = paired_difference_interval(counts)
        best = group.loc[group.score.idxmax()]
        rows.append({
            "family": family, "slice": slice_, "n": int(last.n),
            "start": float(first.score), "final": float(last.score), "best": float(best.score), "best_step": int(best.step),
            "change": float(last.score - first.score), "change_lo": 100 * low, "change_hi": 100 * high,
            "significant": low > 0 or high < 0, "lost": counts.lost, "gained": counts.gained,
        })
    return pd.DataFrame(rows)


def gain_and_forgetting(run: RunData) -> pd.DataFrame:
    """Per checkpoint: the target slice's change vs start (gain) and the mean change of the
    out-of-domain families vs start (each family weighs the same, whatever its size)."""
    agg = run.aggregates
    target = agg[(agg.family == run.target_family) & (agg.slice == run.target_slice)].set_index("step").score.sort_index()
    whole = agg[agg.slice == ALL].pivot(index="step", columns="family", values="score").sort_index()
    ood = whole[run.out_of_domain_families]
    return pd.DataFrame({
        "step": target.index, "gain": (target - target.iloc[0]).to_numpy(),
        "ood_change": (ood - ood.iloc[0]).mean(axis=1).to_numpy(),
    })


def final_kl(run: RunData) -> float | None:
    """KL(π₀‖π) at the run's last checkpoint, or None when the run has no kl_to_start.parquet."""
    return None if run.kl is None or not len(run.kl) else float(run.kl.sort_values("step").kl.iloc[-1])


def final_kl_text(run: RunData) -> str:
    value = final_kl(run)
    return "–" if value is None else f"{value:.3g}"


def stage_seconds(run: RunData) -> dict[str, float | None]:
    stages = run.meta.get("stages", {})
    return {name: stages.get(name, {}).get("seconds") for name in STAGE_TIMES}


# ---------------------------------------------------------------- HTML


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _change_class(low: float, high: float) -> str:
    return "up" if low > 0 else "down" if high < 0 else ""


def interval_bar(change: float, low: float, high: float, scale: float) -> str:
    """A tiny inline forest plot: the interval as a bar, the change as a dot, 0 as a tick."""
    width, height = 240, 14

    def x(value: float) -> float:
        return width / 2 + (width / 2 - 4) * max(-1.0, min(1.0, value / scale))

    colour = {"up": "#1a7f37", "down": "#c62828"}.get(_change_class(low, high), "#777")
    return (f"<svg class=bar width={width} height={height} viewBox='0 0 {width} {height}' role=img aria-label='change {change:+.1f}'>"
            f"<line x1={width / 2} x2={width / 2} y1=0 y2={height} stroke='#bbb'/>"
            f"<line x1={x(low):.1f} x2={x(high):.1f} y1={height / 2} y2={height / 2} stroke='{colour}' stroke-width=3 stroke-linecap=round/>"
            f"<circle cx={x(change):.1f} cy={height / 2} r=3.5 fill='{colour}' stroke=white/></svg>")


def bar_scale(tables: Sequence[pd.DataFrame]) -> float:
    """One scale for every bar in a table: the largest |interval end|, rounded up to 10/25/50/100."""
    largest = max((max(abs(t.change_lo).max(), abs(t.change_hi).max()) for t in tables), default=0.0)
    return next((s for s in (10.0, 25.0, 50.0) if largest <= s), 100.0)


def results_table_html(runs: Sequence[RunData], tables: Sequence[pd.DataFrame]) -> str:
    """Family × method: one group of rows per family/slice, one row per run."""
    scale = bar_scale(tables)
    head = ("<tr><th>method</th><th>n</th><th>start</th><th>final</th><th>best</th><th>at step</th>"
            f"<th>change</th><th>95% CI</th><th title='items right→wrong / wrong→right'>lost / gained</th>"
            f"<th class=scale>−{scale:.0f} · 0 · +{scale:.0f}</th></tr>")
    body = []
    keys = tables[0][["family", "slice"]].itertuples(index=False)
    for family, slice_ in keys:
        target = family == runs[0].target_family and slice_ == runs[0].target_slice
        name = display_name(family, slice_)
        tag = " <span class=tag>in-domain target</span>" if target else " <span class='tag ood'>out of domain</span>" if family != runs[0].target_family else ""
        body.append(f"<tr class=group><th colspan=10>{html.escape(name)}{tag}</th></tr>")
        for run, table in zip(runs, tables):
            r = table[(table.family == family) & (table.slice == slice_)].iloc[0]
            body.append(
                f"<tr data-family='{html.escape(family)}' data-slice='{html.escape(slice_)}' data-method='{html.escape(run.label)}'>"
                f"<td>{html.escape(run.label)}</td><td>{r.n}</td><td>{r.start:.1f}</td><td>{r.final:.1f}</td>"
                f"<td>{r.best:.1f}</td><td>{r.best_step}</td>"
                f"<td class='{_change_class(r.change_lo, r.change_hi)}'>{r.change:+.1f}</td>"
                f"<td>[{r.change_lo:+.1f}, {r.change_hi:+.1f}]</td><td>{r.lost} / {r.gained}</td>"
                f"<td>{interval_bar(r.change, r.change_lo, r.change_hi, scale)}</td></tr>"
            )
    return f"<table class='results numbers'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def summary_table_html(runs: Sequence[RunData], tables: Sequence[pd.DataFrame]) -> str:
    """One row per run: the in-domain gain, the mean out-of-domain change, and what it cost."""
    head = ("<tr><th>method</th><th>in-domain gain</th><th>95% CI</th><th>out-of-domain change</th>"
            "<th title='KL(π₀‖π) at the final checkpoint, nats per sequence, on the hard training prompts'>KL to start</th>"
            "<th>training steps</th><th>examples seen</th><th>train</th><th>generate</th><th>score</th><th>total time</th></tr>")
    body = []
    for run, table in zip(runs, tables):
        target = table[(table.family == run.target_family) & (table.slice == run.target_slice)].iloc[0]
        ood = gain_and_forgetting(run).ood_change.iloc[-1]
        last = run.checkpoints[-1] if run.checkpoints else None
        seconds = stage_seconds(run)
        known = [s for s in seconds.values() if s is not None]
        body.append(
            f"<tr data-method='{html.escape(run.label)}'><td>{html.escape(run.label)}</td>"
            f"<td class='{_change_class(target.change_lo, target.change_hi)}'>{target.change:+.1f}</td>"
            f"<td>[{target.change_lo:+.1f}, {target.change_hi:+.1f}]</td>"
            f"<td>{ood:+.1f}</td><td>{final_kl_text(run)}</td>"
            f"<td>{last.step if last else '–'}</td><td>{f'{last.examples_seen:,}' if last else '–'}</td>"
            + "".join(f"<td>{_duration(s)}</td>" for s in seconds.values())
            + f"<td>{_duration(sum(known) if known else None)}</td></tr>"
        )
    return f"<table class='summary numbers'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"

