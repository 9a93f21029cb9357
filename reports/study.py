"""The comparison report of a study (`bench study`): methods × seeds, each an ordinary run folder.

Per run, the metrics (from the same numbers as the run's summary.json):
  target_gain       final − start on the suite's target slice (points)
  target_final      final score on the target slice (points)
  target_significant 1 when the target gain's paired 95% interval excludes 0 upwards (about 2 SE), else 0
  same_skill_change mean final − start of the held-out sets (role: held-out) in the target's own family,
                    e.g. easy math when the target is hard math (points; absent when the family has none)
  ood_change        mean over the held-out families (no target set in them) of final − start
                    (points; negative is forgetting)
  held_out:<family> final − start of one held-out family (points)
  kl_to_start       KL(π₀‖π) at the final checkpoint (nats per sequence; absent for runs without it)
  target_roughness  root mean square of the second differences of the target slice's score over
                    the checkpoints (points; 0 for a straight line, lower is smoother; needs ≥ 3)
For claims only, per pair of arms: ood_change_at_matched_gain, each run's held-out change where its target gain
first reaches the level every run of both arms reaches (RL's Razor compares forgetting at matched gain).
Per method: mean ± standard error across seeds (across organisms in a family study); curves with ±1
standard-error bands across runs;
the claims (harness/evaluation/claims.py) with their verdicts. Writes study.html and study.json, and
headline.json: the points of the figure study.html opens with (each arm's mean target gain against its mean
held-out change, ± standard error across seeds, and the frontier), taken from study.json's numbers.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from plasticity_bench.harness.evaluation.claims import Claim, evaluate_claims, mean_and_stderr, unit_list
from plasticity_bench.harness.evaluation.family import is_family, organism_means, unit_values
from plasticity_bench.harness.evaluation.scoring import ALL
from plasticity_bench.harness.evaluation.stats import pareto_front
from plasticity_bench.harness.store import write_atomic, write_json_atomic
from plasticity_bench.reports.charts import ArmPoint, arms_frontier, png_bytes, run_colour, svg_markup, training_curves
from plasticity_bench.reports.data import RunData, display_name, load_runs
from plasticity_bench.reports.html import STYLE, _image
from plasticity_bench.reports.tables import change_table, final_kl, gain_and_forgetting

STUDY_HTML, STUDY_JSON, HEADLINE_JSON = "study.html", "study.json", "headline.json"
# The headline figure's axes: x learning, y forgetting, as "LoRA Learns Less and Forgets Less" and RL's Razor draw it.
HEADLINE_X, HEADLINE_Y = "target_gain", "ood_change"
HEADLINE_BARS = "±1 standard error across seeds (sample sd / √seeds)"
FAMILY_BARS = "±1 standard error across organisms (sample sd of the organisms' means over their seeds / √organisms)"
METRICS = (
    "target_gain",
    "target_final",
    "target_significant",
    "same_skill_change",
    "ood_change",
    "kl_to_start",
    "target_roughness",
)
# RL's Razor (arXiv 2509.04259) compares forgetting at matched new-task gain, not at each run's last checkpoint,
# so the level depends on both arms of a claim and the metric is computed per claim (matched_claim_values).
MATCHED = "ood_change_at_matched_gain"
CLAIM_METRICS = (*METRICS, MATCHED)


def roughness(scores: Sequence[float]) -> float:
    values = np.asarray(scores, dtype=float)
    if len(values) < 3:
        return float("nan")
    return float(np.sqrt(np.mean(np.diff(values, n=2) ** 2)))


def run_metrics(run: RunData) -> dict[str, float]:
    """One run's metrics (see the module docstring)."""
    table = change_table(run)
    target = table[(table.family == run.target_family) & (table.slice == run.target_slice)].iloc[0]
    agg = run.aggregates
    curve = agg[(agg.family == run.target_family) & (agg.slice == run.target_slice)].sort_values("step").score
    kl = final_kl(run)
    same_skill = table[table.slice.isin(run.same_skill_slices)]  # by role: the held-out sets beside the target
    metrics = {
        "target_gain": float(target.change),
        "target_final": float(target.final),
        "target_significant": float(target.change_lo > 0),
        "same_skill_change": float(same_skill.change.mean()) if len(same_skill) else float("nan"),
        "ood_change": float(gain_and_forgetting(run).ood_change.iloc[-1]),
        "kl_to_start": float("nan") if kl is None else kl,
        "target_roughness": roughness(list(curve)),
    }
    for family in run.out_of_domain_families:
        row = table[(table.family == family) & (table.slice == ALL)].iloc[0]
        metrics[f"held_out:{family}"] = float(row.change)
    return metrics


