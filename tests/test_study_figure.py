"""The study's headline figure (issue 23, item 5): study.html opens with every arm as one point of
target gain (x) against held-out change (y), ± standard error across seeds, the frontier drawn.

The study is the test-scale one of tests/test_study.py (sft and the rps-half arm × seeds 0,1 at smoke
size, shared through its session fixture); the calibration study (benchmarks/bench_calibration.py,
fifteen arms × three seeds) writes the same page at full size. The page is opened in headless Chromium
(tests/test_report.py's driver) and screenshotted to test-artifacts/study-headline.png; beyond the
picture, the points drawn in the SVG, the figure's data, headline.json, study.json and the methods
table must all hold the same arms and the same numbers.
"""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plasticity_bench.reports.study import headline, write_study
from tests.test_gate import SLICES, write_run
from tests.test_report import (  # noqa: F401  (browser: the module's Chromium)
    ARTIFACTS,
    N_PER_SLICE,
    STEPS,
    TRAJECTORIES,
    Chromium,
    browser,
)
from tests.test_study import SmokeStudy, smoke_study  # noqa: F401  (the session's study folder)

pytestmark = pytest.mark.xdist_group("smoke_study")  # one worker builds the module's shared study/runs once

ARMS = ["sft", "rps-half"]  # the smoke study's arms, in the order of its command line

FIGURE_FACTS = """(() => {
  const figure = document.querySelector('main figure');
  const svg = figure.querySelector('svg');
  const table = document.querySelector('table.summary');
  const centre = g => { const r = g.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; };
  return {
    id: figure.id,
    before_table: Boolean(figure.compareDocumentPosition(table) & Node.DOCUMENT_POSITION_FOLLOWING),
    top: figure.getBoundingClientRect().top,
    width: svg.getBoundingClientRect().width,
    height: svg.getBoundingClientRect().height,
    role: svg.getAttribute('role'),
    alt: svg.getAttribute('aria-label'),
    caption: figure.querySelector('figcaption').textContent.replace(/\\s+/g, ' '),
    data: JSON.parse(figure.dataset.points),
    points: [...svg.querySelectorAll('g[id^="headline-point-"]')].map(g => ({arm: g.id.slice(15), at: centre(g)})),
    labels: [...svg.querySelectorAll('g[id^="headline-label-"]')].map(g => [g.id.slice(15), g.textContent.trim()]),
    frontier: svg.querySelectorAll('g#headline-frontier').length,
    rows: [...table.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim())),
    external: [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
    fetched: performance.getEntriesByType('resource').map(e => e.name),
    overflow: document.documentElement.scrollWidth - window.innerWidth,
  };
})()"""


def shown(mean: float, stderr: float | None) -> str:
    """A number as the methods table shows it (mean ± standard error, one decimal)."""
    return f"{mean:+.1f} ± {stderr:.1f}" if stderr is not None else f"{mean:+.1f}"


def frontier_by_hand(points: list[dict[str, Any]]) -> set[str]:
    """The arms no other arm dominates: none has at least their gain and held-out change and more of one."""

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        at_least = a["target_gain"] >= b["target_gain"] and a["ood_change"] >= b["ood_change"]
        return at_least and (a["target_gain"], a["ood_change"]) != (b["target_gain"], b["ood_change"])

    return {p["arm"] for p in points if not any(dominates(other, p) for other in points)}


def test_headline_points_are_the_study_tables_numbers(smoke_study: SmokeStudy) -> None:  # noqa: F811
    study = json.loads((smoke_study.out / "study.json").read_text())
    numbers = json.loads((smoke_study.out / "headline.json").read_text())
    assert (numbers["x"], numbers["y"]) == ("target_gain", "ood_change")
    points = numbers["points"]
    assert [p["arm"] for p in points] == ARMS and sorted(study["methods"]) == sorted(ARMS)  # one point per arm
    for point in points:
        metrics = study["methods"][point["arm"]]["metrics"]
        for axis in ("target_gain", "ood_change"):
            assert point[axis] == metrics[axis]["mean"] and point[f"{axis}_stderr"] == metrics[axis]["stderr"]
            assert point[f"{axis}_stderr"] is not None  # two seeds: a bar on both axes
        assert point["seeds"] == 2 and point["drawn"]
    assert {p["arm"] for p in points if p["frontier"]} == frontier_by_hand(points)
    again = headline(study)  # from study.json as written (its keys sorted): the same points, nothing else
    assert {k: v for k, v in again.items() if k != "points"} == {k: v for k, v in numbers.items() if k != "points"}
    assert sorted(again["points"], key=lambda p: p["arm"]) == sorted(points, key=lambda p: p["arm"])


