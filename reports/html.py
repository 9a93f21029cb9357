"""A self-contained HTML report (inline CSS, charts as embedded PNG) from scored run folders.

Reads only `aggregates.parquet`, `run.json` and the checkpoint manifest, so a report can be
re-made without re-scoring.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.scoring import ALL  # noqa: E402
from harness.store import AGGREGATES_FILE, RunStore, write_json_atomic  # noqa: E402
from tasks.base import FAMILIES, IN_DOMAIN_FAMILY  # noqa: E402
from trainers.common import read_manifest  # noqa: E402

CURVES_FILE = "forgetting_curves.png"
COLOURS = {"math": "#1f77b4", "reasoning": "#d62728", "code": "#2ca02c"}


def headline_rows(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Every family as a whole, plus each slice of the in-domain family (easy vs hard matters)."""
    whole = aggregates.slice == ALL
    in_domain_slices = (aggregates.family == IN_DOMAIN_FAMILY) & ~whole
    return aggregates[whole | in_domain_slices]


def change_table(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Per family/slice: start, final, best, and final − start with a 95% interval.

    The interval treats the two checkpoints' scores as independent (se = √(se₀² + se₁²)); the
    items are shared, so this is conservative. `bench compare` will add the paired test.
    """
    rows = []
    for (family, slice_), group in headline_rows(aggregates).groupby(["family", "slice"], sort=False):
        group = group.sort_values("step")
        start, final = group.iloc[0], group.iloc[-1]
        change = final.score - start.score
        half_width = 1.96 * math.sqrt(start.stderr**2 + final.stderr**2)
        rows.append({
            "family": family, "slice": slice_, "n": int(final.n),
            "start": start.score, "start_se": start.stderr, "final": final.score, "final_se": final.stderr,
            "best": group.score.max(), "best_step": int(group.loc[group.score.idxmax(), "step"]),
            "change": change, "change_lo": change - half_width, "change_hi": change + half_width,
            "significant": abs(change) > half_width,
        })
    return pd.DataFrame(rows)


def plot_curves(aggregates: pd.DataFrame, boundaries: Sequence[int], title: str) -> bytes:
    """Score vs step, one line per family (in-domain hard dashed), start marked, ±1.96·SE bands."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for (family, slice_), group in headline_rows(aggregates).groupby(["family", "slice"], sort=False):
        if family == IN_DOMAIN_FAMILY and slice_ == ALL:
            continue  # the easy and hard slices say more than their mixture
        group = group.sort_values("step")
        colour = COLOURS.get(family, None)
        style = "--" if slice_.endswith("/hard") else "-"
        label = family if slice_ == ALL else f"{family} ({slice_.split('/')[-1]})"
        line, = ax.plot(group.step, group.score, style, marker="o", ms=3, color=colour, label=label)
        ax.fill_between(group.step, group.score - 1.96 * group.stderr, group.score + 1.96 * group.stderr, color=line.get_color(), alpha=0.12, lw=0)
        ax.axhline(group.score.iloc[0], color=line.get_color(), lw=0.8, ls=":", alpha=0.8)
    for step in boundaries:
        ax.axvline(step, color="grey", lw=0.8, ls="-.")
        ax.text(step, 101, " stage boundary", fontsize=7, color="grey", va="bottom")
    ax.set(xlabel="training step", ylabel="accuracy (%)", ylim=(-2, 105), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="dotted: start", title_fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def stage_boundaries(store: RunStore) -> list[int]:
    records = read_manifest(store.checkpoints)
    return [a.step for a, b in zip(records[1:], records[2:]) if a.stage != b.stage]


def _fmt(value: float, se: float | None = None) -> str:
    if se is None or math.isnan(se):
        return f"{value:.1f}"
    return f"{value:.1f} <span class=se>± {se:.1f}</span>"


def table_html(table: pd.DataFrame) -> str:
    head = "<tr><th>family</th><th>slice</th><th>n</th><th>start</th><th>final</th><th>best (step)</th><th>change [95% CI]</th></tr>"
    rows = []
    for r in table.itertuples():
        cls = "" if not r.significant else ("up" if r.change > 0 else "down")
        rows.append(
            f"<tr><td>{html.escape(r.family)}</td><td>{html.escape(r.slice)}</td><td>{r.n}</td><td>{_fmt(r.start, r.start_se)}</td>"
            f"<td>{_fmt(r.final, r.final_se)}</td><td>{r.best:.1f} ({r.best_step})</td>"
            f"<td class='{cls}'>{r.change:+.1f} [{r.change_lo:+.1f}, {r.change_hi:+.1f}]</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1000px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e5e5e5;padding:.3rem .7rem;text-align:right}th{background:#f6f6f6}
td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}.se{color:#888;font-size:.85em}
.up{color:#1a7f37;font-weight:600}.down{color:#c62828;font-weight:600}
img{max-width:100%}pre{background:#f6f6f6;padding:.7rem;overflow:auto;font-size:.8rem}
.note{color:#555;font-size:.9rem}
"""


def run_section(store: RunStore) -> str:
    meta = store.metadata()
    aggregates = pd.read_parquet(store.root / AGGREGATES_FILE)
    table = change_table(aggregates)
    title = f"{meta['method']} · seed {meta['seed']} · suite {meta['suite']}"
    png = plot_curves(aggregates, stage_boundaries(store), title)
    (store.root / CURVES_FILE).write_bytes(png)
    write_json_atomic(store.root / "summary.json", table.to_dict("records"))
    families = "".join(f"<li><b>{html.escape(f)}</b>: {html.escape(d)}</li>" for f, d in FAMILIES.items())
    stages = meta.get("stages", {})
    cost = ", ".join(f"{name} {info.get('seconds', '?')} s" for name, info in stages.items())
    provenance = {k: meta[k] for k in ("config", "seed", "backend", "base_model", "eval_sets", "eval_set_sha256", "provenance") if k in meta}
    return f"""
<h2>{html.escape(title)}</h2>
<p class=note>Accuracy in points (exact match; programs graded by execution). Change = final − start, green/red when its 95% interval excludes 0. Cost: {html.escape(cost)}.</p>
<ul class=note>{families}</ul>
{table_html(table)}
<h3>Forgetting curves</h3>
<img alt="forgetting curves for {html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<details><summary>Provenance</summary><pre>{html.escape(json.dumps(provenance, indent=2, sort_keys=True, default=str))}</pre></details>
"""


def write_report(stores: Sequence[RunStore], out: Path) -> Path:
    body = "".join(run_section(store) for store in stores)
    page = f"<!doctype html><html><head><meta charset=utf-8><title>plasticity-bench report</title><style>{STYLE}</style></head><body><h1>plasticity-bench report</h1>{body}</body></html>"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out
