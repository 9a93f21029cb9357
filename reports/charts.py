"""The report's pictures, as PNG bytes: forgetting curves, gain vs forgetting, KL to start and the
training objectives; and a study's headline figure (one point per arm, with its frontier) as inline SVG."""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from plasticity_bench.harness.evaluation.scoring import ALL  # noqa: E402
from plasticity_bench.harness.evaluation.stats import pareto_front, wilson_interval  # noqa: E402
from plasticity_bench.reports.data import RunData, display_name  # noqa: E402
from plasticity_bench.reports.tables import gain_and_forgetting  # noqa: E402

# Colour-blind-safe (Okabe–Ito), one per run in the order given on the command line.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DPI = 150  # drawn at 1.5× the size shown, so lines stay crisp on high-density screens


def run_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def curve_panels(run: RunData) -> list[tuple[str, str, str]]:
    """(family, slice, title) per panel: the in-domain target slice, the other in-domain slices,
    then each out-of-domain family as a whole."""
    others = [s for s in run.in_domain_slices if s != run.target_slice]
    family = run.target_family
    panels = [(family, run.target_slice, f"{display_name(family, run.target_slice)} — in-domain target")]
    held_out = set(run.same_skill_slices)  # role: held-out beside the target: its drop is forgetting
    panels += [
        (family, s, f"{display_name(family, s)} — {'held-out, same skill' if s in held_out else 'in-domain'}")
        for s in others
    ]
    panels += [(other, ALL, f"{other} — out of domain") for other in run.out_of_domain_families]
    return panels


def stage_boundaries(run: RunData) -> list[int]:
    """Steps where the method switched training stage (e.g. easy → hard data)."""
    trained = run.checkpoints[1:]
    return [a.step for a, b in zip(trained, trained[1:]) if a.stage != b.stage]