def check_study_page(chrome: Chromium, folder: Path, arms: list[str], seeds: int, screenshot: Path) -> None:
    """study.html in Chromium: it opens with the headline figure, one point per arm drawn where the
    numbers put it, and those numbers are headline.json's and the methods table's."""
    numbers = json.loads((folder / "headline.json").read_text())
    chrome.open(folder / "study.html")
    facts = chrome.evaluate(FIGURE_FACTS)
    chrome.screenshot(screenshot)
    assert chrome.errors() == []
    assert screenshot.stat().st_size > 50_000
    assert facts["external"] == [] and facts["fetched"] == []  # self-contained: the SVG is inline
    assert facts["overflow"] <= 0, "the page is wider than the window"

    # the page opens with it: the first figure, above the methods table, inside the first screenful
    assert facts["id"] == "headline" and facts["before_table"] and facts["top"] < 400
    assert facts["width"] > 600 and facts["height"] > 300
    assert facts["role"] == "img" and all(arm in facts["alt"] for arm in arms)
    for words in ("target gain", "held-out change", "standard error across seeds", f"{seeds} seeds per arm"):
        assert words in facts["caption"], words

    # one point drawn per arm, each named, and the frontier line; the figure's data is headline.json's
    assert [p["arm"] for p in facts["points"]] == [p["arm"] for p in numbers["points"]] == arms
    assert facts["labels"] == [[arm, arm] for arm in arms]
    assert facts["frontier"] == 1 and "frontier" in facts["caption"]
    places = {(p["target_gain"], p["ood_change"]) for p in numbers["points"]}
    assert ("Drawn at the same place" in facts["caption"]) == (len(places) < len(arms))
    assert facts["data"] == numbers["points"]

    # where the points sit follows the numbers: more gain further right, more held-out change higher up
    at = {p["arm"]: p["at"] for p in facts["points"]}
    by_arm = {p["arm"]: p for p in numbers["points"]}
    for a, b in itertools.combinations(arms, 2):
        for axis, pixel, sign in (("target_gain", 0, 1), ("ood_change", 1, -1)):  # screen y grows downwards
            difference = by_arm[a][axis] - by_arm[b][axis]
            if abs(difference) > 0.5:  # far enough apart to be told apart in pixels
                assert (at[a][pixel] - at[b][pixel]) * sign * difference > 0, (a, b, axis)
            elif difference == 0:
                assert abs(at[a][pixel] - at[b][pixel]) < 1, (a, b, axis)

    # the coordinates are the methods table's numbers, as it prints them
    rows = {row[0]: row for row in facts["rows"]}
    for point in numbers["points"]:
        row = rows[point["arm"]]
        assert row[2] == shown(point["target_gain"], point["target_gain_stderr"])  # target gain column
        assert row[5] == shown(point["ood_change"], point["ood_change_stderr"])  # held-out change (mean) column


def test_smoke_study_page_opens_with_the_headline_figure_in_chromium(
    browser: Chromium,  # noqa: F811
    smoke_study: SmokeStudy,  # noqa: F811
) -> None:
    """The study `bench study` wrote (at smoke size its arms barely move: the points may coincide)."""
    check_study_page(browser, smoke_study.out, ARMS, 2, ARTIFACTS / "study-headline-smoke.png")


SEED_SHIFT = {0: 0, 1: 4}  # points added to every trained checkpoint's accuracy: two seeds that differ


