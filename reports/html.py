"""A self-contained HTML report (inline CSS, charts as embedded PNG, no script, nothing fetched)
for one run or several runs on the same evaluation items.

Reads only what scoring wrote (run.json, records, aggregates, eval items, checkpoint manifest),
so a report can be re-made without re-scoring.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.evaluation.runs import cpu_text
from plasticity_bench.harness.store import REPORT_FILE, RunStore, write_atomic, write_json_atomic
from plasticity_bench.reports.charts import forgetting_curves, gain_vs_forgetting, kl_curves, training_curves
from plasticity_bench.reports.data import RunData, display_name, load_runs
from plasticity_bench.reports.few_shot import few_shot_html
from plasticity_bench.reports.flips import SHOWN_PER_DIRECTION, flips_html
from plasticity_bench.reports.libraries import library_rows
from plasticity_bench.reports.tables import change_table, results_table_html, summary_table_html

CURVES_FILE = "forgetting_curves.png"
SUMMARY_FILE = "summary.json"

STYLE = """
:root{--ink:#1f2328;--muted:#656d76;--line:#e3e6ea;--soft:#f6f8fa;--up:#1a7f37;--down:#c62828}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0;background:#fff}
main{max-width:1120px;margin:0 auto;padding:1.5rem 1.5rem 4rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin:2.4rem 0 .4rem;padding-bottom:.25rem;border-bottom:2px solid var(--line)}
h3{font-size:1.05rem;margin:1.4rem 0 .4rem}h4{font-size:.9rem;margin:.8rem 0 .2rem;color:var(--muted)}
.sub{color:var(--muted);margin:0 0 .8rem}nav a{margin-right:1rem;color:#0969da;text-decoration:none;font-size:.92rem}
.note{color:var(--muted);font-size:.9rem;margin:.3rem 0 .6rem;max-width:60rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem}
th,td{padding:.28rem .6rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600;vertical-align:bottom}
table.numbers td:not(:first-child),table.numbers thead th:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}table.numbers td{white-space:nowrap}
tr.group th{background:#fff;text-align:left;padding-top:.9rem;font-size:.95rem;border-bottom:1px solid #cfd4da}
table.results{width:100%}th.scale{font-weight:400;color:var(--muted);font-size:.8rem;text-align:center!important}svg.bar{vertical-align:middle;display:block;margin:auto}
table.provenance{width:100%;table-layout:fixed}table.provenance td{word-break:break-all}table.provenance th{width:11rem}
.tag{display:inline-block;font-size:.72rem;font-weight:600;padding:.05rem .45rem;border-radius:1rem;background:#ddf4ff;color:#0550ae;margin-left:.4rem;vertical-align:1px}
.tag.ood{background:#fff1e5;color:#953800}
.up{color:var(--up);font-weight:600}.down{color:var(--down);font-weight:600}.none{color:var(--muted)}
figure{margin:.6rem 0 1rem}figure img{width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.88rem;margin-top:.3rem}
details{border:1px solid var(--line);border-radius:6px;padding:.35rem .8rem;margin:.4rem 0;background:#fff}
details[open]{background:var(--soft)}summary{cursor:pointer}
table.items{width:100%;background:#fff}table.items td{font-size:.82rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.82rem;white-space:pre-wrap;word-break:break-word}
code.ok{background:#dafbe1;padding:0 .2rem;border-radius:3px}code.bad{background:#ffebe9;padding:0 .2rem;border-radius:3px}
.parsed{margin-top:.2rem;font-size:.75rem;color:var(--muted)}
pre{background:var(--soft);padding:.7rem;overflow:auto;font-size:.78rem;border-radius:6px}
dl.families{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;font-size:.9rem;margin:.4rem 0}dl.families dt{font-weight:600}dl.families dd{margin:0;color:var(--muted)}
"""


def _image(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _short(value: Any, length: int = 12) -> str:
    text = "–" if value is None else str(value)
    return f"<span title='{html.escape(text)}'>{html.escape(text[:length])}{'…' if len(text) > length else ''}</span>"


def provenance_html(runs: Sequence[RunData]) -> str:
    """Side by side what each run was made with; everything else from run.json in full below."""

    def row(name: str, values: Sequence[str]) -> str:
        return f"<tr><th>{html.escape(name)}</th>{''.join(f'<td>{v}</td>' for v in values)}</tr>"

    def field(run: RunData, *path: str) -> Any:
        value: Any = run.meta
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def git(run: RunData) -> str:
        commit, dirty = field(run, "provenance", "git", "commit"), field(run, "provenance", "git", "dirty")
        return "not a git checkout" if commit is None else _short(commit) + (" (uncommitted changes)" if dirty else "")

    def plain(*path: str) -> list[str]:
        return ["–" if (value := field(run, *path)) is None else html.escape(str(value)) for run in runs]

    rows = [
        row("method", [html.escape(r.label) for r in runs]),
        row("run folder", [html.escape(str(r.root)) for r in runs]),
        row("seed", plain("seed")),
        row("suite", plain("suite")),
        row("backend", plain("backend")),
        row("base model", [_short(field(r, "base_model"), 40) for r in runs]),
        row("base model weights sha256", [_short(field(r, "base_model_sha256")) for r in runs]),
        # shipped, pre-trained here, or the user's model: two runs compare cleanly only from the same start
        row("base model source", plain("base_model_source")),
        row("CPU (torch kernels)", [html.escape(cpu_text(r.meta) or "–") for r in runs]),
        row("eval-set sha256", [_short(field(r, "eval_set_sha256")) for r in runs]),
        row("fingerprint", plain("fingerprint")),
        row("git revision", [git(r) for r in runs]),
        row("created", plain("created")),
        row("python", plain("provenance", "python")),
        *(
            row(package, [html.escape(v) for v in versions])
            for package, versions in library_rows([r.meta for r in runs])
        ),
    ]
    header = "<tr><th></th>" + "".join(f"<th>{html.escape(r.label)}</th>" for r in runs) + "</tr>"
    eval_sets = runs[0].meta["eval_sets"]
    sets = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{spec['n']}</td><td><code>{html.escape(spec['sha256'])}</code></td></tr>"
        for name, spec in sorted(eval_sets.items())
    )
    full = "".join(
        f"<details><summary>{html.escape(r.label)}: full run.json (config, packages, machine)</summary>"
        f"<pre>{html.escape(json.dumps({k: v for k, v in r.meta.items() if k != 'stages'}, indent=2, sort_keys=True, default=str))}</pre></details>"
        for r in runs
    )
    return (
        f"<table class=provenance><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"
        f"<h3>Evaluation sets</h3><table class=evalsets><thead><tr><th>slice</th><th>items</th><th>sha256</th></tr></thead>"
        f"<tbody>{sets}</tbody></table>{full}"
    )


def published_html(runs: Sequence[RunData]) -> str:
    """The papers' numbers a suite declares (`published:` on a set), beside each run's final score."""
    rows = []
    for spec in runs[0].suite["sets"]:
        for label, value in spec.get("published", {}).items():
            ours = []
            for run in runs:
                agg = run.aggregates
                final = agg[(agg.slice == spec["slice"]) & (agg.step == run.final_step)]
                if len(final):
                    row = final.iloc[0]
                    extra = (
                        f", reliability {row.reliability:.1f}"
                        if "reliability" in row and pd.notna(row.reliability)
                        else ""
                    )
                    ours.append(f"{html.escape(run.label)}: {row.score:.1f}{extra}")
            rows.append(
                f"<tr><td>{html.escape(spec['slice'])}</td><td>{html.escape(label)}</td><td>{value:.1f}</td><td>{'; '.join(ours)}</td></tr>"
            )
    if not rows:
        return ""
    return (
        "<h2 id=published>Published numbers</h2><p class=note>What the paper reported for this suite's sets, beside this run's final "
        "checkpoint (points). Models, budgets and prompts may differ: see the suite file.</p><table class=published><thead><tr><th>set</th>"
        f"<th>published</th><th>value</th><th>this run (final)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def kl_html(runs: Sequence[RunData]) -> str:
    """KL(π₀‖π_step) per checkpoint, one line per run; a note for runs without it."""
    missing = [r.label for r in runs if r.kl is None]
    note = (
        f" Not computed for {html.escape(', '.join(missing))}: a run scored with <code>bench eval</code> has no training data to measure it on "
        "(for a <code>bench run</code>, run.json's <code>stages.kl</code> says why)."
        if missing
        else ""
    )
    png = kl_curves(runs)
    figure = f"<figure>{_image(png, 'KL to start vs training step, one line per run')}</figure>" if png else ""
    return (
        "<h2 id=kl>KL to start</h2><p class=note>KL(π₀‖π_step) on the training distribution: the starting model samples one completion "
        "for each of up to 64 hard training prompts (temperature 1), and each checkpoint's KL is the mean over those sequences of "
        "Σ_t [log π₀ − log π] over their tokens (nats per sequence; 0 at the start). RL's Razor (arXiv 2509.04259) finds forgetting "
        f"tracks it.{note}</p>{figure}"
    )


def training_html(runs: Sequence[RunData]) -> str:
    """Each method's own objectives per step (GRPO's reward, DPO's held-out margin, ...): whether
    the trainer optimised what it optimises, beside what the evaluation sets say it learned."""
    png = training_curves(runs)
    if png is None:
        return (
            "<h2 id=training>Training objectives</h2><p class=note>No training log: these runs were scored with "
            "<code>bench eval</code>, not trained here.</p>"
        )
    return (
        "<h2 id=training>Training objectives</h2><p class=note>What each trainer optimises, per step, from <code>train_log.parquet</code>: "
        "faint, every step; bold, a rolling mean over 5% of the steps. The rollout reward is measured on the policy's own samples "
        "(at the trainer's temperature), the held-out margin on preference pairs the trainer never trained on.</p>"
        f"<figure>{_image(png, 'training objectives vs step, one line per run')}</figure>"
    )


def page_html(runs: Sequence[RunData], tables: Sequence[pd.DataFrame], curves_png: bytes) -> str:
    first = runs[0]
    n_items = sum(spec["n"] for spec in first.meta["eval_sets"].values())
    target = display_name(first.target_family, first.target_slice)
    families = "".join(
        f"<dt>{html.escape(f)}</dt><dd>{html.escape(d or ('post-training target' if f == first.target_family else 'held out'))}</dd>"
        for f, d in first.family_descriptions.items()
        if f in set(first.aggregates.family)
    )
    methods = ", ".join(html.escape(r.label) for r in runs)
    few_shot = few_shot_html(runs)  # the few-shot recovery probe's section; "" for runs without one
    few_shot_link = '<a href="#few-shot">Few-shot recovery</a>' if few_shot else ""
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1">
<title>plasticity-bench report: {methods}</title><style>{STYLE}</style></head>
<body><main>
<h1>plasticity-bench report</h1>
<p class=sub>suite <b>{html.escape(first.meta["suite"])}</b> · {n_items:,} evaluation items · {len(runs)} run{"s" if len(runs) > 1 else ""}: {methods}</p>
<nav><a href="#summary">Summary</a><a href="#curves">Forgetting curves</a>{few_shot_link}<a href="#tradeoff">Gain vs forgetting</a><a href="#kl">KL to start</a><a href="#training">Training</a><a href="#families">By family</a><a href="#items">Flipped items</a><a href="#provenance">Provenance</a></nav>
<dl class=families>{families}</dl>

<h2 id=summary>Summary</h2>
<p class=note>Accuracy in points (% of items exactly right). <b>In-domain gain</b>: final − start on <b>{html.escape(target)}</b>, the data
post-training targets, with its paired 95% interval (green/red when it excludes 0). <b>Out-of-domain change</b>: mean over
{html.escape(", ".join(first.out_of_domain_families))} of final − start; negative is forgetting. Times are wall-clock seconds of each stage.</p>
{summary_table_html(runs, tables)}

<h2 id=curves>Forgetting curves</h2>
<figure>{_image(curves_png, "forgetting curves: accuracy vs training step per family, one line per method")}
<figcaption>Accuracy at every checkpoint. Bands: 95% Wilson interval per checkpoint. Dotted: the starting score; dash-dotted: where the
method changed training stage.{" The in-domain family is split into its slices because the easy and hard data move differently." if first.in_domain_slices else ""}</figcaption></figure>
{few_shot}

<h2 id=tradeoff>Gain vs forgetting</h2>
<figure>{_image(gain_vs_forgetting(runs), "gain vs forgetting: in-domain gain against mean out-of-domain change, one point per checkpoint")}
<figcaption>Each point is a checkpoint. Up and right is better: more in-domain gain, less forgetting. The dashed line joins each method's
Pareto-optimal checkpoints (no other checkpoint of the same run is better on both axes).</figcaption></figure>

{kl_html(runs)}
{training_html(runs)}
<h2 id=families>By family</h2>
<p class=note>Start = step {first.start_step}; final = each run's last checkpoint; best = highest score at any checkpoint. Change = final − start with the
paired 95% interval (Agresti–Min, using the items that flipped); lost / gained = items right → wrong / wrong → right. The bar draws the interval, the dot the change.</p>
{results_table_html(runs, tables)}

<h2 id=items>Flipped items</h2>
<p class=note>Items whose result differs between the start and the final checkpoint, with both outputs (green: right, red: wrong).
At most {SHOWN_PER_DIRECTION} per family and direction are shown, taken from each slice in turn.</p>
{flips_html(runs)}

{published_html(runs)}
<h2 id=provenance>Provenance</h2>
{provenance_html(runs)}
</main></body></html>
"""


def write_report(stores: Sequence[RunStore], out: Path) -> Path:
    """Write the report for `stores` to `out`. A run's own report (RUN/report.html) also leaves
    the curves picture and summary.json in the run folder, which `bench run` prints from; a
    combined report writes nothing into the runs it reads."""
    runs = load_runs([store.root for store in stores])
    tables = [change_table(run) for run in runs]
    curves = forgetting_curves(runs)
    if len(runs) == 1 and out.resolve() == (runs[0].root / REPORT_FILE).resolve():
        (runs[0].root / CURVES_FILE).write_bytes(curves)
        write_json_atomic(runs[0].root / SUMMARY_FILE, tables[0].to_dict("records"))
    out.parent.mkdir(parents=True, exist_ok=True)
    page = page_html(runs, tables, curves)
    write_atomic(
        out, lambda tmp: tmp.write_text(page, encoding="utf-8")
    )  # as its <meta charset> says, whatever the locale
    return out