def forgetting_curves(runs: Sequence[RunData]) -> bytes:
    """Accuracy vs training step, one panel per family/slice and one line per run; dotted: the
    run's starting score; band: 95% Wilson interval at each checkpoint."""
    panels = curve_panels(runs[0])
    columns = 2 if len(panels) in (2, 4) else min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(10.6, (3.3 if columns < 3 else 3.0) * rows), squeeze=False)
    steps = sorted({step for run in runs for step in run.steps})
    for position, (ax, (family, slice_, title)) in enumerate(zip(axes.flat, panels)):
        all_series = [
            run.aggregates[(run.aggregates.family == family) & (run.aggregates.slice == slice_)].sort_values("step")
            for run in runs
        ]
        starts = {float(series.score.iloc[0]) for series in all_series}
        for index, (run, series) in enumerate(zip(runs, all_series)):
            colour = run_colour(index)
            bands = (
                np.array([wilson_interval(round(s * n / 100), int(n)) for s, n in zip(series.score, series.n)]) * 100
            )
            ax.fill_between(series.step, bands[:, 0], bands[:, 1], color=colour, alpha=0.13, lw=0)
            ax.plot(series.step, series.score, "-o", color=colour, ms=3.5, lw=1.8)
            if len(starts) > 1:  # runs from different starting models: each its own reference
                ax.axhline(series.score.iloc[0], color=colour, lw=1, ls=":", alpha=0.9)
            for step in stage_boundaries(run):
                ax.axvline(step, color=colour, lw=0.8, ls="-.", alpha=0.5)
        if len(starts) == 1:
            ax.axhline(starts.pop(), color="#555", lw=1, ls=":", zorder=1)
        ax.set_title(title, fontsize=10, loc="left")
        if len(steps) <= 12:  # few checkpoints: tick each one
            ax.set_xticks(steps)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-3, 103)
        ax.set_yticks(range(0, 101, 25))
        ax.grid(alpha=0.25)
        ax.spines[["top", "right"]].set_visible(False)
        if position % columns == 0:
            ax.set_ylabel("accuracy (%)")
        if position + columns >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("training step")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color=run_colour(i), marker="o", ms=4, lw=1.8, label=run.label) for i, run in enumerate(runs)
    ]
    handles += [
        Line2D([], [], color="#555", ls=":", label="starting score"),
        Line2D([], [], color="#555", ls="-.", lw=0.8, label="stage boundary"),
    ]
    fig.legend(
        handles=handles, loc="upper center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 1.0), fontsize=9
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the legend on top
    return png_bytes(fig)


def _padded_range(values: Sequence[float], least: float = 10.0) -> tuple[float, float]:
    """An axis range holding 0 and every value, at least `least` points wide, with a margin."""
    low, high = min(0.0, *values), max(0.0, *values)
    if high - low < least:
        centre = (low + high) / 2
        low, high = centre - least / 2, centre + least / 2
    margin = 0.08 * (high - low)
    return low - margin, high + margin


def gain_vs_forgetting(runs: Sequence[RunData]) -> bytes:
    """One point per checkpoint: in-domain gain (x) vs mean out-of-domain change (y), both vs the
    run's start; the line joins checkpoints in step order, the thick dashed line is the run's
    Pareto frontier (checkpoints no other checkpoint of the run beats on both axes)."""
    fig, ax = plt.subplots(figsize=(9, 5.2))
    ax.axhline(0, color="#999", lw=0.8)
    ax.axvline(0, color="#999", lw=0.8)
    all_points = [gain_and_forgetting(run) for run in runs]
    for index, (run, points) in enumerate(zip(runs, all_points)):
        colour = run_colour(index)
        ax.plot(points.gain, points.ood_change, "-", color=colour, lw=0.9, alpha=0.45)
        ax.scatter(points.gain, points.ood_change, color=colour, s=22, zorder=3, label=run.label)
        front = pareto_front(list(zip(points.gain, points.ood_change)))
        ax.plot(
            points.gain.iloc[front], points.ood_change.iloc[front], "--", color=colour, lw=2.2, alpha=0.85, zorder=2
        )
        final = points.iloc[-1]
        ax.annotate(
            f"step {int(final.step)}",
            (final.gain, final.ood_change),
            textcoords="offset points",
            xytext=(6, -10),
            fontsize=8,
            color=colour,
        )
    ax.scatter([0], [0], marker="*", s=160, color="black", zorder=4, label="start")
    ax.set_xlim(*_padded_range([v for p in all_points for v in p.gain]))
    ax.set_ylim(*_padded_range([v for p in all_points for v in p.ood_change]))
    ax.text(0.99, 0.98, "better ↗", transform=ax.transAxes, ha="right", va="top", fontsize=9, color="#777")
    target = runs[0].target_slice
    ax.set_xlabel(f"in-domain gain: {display_name(runs[0].target_family, target)} accuracy − start (points)")
    ax.set_ylabel("out-of-domain change: mean over\n" + ", ".join(runs[0].out_of_domain_families) + " − start (points)")
    ax.grid(alpha=0.25)
    ax.spines[["top", "right"]].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="#555", ls="--", lw=2.2))
    labels.append("Pareto frontier")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    return png_bytes(fig)