def seeded_run(root: Path, method: str, seed: int) -> Path:
    """tests/test_report.py's run shaped like the organism's real runs (TRAJECTORIES), its trained
    checkpoints moved by the seed's shift."""
    rng = np.random.default_rng(7)
    difficulty = np.concatenate([rng.permutation(N_PER_SLICE) / N_PER_SLICE for _slice in SLICES])
    correct = {}
    for index, step in enumerate(STEPS):
        shift = SEED_SHIFT[seed] if index else 0
        accuracy = [min(100, TRAJECTORIES[method][family][index] + shift) / 100 for family, *_ in SLICES]
        correct[step] = difficulty < np.repeat(accuracy, N_PER_SLICE)
    return write_run(root / f"{method}-seed{seed}", correct, N_PER_SLICE, method=method)


def test_study_of_three_methods_draws_them_where_their_numbers_are(
    browser: Chromium,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Three methods × two seeds with known numbers (no training): sft and rps on the frontier, eps
    beaten by sft on both axes; the screenshot shows a figure a reader can judge."""
    runs = {method: [(seed, seeded_run(tmp_path, method, seed)) for seed in SEED_SHIFT] for method in TRAJECTORIES}
    write_study(tmp_path, runs, [])
    numbers = json.loads((tmp_path / "headline.json").read_text())
    assert {p["arm"]: p["frontier"] for p in numbers["points"]} == {"sft": True, "rps": True, "eps": False}
    sft = next(p for p in numbers["points"] if p["arm"] == "sft")
    assert sft["target_gain"] == pytest.approx(82 + 2) and sft["target_gain_stderr"] == pytest.approx(2)
    check_study_page(browser, tmp_path, list(TRAJECTORIES), 2, ARTIFACTS / "study-headline-three-methods.png")


def test_headline_frontier_and_arms_without_held_out_change() -> None:
    """The frontier over constructed arms, and an arm with no held-out change: listed, not drawn."""

    def metric(value: float | None) -> dict[str, Any]:
        return {"mean": value, "stderr": None if value is None else 1.0, "seeds": 0 if value is None else 3}

    def entry(gain: float | None, change: float | None) -> dict[str, Any]:
        return {"runs": [], "metrics": {"target_gain": metric(gain), "ood_change": metric(change)}}

    data = {
        "methods": {
            "a": entry(50.0, -10.0),  # most gain
            "b": entry(20.0, -1.0),  # least forgetting
            "c": entry(19.0, -5.0),  # beaten by b on both
            "d": entry(35.0, -4.0),  # between a and b: on the frontier
            "e": entry(10.0, None),  # no held-out family
            "f": entry(35.0, -4.0),  # where d is: on the frontier with it
            "g": entry(35.0, -6.0),  # d's gain, more forgetting: off it
        }
    }
    numbers = headline(data)
    assert [p["arm"] for p in numbers["points"] if p["frontier"]] == ["a", "b", "d", "f"]
    assert [p["arm"] for p in numbers["points"] if not p["drawn"]] == ["e"]
    assert frontier_by_hand([p for p in numbers["points"] if p["drawn"]]) == {"a", "b", "d", "f"}


@pytest.mark.parametrize("seeds", [1, 3])
def test_headline_caption_says_how_many_seeds(seeds: int) -> None:
    from plasticity_bench.reports.study import headline_figure

    stderr = None if seeds == 1 else 0.5
    metric = {"mean": 5.0, "stderr": stderr, "seeds": seeds}
    data = {
        "target": "math/hard",
        "held_out_families": ["reasoning", "code"],
        "methods": {"sft": {"runs": [], "metrics": {"target_gain": metric, "ood_change": {**metric, "mean": -2.0}}}},
    }
    figure = html.unescape(headline_figure(data, headline(data)))
    expected = "1 seed per arm (no bars: a standard error needs 2)" if seeds == 1 else "3 seeds per arm"
    assert expected in figure and 'id="headline-point-sft"' in figure and "<svg" in figure