def ood_change_at_gain(curve: pd.DataFrame, level: float) -> float:
    """The held-out change where the run's target gain first reaches `level` (gain_and_forgetting's columns),
    linearly interpolated between the checkpoints either side of the crossing; NaN when it never does."""
    gains, changes = curve.gain.to_numpy(dtype=float), curve.ood_change.to_numpy(dtype=float)
    reached = np.flatnonzero(gains >= level)
    if not len(reached):
        return float("nan")
    i = int(reached[0])
    if i == 0:
        return float(changes[0])
    share = (level - gains[i - 1]) / (gains[i] - gains[i - 1])
    return float(changes[i - 1] + share * (changes[i] - changes[i - 1]))


def matched_level(curves: Sequence[pd.DataFrame]) -> float:
    """The highest target gain every run reaches at some checkpoint: the level all of them can be compared at
    (NaN when it is not above 0, as then no run has learnt and there is nothing to match)."""
    level = min(float(curve.gain.max()) for curve in curves)
    return level if level > 0 else float("nan")


def matched_claim_values(
    claim: Claim, curves: Mapping[str, Sequence[pd.DataFrame]]
) -> tuple[float, dict[str, list[float]]] | None:
    """For a claim with an ood_change_at_matched_gain test whose arms both ran: the matched level and, per arm,
    each run's held-out change at it."""
    arms = [arm for arm in (claim.a, claim.b) if arm]
    if not any(test.metric == MATCHED for test in claim.tests) or not all(arm in curves for arm in arms):
        return None
    level = matched_level([curve for arm in arms for curve in curves[arm]])
    return level, {arm: [ood_change_at_gain(curve, level) for curve in curves[arm]] for arm in arms}


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def study_data(
    run_dirs: Mapping[str, Sequence[tuple[int, Path]]], claims: Sequence[Claim]
) -> tuple[dict[str, Any], dict[str, list[RunData]]]:
    """study.json's content and the loaded runs per method. run_dirs: method → [(seed, folder)]."""
    flat = [(method, seed, folder) for method, runs in run_dirs.items() for seed, folder in runs]
    loaded = load_runs([folder for _, _, folder in flat])  # scored, complete, same items
    by_method: dict[str, list[RunData]] = {}
    values: dict[str, dict[str, list[float]]] = {}
    organisms: dict[str, list[int | None]] = {}  # each run's organism (run.json organism_seed), method by method
    methods: dict[str, Any] = {}
    curves: dict[str, list[pd.DataFrame]] = {}  # per arm, each run's gain and held-out change per checkpoint
    for (method, seed, folder), run in zip(flat, loaded):
        by_method.setdefault(method, []).append(run)
        curves.setdefault(method, []).append(gain_and_forgetting(run))
        entry = methods.setdefault(method, {"runs": [], "metrics": {}})
        metrics = run_metrics(run)
        organisms.setdefault(method, []).append(run.meta.get("organism_seed"))
        entry["runs"].append(
            {
                "seed": seed,
                "organism": organisms[method][-1],
                "folder": str(folder),
                "metrics": {k: _clean(v) for k, v in metrics.items()},
            }
        )
        for name, value in metrics.items():
            values.setdefault(method, {}).setdefault(name, []).append(value)
    family = is_family(organisms)  # organisms are the sampling unit: harness/evaluation/family.py
    units = {m: {k: unit_values(v, organisms[m], family) for k, v in values[m].items()} for m in values}
    for method, entry in methods.items():
        for name, seeds in values[method].items():
            mean, stderr = mean_and_stderr(unit_list(units[method][name]))
            entry["metrics"][name] = {
                "mean": _clean(mean),
                "stderr": _clean(stderr),
                "seeds": len([v for v in seeds if not math.isnan(v)]),
                **({"organisms": len(units[method][name])} if family else {}),
            }
        if family:
            entry["organisms"] = organism_table(values[method], organisms[method])
    first = loaded[0]
    results = []
    for claim in claims:
        matched = matched_claim_values(claim, curves)
        claim_units = units
        if matched is not None:
            matched_units = {arm: unit_values(v, organisms[arm], family) for arm, v in matched[1].items()}
            claim_units = {**units, **{arm: {**units[arm], MATCHED: matched_units[arm]} for arm in matched_units}}
        result = evaluate_claims([claim], claim_units)[0]
        for test in result["tests"]:
            if matched is not None and test["metric"] == MATCHED:
                test["matched_gain"] = _clean(matched[0])
        results.append(result)
    for result in results:
        for test in result["tests"]:
            for key in ("difference", "low", "high"):
                test[key] = _clean(test[key])
    data = {
        "suite": first.meta["suite"],
        "target": display_name(first.target_family, first.target_slice),
        "held_out_families": first.out_of_domain_families,
        "methods": methods,
        "claims": results,
        "sampling_unit": "organism" if family else "seed",
    }
    return data, by_method


