"""The report's numbers (per family and slice: start, final, best, paired change; per run: cost
and gain vs forgetting) and the HTML tables that show them."""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd

from plasticity_bench.harness.evaluation.change import paired_change
from plasticity_bench.harness.evaluation.roles import HELD_OUT, group_role
from plasticity_bench.harness.evaluation.runs import slice_column
from plasticity_bench.harness.evaluation.scoring import ALL
from plasticity_bench.reports.data import RunData, display_name, family_order

STAGE_TIMES = ("train", "generate", "score")


def headline_rows(aggregates: pd.DataFrame, target_family: str, families: list[str]) -> pd.DataFrame:
    """Every family as a whole, plus each of its slices when it has several (a held-out family's
    slices can move apart as the target's easy and hard ones do), in report order: in-domain family
    first, each family's whole before its slices."""
    slices = aggregates[aggregates.slice != ALL]
    split = slices.groupby("family").slice.nunique()
    chosen = (aggregates.slice == ALL) | ((aggregates.slice != ALL) & aggregates.family.map(split).gt(1))
    rows = aggregates[chosen]
    family_rank = {family: i for i, family in enumerate(family_order(aggregates, families))}
    ranked = rows.assign(family_rank=rows.family.map(family_rank), is_slice=rows.slice != ALL)
    return ranked.sort_values(["family_rank", "is_slice", "slice", "step"], ignore_index=True).drop(
        columns=["family_rank", "is_slice"]
    )


def change_table(run: RunData) -> pd.DataFrame:
    """Per family/slice: start, final and best score, and final − start with a 95% interval.

    Start and final are the same items, so the interval is the paired one the gate uses
    (change.paired_change, Agresti–Min): it uses the items that flipped. `significant` means the
    interval excludes 0. The change itself is final − start of the scores shown (avg@n).
    """
    records = run.records.assign(slice=slice_column(run.records))
    start = records[records.step == run.start_step].set_index("item_id").sort_index()
    final = records[records.step == run.final_step].set_index("item_id").loc[start.index]
    rows = []
    for (family, slice_), group in headline_rows(run.aggregates, run.target_family, run.family_order()).groupby(
        ["family", "slice"], sort=False
    ):
        first, last = group.iloc[0], group.iloc[-1]
        in_group = (start.family == family) & ((start.slice == slice_) | (slice_ == ALL))
        paired = paired_change(start.correct[in_group], final.correct[in_group])
        best = group.loc[group.score.idxmax()]
        rows.append(
            {
                "family": family,
                "slice": slice_,
                "n": int(last.n),
                "start": float(first.score),
                "final": float(last.score),
                "best": float(best.score),
                "best_step": int(best.step),
                "change": float(last.score - first.score),
                "change_lo": paired.low,
                "change_hi": paired.high,
                "significant": paired.significant,
                "lost": paired.lost,
                "gained": paired.gained,
                **row_role(run, family, slice_),
            }
        )
    return pd.DataFrame(rows)


def row_role(run: RunData, family: str, slice_: str) -> dict[str, object]:
    """A row's role (target, held-out, mixed for a whole family holding both; "" if unrecorded) and
    whether its drop is forgetting: the suite's role decides, in every family (harness/evaluation/roles.py)."""
    slices = [slice_] if slice_ != ALL else run.slices_by_family().get(family, [])
    role = group_role(slices, run.roles)
    return {"role": role, "forgetting": role == HELD_OUT}


def gain_and_forgetting(run: RunData) -> pd.DataFrame:
    """Per checkpoint: the target slice's change vs start (gain), the mean change of the
    out-of-domain (held-out) families vs start (each family weighs the same, whatever its size) and
    the mean change of the held-out sets beside a target (`same_skill_change`; NaN when there are none)."""
    agg = run.aggregates
    target = (
        agg[(agg.family == run.target_family) & (agg.slice == run.target_slice)].set_index("step").score.sort_index()
    )
    whole = agg[agg.slice == ALL].pivot(index="step", columns="family", values="score").sort_index()
    ood = whole[run.out_of_domain_families]
    same_skill = agg[agg.slice.isin(run.same_skill_slices)]
    sliced = same_skill.pivot(index="step", columns="slice", values="score").reindex(target.index)
    return pd.DataFrame(
        {
            "step": target.index,
            "gain": (target - target.iloc[0]).to_numpy(),
            "ood_change": (ood - ood.iloc[0]).mean(axis=1).to_numpy(),
            "same_skill_change": (sliced - sliced.iloc[0]).mean(axis=1).to_numpy(),
        }
    )


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


def _points(change: float) -> str:
    """A change in points, or – when there is nothing to average (no held-out family, say)."""
    return "–" if pd.isna(change) else f"{change:+.1f}"


def _change_class(low: float, high: float) -> str:
    return "up" if low > 0 else "down" if high < 0 else ""