def kl_curves(runs: Sequence[RunData]) -> bytes | None:
    """KL(π₀‖π_step) on the training distribution vs step, one line per run that has it; None when none has."""
    if not any(run.kl is not None for run in runs):
        return None
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for index, run in enumerate(runs):
        if run.kl is not None:
            ax.plot(run.kl.step, run.kl.kl, "-o", color=run_colour(index), ms=3.5, lw=1.8, label=run.label)
    ax.set_xlabel("training step")
    ax.set_ylabel("KL(π₀‖π) (nats / sequence)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.25)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    return png_bytes(fig)


# The training log's columns worth a panel, in order, with what each measures. A method logs
# only some of them; a panel appears when any run has the column.
TRAINING_OBJECTIVES = (
    ("loss", "training loss"),
    ("reward_mean", "mean rollout reward (GRPO, PCR)"),
    ("heldout_margin", "held-out reward margin (DPO, SPoT)"),
    ("heldout_pair_accuracy", "held-out pair accuracy (DPO, SPoT)"),
    ("kl", "KL(π‖π_ref) per token, k3 (GRPO, PCR)"),
    ("conflict_rate", "gradient-conflict rate (PCR)"),
)


def smoothed(values: pd.Series, window: int) -> pd.Series:
    """A centred rolling mean: per-step objectives are noisy (one rollout or batch each)."""
    return values.rolling(window, min_periods=1, center=True).mean()


def training_curves(runs: Sequence[RunData]) -> bytes | None:
    """Each method's own objectives vs step from its training log: faint per step, bold smoothed
    over 5% of the steps. None when no run has a training log."""
    logs = [
        (index, run.label, run.train_log)
        for index, run in enumerate(runs)
        if run.train_log is not None and len(run.train_log)
    ]
    panels = [(column, title) for column, title in TRAINING_OBJECTIVES if any(column in log for _, _, log in logs)]
    if not panels:
        return None
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(10.6, 2.8 * rows), squeeze=False)
    for ax, (column, title) in zip(axes.flat, panels):
        for index, _, log in logs:
            if column not in log:
                continue
            series = log[["step", column]].dropna()
            ax.plot(series.step, series[column], color=run_colour(index), lw=0.6, alpha=0.25)
            ax.plot(series.step, smoothed(series[column], max(1, len(series) // 20)), color=run_colour(index), lw=1.8)
        ax.set_title(title, fontsize=10, loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.25)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xlabel("training step")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=run_colour(i), lw=1.8, label=label) for i, label, _ in logs]
    fig.legend(
        handles=handles, loc="upper center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 1.0), fontsize=9
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    return png_bytes(fig)


@dataclass(frozen=True)
class ArmPoint:
    """One arm of a study on the headline figure: its means on both axes, ± error bars (None: no bar)."""

    label: str
    x: float
    y: float
    x_err: float | None
    y_err: float | None
    colour: str
    frontier: bool
    members: tuple[tuple[float, float], ...] = ()  # a family study: each organism's (x, y), its seeds' mean


# Where a point's name may go, tried in order: (dx, dy) in points from the point, horizontal alignment.
LABEL_SPOTS = (
    (10, 0, "left"),
    (-10, 0, "right"),
    (8, 12, "left"),
    (8, -12, "left"),
    (-8, 12, "right"),
    (-8, -12, "right"),
    (0, 16, "center"),
    (0, -16, "center"),
    (14, 24, "left"),
    (-14, -24, "right"),
    (14, -24, "left"),
    (-14, 24, "right"),
)


def _overlap(a: Bbox, b: Bbox) -> float:
    both = Bbox.intersection(a, b)
    return 0.0 if both is None else both.width * both.height


def _name_points(fig: Figure, ax: Axes, points: Sequence[ArmPoint]) -> None:
    """Each point's name beside it, at the first spot that covers no point and no name already
    placed (else the spot that covers least): with a dozen arms, neighbours sit a few pixels apart."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    centres = ax.transData.transform([(p.x, p.y) for p in points])
    ring = 8 * fig.dpi / 72  # a frontier ring's radius (points → pixels)
    taken = [Bbox.from_bounds(cx - ring, cy - ring, 2 * ring, 2 * ring) for cx, cy in centres]  # the markers
    for point in points:
        best: tuple[float, Annotation, Bbox] | None = None
        for dx, dy, align in LABEL_SPOTS:
            text = ax.annotate(
                point.label,
                (point.x, point.y),
                textcoords="offset points",
                xytext=(dx, dy),
                ha=align,
                va="center",
                fontsize=9,
                color="#222",  # dark for every arm: a name in a pale palette colour is hard to read
                annotation_clip=False,
            )
            box = text.get_window_extent(renderer).padded(1.5)
            covered = sum(_overlap(box, other) for other in taken)
            if best is None or covered < best[0]:
                if best is not None:
                    best[1].remove()
                best = (covered, text, box)
            else:
                text.remove()
            if covered == 0:
                break
        assert best is not None
        best[1].set_gid(f"headline-label-{point.label}")  # an id in the SVG: a test finds each name drawn
        taken.append(best[2])


def arms_frontier(points: Sequence[ArmPoint], x_label: str, y_label: str) -> Figure:
    """One point per arm, x against y, with ± error bars, each named; the frontier (the arms no other
    arm beats on both axes, larger better on both) ringed and joined by a dashed line; ★ the start."""
    fig, ax = plt.subplots(figsize=(9, 5.6))
    ax.axhline(0, color="#999", lw=0.8)
    ax.axvline(0, color="#999", lw=0.8)
    for point in points:
        drawn = ax.errorbar(
            [point.x],
            [point.y],
            xerr=None if point.x_err is None else [point.x_err],
            yerr=None if point.y_err is None else [point.y_err],
            fmt="o",
            ms=7,
            color=point.colour,
            ecolor=point.colour,
            elinewidth=1.3,
            capsize=3,
            zorder=3,
        )
        drawn.lines[0].set_gid(f"headline-point-{point.label}")  # an id in the SVG: one per arm drawn
        if point.members:  # beside the family mean: one small hollow circle per organism
            xs, ys = zip(*point.members)
            ax.scatter(xs, ys, s=26, facecolors="none", edgecolors=point.colour, lw=1.1, zorder=2.8).set_gid(
                f"headline-organisms-{point.label}"
            )
    front = sorted((p for p in points if p.frontier), key=lambda p: p.x)
    ax.plot([p.x for p in front], [p.y for p in front], "--", color="#333", lw=1.4, zorder=2, gid="headline-frontier")
    ax.scatter(
        [p.x for p in front], [p.y for p in front], s=190, facecolors="none", edgecolors="#333", lw=1.2, zorder=4
    )
    ax.scatter([0], [0], marker="*", s=170, color="black", zorder=2.5)  # under the points: an arm at 0 stays seen
    organisms = [member for p in points for member in p.members]  # a family study's points stay inside too
    ax.set_xlim(*_padded_range([p.x + s * (p.x_err or 0) for p in points for s in (-1, 1)] + [m[0] for m in organisms]))
    ax.set_ylim(*_padded_range([p.y + s * (p.y_err or 0) for p in points for s in (-1, 1)] + [m[1] for m in organisms]))
    ax.text(0.99, 0.98, "better ↗", transform=ax.transAxes, ha="right", va="top", fontsize=9, color="#777")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.25)
    ax.spines[["top", "right"]].set_visible(False)
    legend = [
        Line2D([], [], color="#333", ls="--", lw=1.4, marker="o", ms=11, mfc="none", label="frontier"),
        Line2D([], [], color="black", ls="", marker="*", ms=12, label="start (before post-training)"),
    ]
    ax.legend(handles=legend, loc="lower left", fontsize=9, frameon=False)
    fig.tight_layout()
    _name_points(fig, ax, points)  # after the layout: names are placed in the final pixel geometry
    return fig


def svg_markup(fig: Figure, alt: str) -> str:
    """The figure as an inline <svg> element for a self-contained page: text stays text (a reader can
    select it, a test can find it), ids are stable between runs, the page sizes it (the viewBox is
    kept), and `alt` is its accessible name (role=img with aria-label and a <title>)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "plasticity-bench"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", facecolor="white", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML
    text = re.sub(r'\s(width|height)="[^"]*"', "", text[: text.index(">")], count=2) + text[text.index(">") :]
    alt_attr = html.escape(alt, quote=True)
    text = text.replace("<svg", f'<svg role="img" aria-label="{alt_attr}"', 1)
    close = text.index(">") + 1
    return f"{text[:close]}<title>{html.escape(alt)}</title>{text[close:]}"