def organism_table(values: Mapping[str, Sequence[float]], organisms: Sequence[int | None]) -> dict[str, Any]:
    """Per organism (by its seed), the mean over its post-training seeds of every metric."""
    table: dict[str, Any] = {}
    for name, runs in values.items():
        for organism, mean in organism_means(runs, organisms).items():
            table.setdefault(str(organism), {})[name] = _clean(mean)
    return table


def seed_band_curves(by_method: Mapping[str, Sequence[RunData]]) -> bytes:
    """Accuracy vs step per panel (target slice, each held-out family): per method the mean across
    seeds, with a ±1 standard-error band."""
    first = next(iter(by_method.values()))[0]
    panels = [
        (first.target_family, first.target_slice, f"{display_name(first.target_family, first.target_slice)} — target")
    ]
    panels += [(family, ALL, f"{family} — held out") for family in first.out_of_domain_families]
    columns = min(len(panels), 2)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(10.6, 3.3 * rows), squeeze=False)
    for ax, (family, slice_, title) in zip(axes.flat, panels):
        for index, (method, runs) in enumerate(by_method.items()):
            curves = [
                r.aggregates[(r.aggregates.family == family) & (r.aggregates.slice == slice_)]
                .set_index("step")
                .score.sort_index()
                for r in runs
            ]
            frame = pd.concat(curves, axis=1)
            mean = frame.mean(axis=1)
            stderr = frame.std(axis=1, ddof=1) / math.sqrt(frame.shape[1]) if frame.shape[1] > 1 else mean * 0
            colour = run_colour(index)
            ax.fill_between(mean.index, mean - stderr, mean + stderr, color=colour, alpha=0.18, lw=0)
            ax.plot(mean.index, mean, "-o", color=colour, ms=3.5, lw=1.8, label=f"{method} (n={frame.shape[1]})")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylim(-3, 103)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.25)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy (%)")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="upper center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, 1.0), fontsize=9
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return png_bytes(fig)


def _pm(entry: Mapping[str, Any] | None, digits: int = 1) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    se = entry.get("stderr")
    return f"{entry['mean']:+.{digits}f} ± {se:.{digits}f}" if se is not None else f"{entry['mean']:+.{digits}f}"


def _significant_seeds(entry: Mapping[str, Any]) -> str:
    flags = [run["metrics"].get("target_significant") for run in entry["runs"]]
    return f"{sum(1 for f in flags if f)}/{len(flags)}"


def _interval(test: Mapping[str, Any]) -> str:
    if test["difference"] is None:
        return "–"
    if test["low"] is None:
        return f"{test['difference']:+.2f} (no interval: fewer than 2 seeds)"
    return f"{test['difference']:+.2f} [{test['low']:+.2f}, {test['high']:+.2f}]"


def _methods_head(families: Sequence[str]) -> str:
    return (
        "<tr><th>method</th><th>seeds</th><th>target gain</th><th>seeds gaining (95%)</th><th>same-skill change</th>"
        "<th>held-out change (mean)</th>"
        + "".join(f"<th>{html.escape(f)} change</th>" for f in families)
        + "<th>KL to start</th><th>target roughness</th></tr>"
    )