def interval_bar(change: float, low: float, high: float, scale: float) -> str:
    """A tiny inline forest plot: the interval as a bar, the change as a dot, 0 as a tick."""
    width, height = 240, 14

    def x(value: float) -> float:
        return width / 2 + (width / 2 - 4) * max(-1.0, min(1.0, value / scale))

    colour = {"up": "#1a7f37", "down": "#c62828"}.get(_change_class(low, high), "#777")
    return (
        f"<svg class=bar width={width} height={height} viewBox='0 0 {width} {height}' role=img "
        f"aria-label='change {change:+.1f}'>"
        f"<line x1={width / 2} x2={width / 2} y1=0 y2={height} stroke='#bbb'/>"
        f"<line x1={x(low):.1f} x2={x(high):.1f} y1={height / 2} y2={height / 2} stroke='{colour}' stroke-width=3 "
        "stroke-linecap=round/>"
        f"<circle cx={x(change):.1f} cy={height / 2} r=3.5 fill='{colour}' stroke=white/></svg>"
    )


def bar_scale(tables: Sequence[pd.DataFrame]) -> float:
    """One scale for every bar in a table: the largest |interval end|, rounded up to 10/25/50/100."""
    largest = max((max(abs(t.change_lo).max(), abs(t.change_hi).max()) for t in tables), default=0.0)
    return next((s for s in (10.0, 25.0, 50.0) if largest <= s), 100.0)


def results_table_html(runs: Sequence[RunData], tables: Sequence[pd.DataFrame]) -> str:
    """Family × method: one group of rows per family/slice, one row per run."""
    scale = bar_scale(tables)
    head = (
        "<tr><th>method</th><th>n</th><th>start</th><th>final</th><th>best</th><th>at step</th>"
        f"<th>change</th><th>95% CI</th><th title='items right→wrong / wrong→right'>lost / gained</th>"
        f"<th class=scale>−{scale:.0f} · 0 · +{scale:.0f}</th></tr>"
    )
    body = []
    keys = tables[0][["family", "slice"]].itertuples(index=False)
    for family, slice_ in keys:
        target = family == runs[0].target_family and slice_ == runs[0].target_slice
        name = display_name(family, slice_)
        tag = (
            " <span class=tag>in-domain target</span>"
            if target
            else " <span class='tag ood'>held-out: its drop is forgetting</span>"
            if slice_ in runs[0].same_skill_slices
            else " <span class='tag ood'>out of domain</span>"
            if family in runs[0].out_of_domain_families
            else ""
        )
        body.append(f"<tr class=group><th colspan=10>{html.escape(name)}{tag}</th></tr>")
        for run, table in zip(runs, tables):
            r = table[(table.family == family) & (table.slice == slice_)].iloc[0]
            body.append(
                f"<tr data-family='{html.escape(family)}' data-slice='{html.escape(slice_)}' "
                f"data-method='{html.escape(run.label)}'>"
                f"<td>{html.escape(run.label)}</td><td>{r.n}</td><td>{r.start:.1f}</td><td>{r.final:.1f}</td>"
                f"<td>{r.best:.1f}</td><td>{r.best_step}</td>"
                f"<td class='{_change_class(r.change_lo, r.change_hi)}'>{r.change:+.1f}</td>"
                f"<td>[{r.change_lo:+.1f}, {r.change_hi:+.1f}]</td><td>{r.lost} / {r.gained}</td>"
                f"<td>{interval_bar(r.change, r.change_lo, r.change_hi, scale)}</td></tr>"
            )
    return f"<table class='results numbers'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def summary_table_html(runs: Sequence[RunData], tables: Sequence[pd.DataFrame]) -> str:
    """One row per run: the in-domain gain, the mean out-of-domain change, the same-skill change
    (held-out sets beside the target: shown when a run has any), and what it cost."""
    same_skill = any(run.same_skill_slices for run in runs)
    same_skill_head = (
        (
            "<th title='mean change of the held-out sets in the target&#39;s own family (role: held-out): "
            "forgetting of the trained skill'>same-skill change</th>"
        )
        if same_skill
        else ""
    )
    head = (
        "<tr><th>method</th><th>in-domain gain</th><th>95% CI</th><th>out-of-domain change</th>"
        + same_skill_head
        + "<th title='KL(π₀‖π) at the final checkpoint, nats per sequence, on the hard training prompts'>"
        "KL to start</th><th>training steps</th><th>examples seen</th>"
        "<th>train</th><th>generate</th><th>score</th><th>total time</th></tr>"
    )
    body = []
    for run, table in zip(runs, tables):
        target = table[(table.family == run.target_family) & (table.slice == run.target_slice)].iloc[0]
        changes = gain_and_forgetting(run).iloc[-1]
        ood = _points(changes.ood_change)
        same_skill_cell = f"<td>{_points(changes.same_skill_change)}</td>" if same_skill else ""
        last = run.checkpoints[-1] if run.checkpoints else None
        seconds = stage_seconds(run)
        known = [s for s in seconds.values() if s is not None]
        body.append(
            f"<tr data-method='{html.escape(run.label)}'><td>{html.escape(run.label)}</td>"
            f"<td class='{_change_class(target.change_lo, target.change_hi)}'>{target.change:+.1f}</td>"
            f"<td>[{target.change_lo:+.1f}, {target.change_hi:+.1f}]</td>"
            f"<td>{ood}</td>{same_skill_cell}<td>{final_kl_text(run)}</td>"
            f"<td>{last.step if last else '–'}</td><td>{f'{last.examples_seen:,}' if last else '–'}</td>"
            + "".join(f"<td>{_duration(s)}</td>" for s in seconds.values())
            + f"<td>{_duration(sum(known) if known else None)}</td></tr>"
        )
    return f"<table class='summary numbers'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