def _method_rows(data: Mapping[str, Any], families: Sequence[str]) -> list[str]:
    body = []
    for method, entry in data["methods"].items():
        m = entry["metrics"]
        body.append(
            f"<tr data-method='{html.escape(method)}'><td>{html.escape(method)}</td><td>{len(entry['runs'])}</td>"
            f"<td>{_pm(m.get('target_gain'))}</td><td>{_significant_seeds(entry)}</td>"
            f"<td>{_pm(m.get('same_skill_change'))}</td>"
            f"<td>{_pm(m.get('ood_change'))}</td>"
            + "".join(f"<td>{_pm(m.get(f'held_out:{f}'))}</td>" for f in families)
            + f"<td>{_pm(m.get('kl_to_start'), 3)}</td><td>{_pm(m.get('target_roughness'))}</td></tr>"
        )
    return body


def _matched_text(test: Mapping[str, Any]) -> str:
    if "matched_gain" not in test:
        return ""
    level = test["matched_gain"]
    return " (no gain both arms reach)" if level is None else f" (at target gain {level:+.1f} points)"


def _claim_rows(data: Mapping[str, Any]) -> list[str]:
    claims = []
    for claim in data["claims"]:
        if claim["verdict"] == "not run":
            detail = f"not run: {html.escape(', '.join(claim['missing']))} not in this study"
        else:
            detail = "<br>".join(
                f"{html.escape(t['metric'])}{_matched_text(t)}: {html.escape(claim['a'])} "
                f"{'>' if t['direction'] == 'greater' else '<'} {html.escape(str(t['versus']))}: "
                f"{_interval(t)}{_pairs_text(t)} → {t['verdict']}"
                for t in claim["tests"]
            )
        claims.append(
            f"<tr data-verdict='{html.escape(claim['verdict'])}'><td>{html.escape(claim['claim'])}</td>"
            f"<td><b>{html.escape(claim['verdict'])}</b></td><td>{detail}</td></tr>"
        )
    return claims


def _pairs_text(test: Mapping[str, Any]) -> str:
    """A family study's test pairs its arms by organism: over how many."""
    return f" (paired over {test['pairs']} organisms)" if "pairs" in test else ""


def headline(data: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figure's numbers (headline.json): per arm, the mean and standard error of its target
    gain and held-out change as the methods table shows them (read from the study's data, not computed
    again), whether it is drawn (both means exist) and whether it is on the frontier: no other arm has at
    least its gain and its held-out change and more of one (harness.evaluation.stats.pareto_front over the means)."""
    points = []
    for arm, entry in data["methods"].items():
        x, y = entry["metrics"].get(HEADLINE_X) or {}, entry["metrics"].get(HEADLINE_Y) or {}
        points.append(
            {
                "arm": arm,
                HEADLINE_X: x.get("mean"),
                f"{HEADLINE_X}_stderr": x.get("stderr"),
                HEADLINE_Y: y.get("mean"),
                f"{HEADLINE_Y}_stderr": y.get("stderr"),
                "seeds": min(x.get("seeds", 0), y.get("seeds", 0)),
                "drawn": x.get("mean") is not None and y.get("mean") is not None,
                **({"organisms": organism_points(entry)} if data.get("sampling_unit") == "organism" else {}),
            }
        )
    drawn = [(p[HEADLINE_X], p[HEADLINE_Y]) for p in points if p["drawn"]]
    front = {drawn[i] for i in pareto_front(drawn)}  # arms at the same place: on it or off it together
    for point in points:
        point["frontier"] = point["drawn"] and (point[HEADLINE_X], point[HEADLINE_Y]) in front
    bars = FAMILY_BARS if data.get("sampling_unit") == "organism" else HEADLINE_BARS
    return {"x": HEADLINE_X, "y": HEADLINE_Y, "bars": bars, "points": points}


def organism_points(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An arm's organisms on the headline figure: each organism's mean over its seeds on both axes."""
    return [
        {"organism": organism, HEADLINE_X: means.get(HEADLINE_X), HEADLINE_Y: means.get(HEADLINE_Y)}
        for organism, means in entry.get("organisms", {}).items()
    ]


def members(point: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    return tuple(
        (o[HEADLINE_X], o[HEADLINE_Y])
        for o in point.get("organisms", [])
        if o[HEADLINE_X] is not None and o[HEADLINE_Y] is not None
    )


def _seeds_text(points: Sequence[Mapping[str, Any]]) -> str:
    counts = {p["seeds"] for p in points}
    if len(counts) == 1:
        n = counts.pop()
        return f"{n} seeds per arm" if n != 1 else "1 seed per arm (no bars: a standard error needs 2)"
    return "seeds per arm: " + ", ".join(f"{p['arm']} {p['seeds']}" for p in points) + " (an arm of 1 seed: no bar)"


def headline_figure(data: Mapping[str, Any], numbers: Mapping[str, Any]) -> str:
    """The figure study.html opens with: one point per arm, target gain (x) against held-out change (y),
    as inline SVG; its points also ride along as the figure's data-points (JSON)."""
    colours = {arm: run_colour(index) for index, arm in enumerate(data["methods"])}  # the curves' colours
    x_se, y_se = f"{HEADLINE_X}_stderr", f"{HEADLINE_Y}_stderr"
    drawn = [
        ArmPoint(p["arm"], p[HEADLINE_X], p[HEADLINE_Y], p[x_se], p[y_se], colours[p["arm"]], p["frontier"], members(p))
        for p in numbers["points"]
        if p["drawn"]
    ]
    if not drawn:
        return "<p class=note>No headline figure: no arm has both a target gain and a held-out change.</p>"
    target, families = html.escape(data["target"]), ", ".join(data["held_out_families"])
    across = "organisms (each the mean over its seeds)" if data.get("sampling_unit") == "organism" else "seeds"
    alt = (
        f"Target gain against held-out change, one point per arm ({', '.join(p.label for p in drawn)}), "
        f"with error bars across {across.split(' (')[0]} and the frontier of arms drawn"
    )
    chart = arms_frontier(
        drawn,
        f"target gain: {data['target']} accuracy − start (points)",
        f"held-out change: mean over {families}\nfinal − start (points; below 0 is forgetting)",
    )
    missing = [p["arm"] for p in numbers["points"] if not p["drawn"]]
    places: dict[tuple[float, float], list[str]] = {}
    for point in drawn:
        places.setdefault((point.x, point.y), []).append(point.label)
    together = "; ".join(", ".join(arms) for arms in places.values() if len(arms) > 1)
    notes = f" Drawn at the same place (equal means): {together}." if together else ""
    if any(point.members for point in drawn):
        notes += " Hollow circles: each organism's mean over its seeds, beside the family's mean (filled)."
    notes += f" Not drawn (no held-out change): {', '.join(missing)}." if missing else ""
    return f"""<h2 id=gain-forgetting>Target gain against held-out change</h2>
<figure id=headline class=headline data-points='{html.escape(json.dumps(numbers["points"]))}'>{svg_markup(chart, alt)}
<figcaption>One point per arm: the mean across {across} of its target gain (x: final − start on {target}) and
of its held-out change (y: mean over {html.escape(families)} of final − start; below 0 is forgetting), the
numbers of the table below. Bars: {numbers["bars"]}; {html.escape(_seeds_text(numbers["points"]))}. Up and to
the right is better: more learning, less forgetting (the axes of "LoRA Learns Less and Forgets Less" and
RL's Razor). Ringed and joined by the dashed line: the frontier, the arms no other arm matches on both axes
while beating them on one (by the means). ★: the starting model.{html.escape(notes)}</figcaption></figure>"""


HEADLINE_STYLE = (
    "figure.headline svg{display:block;width:100%;height:auto;max-width:60rem;"
    "border:1px solid var(--line);border-radius:6px;background:#fff}"
)


def study_html(
    data: Mapping[str, Any], curves_png: bytes, training_png: bytes | None = None, headline_html: str = ""
) -> str:
    families = data["held_out_families"]
    head, body, claims = _methods_head(families), _method_rows(data, families), _claim_rows(data)
    family = data.get("sampling_unit") == "organism"
    unit = "organism" if family else "seed"
    spread = (
        "each organism's mean over its seeds; sample sd / √organisms; the seeds column counts every run"
        if family
        else "sample sd / √seeds"
    )
    runs = "every run (all organisms and seeds)" if family else "seeds"
    interval = (
        "the mean over organisms of a's mean over its seeds − b's, paired organism by organism (a − 0: a's "
        "organism means), with its 95% t interval (organisms − 1 degrees of freedom)"
        if family
        else "difference of the two methods' means across seeds (a − b, or a − 0) with its 95% Welch interval"
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1">
<title>plasticity-bench study</title><style>{STYLE}{HEADLINE_STYLE}</style></head>
<body><main>
<h1>plasticity-bench study</h1>
<p class=sub>suite <b>{html.escape(data["suite"])}</b> · target <b>{html.escape(data["target"])}</b>
· methods {html.escape(", ".join(data["methods"]))}</p>
{headline_html}
{family_section(data)}
<h2 id=methods>Methods across {unit}s</h2>
<p class=note>Mean ± standard error across {unit}s ({spread}) of each run's final − start, in points.
Target gain: on {html.escape(data["target"])} (seeds gaining: runs whose own paired 95% interval of the gain lies
above 0); same-skill change: the target family's other slices (e.g. easy items of the target skill);
held-out change: mean over {html.escape(", ".join(families))} (negative is forgetting). KL to start:
KL(π₀‖π) at the final checkpoint (nats per sequence). Target roughness: RMS of the second differences of the
target curve (lower is smoother).</p>
<table class='summary numbers'><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>
<h2 id=curves>Curves</h2>
<figure>{_image(curves_png, f"accuracy vs step per method, mean across {runs} with standard-error bands")}
<figcaption>Mean across {runs} at each checkpoint; band: ±1 standard error across them.</figcaption></figure>
{training_section(training_png)}
<h2 id=claims>Claims</h2>
<p class=note>Each test: {interval}. Supported: the interval lies wholly on the claimed side of 0; contradicted:
wholly on the other; inconclusive: otherwise (or fewer than 2 {unit}s). A claim is supported when all its tests
are, contradicted when any is.</p>
<table class=claims><thead><tr><th>claim</th><th>verdict</th><th>tests</th></tr></thead>
<tbody>{"".join(claims)}</tbody></table>
</main></body></html>
"""


def family_section(data: Mapping[str, Any]) -> str:
    """A family study (`--organism-seeds`): what its ± and intervals mean, and each arm's organisms side by side."""
    if data.get("sampling_unit") != "organism":
        return ""
    organisms = list(dict.fromkeys(o for entry in data["methods"].values() for o in entry.get("organisms", {})))
    head = "".join(f"<th>organism {html.escape(o)}</th>" for o in organisms)
    rows = []
    for arm, entry in data["methods"].items():
        cells = []
        for organism in organisms:
            means = entry.get("organisms", {}).get(organism, {})
            gain, held = means.get(HEADLINE_X), means.get(HEADLINE_Y)
            cells.append("<td>–</td>" if gain is None else f"<td>{gain:+.1f} / {_signed(held)}</td>")
        rows.append(f"<tr data-arm='{html.escape(arm)}'><td>{html.escape(arm)}</td>{''.join(cells)}</tr>")
    return f"""<h2 id=organisms>Organisms</h2>
<p class=note>A family study: every arm ran from each of {len(organisms)} organisms (the preset's organism
pre-trained with each seed), post-training seeds nested inside. Organisms are the sampling unit: every ± below is
the standard error across organisms of their means over seeds, and every claim compares its two arms organism by
organism (paired: the t interval of the per-organism differences of their means over seeds). Per arm and
organism: target gain / held-out change (mean over seeds, points).</p>
<table class='organisms numbers'><thead><tr><th>arm</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>"""


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def training_section(png: bytes | None) -> str:
    if png is None:
        return ""
    return (
        "<h2 id=training>Training objectives</h2>"
        "<p class=note>Each method's own objective per step, from its first seed's "
        "<code>train_log.parquet</code> (faint: every step; bold: rolling mean over 5% of the steps).</p>"
        f"<figure>{_image(png, 'training objectives vs step, one line per method (first seed)')}</figure>"
    )


def first_seed_runs(by_method: Mapping[str, Sequence[RunData]]) -> list[RunData]:
    """One run per method or arm (its first seed), labelled by the method or arm."""
    return [dataclasses.replace(runs[0], label=method) for method, runs in by_method.items() if runs]


def write_study(
    out: Path, run_dirs: Mapping[str, Sequence[tuple[int, Path]]], claims: Sequence[Claim]
) -> tuple[Path, Path]:
    """study.html, study.json and headline.json (the headline figure's points) in `out`."""
    data, by_method = study_data(run_dirs, claims)
    numbers = headline(data)
    page = study_html(
        data, seed_band_curves(by_method), training_curves(first_seed_runs(by_method)), headline_figure(data, numbers)
    )
    write_json_atomic(out / STUDY_JSON, data)
    write_json_atomic(out / HEADLINE_JSON, numbers)
    write_atomic(out / STUDY_HTML, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out / STUDY_HTML, out / STUDY_JSON
