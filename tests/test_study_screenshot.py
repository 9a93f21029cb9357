"""The calibration study's study.html in headless Chromium (issue 23, must-show 5): the gain-versus-forgetting
figure opens the page with one point per method and arm.

The calibration study is `benchmarks/bench_calibration.py`: every method (its METHODS) and the arms of
`benchmarks/calibration_arms.yaml`, three seeds each, with `benchmarks/calibration_claims.yaml`. Its runs take
an hour and a half on 2 cores, so this test does not train: it writes, per arm and seed, a scored run folder
whose numbers are the committed result's (`benchmarks/results/calibration.md`: target start → final, reasoning
and code change per arm, the seeds spread ±1 point around them), and the study page is written from those
folders by the code `bench study` calls (reports/study.py `write_study`). The arm list, the claims and the
numbers are the calibration study's; the page is checked as tests/test_study_figure.py checks the smoke study's
(one point per arm where its numbers put it, the methods table's numbers), then the screenshot is looked at:
a picture of the expected size whose figure is not blank.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from plasticity_bench.harness.app.study import study_arms
from plasticity_bench.harness.evaluation.claims import load_claims
from plasticity_bench.harness.evaluation.scoring import aggregate
from plasticity_bench.reports.study import write_study
from tests.test_gate import SLICES, write_run
from tests.test_report import (  # noqa: F401  (browser: the module's Chromium)
    ARTIFACTS,
    N_PER_SLICE,
    WIDTH,
    Chromium,
    browser,
)
from tests.test_study_figure import check_study_page

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "benchmarks" / "bench_calibration.py"
RESULT = ROOT / "benchmarks" / "results" / "calibration.md"
SEED_SPREAD = {0: -1, 1: 0, 2: 1}  # points added to every trained checkpoint, per seed: three seeds that differ
STEPS = (0, 100, 200, 300)  # the calibration runs' 300 steps; fewer checkpoints than its 7: aggregating is the cost
START = {"math": 36, "reasoning": 97, "code": 88}  # the organism's start on each family (calibration.md: 35.7)


def calibration_study() -> tuple[list[str], Path, Path]:
    """The calibration study's arms in its order (--methods, then the arms file), its arms and claims files."""
    spec = importlib.util.spec_from_file_location("bench_calibration", CALIBRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(study_arms(module.METHODS, module.ARMS)), module.ARMS, module.CLAIMS


def committed_numbers() -> dict[str, dict[str, float]]:
    """Per arm, from calibration.md's first table: target gain, reasoning change, code change (means, points)."""
    table = RESULT.read_text().split("## Every arm", 1)[1].split("\n## ", 1)[0]
    numbers = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 8 and re.fullmatch(r"[a-z][a-z0-9.-]*", cells[0]) and cells[0] != "arm":
            mean = [float(cell.split("±")[0]) for cell in (cells[3], cells[5], cells[6])]
            numbers[cells[0]] = dict(zip(("math", "reasoning", "code"), mean))
    return numbers


def accuracy_at(step_index: int, change: dict[str, float], seed: int) -> np.ndarray:
    """Per item slice (tests/test_gate.py's SLICES), the share right at that checkpoint: START moving
    linearly to START + change (+ the seed's spread) over the run."""
    moved = step_index / (len(STEPS) - 1)
    shares = [
        min(100.0, max(0.0, START[family] + moved * (change[family] + SEED_SPREAD[seed]))) / 100
        for family, *_ in SLICES
    ]
    return np.repeat(shares, N_PER_SLICE)


def arm_runs(root: Path, numbers: dict[str, dict[str, float]]) -> dict[str, list[tuple[int, Path]]]:
    """Every arm × seed as a scored run folder. The first is written by tests/test_gate.py's `write_run`; the
    others are copies of it with their own records and aggregates (the same items: making them again per run
    would be most of this test's time)."""
    rng = np.random.default_rng(7)
    difficulty = np.concatenate([rng.permutation(N_PER_SLICE) / N_PER_SLICE for _slice in SLICES])
    first_arm = next(iter(numbers))
    template = write_run(
        root / "template", {step: difficulty < accuracy_at(i, numbers[first_arm], 0) for i, step in enumerate(STEPS)},
        N_PER_SLICE, method=first_arm,
    )  # fmt: skip
    items = pd.read_parquet(template / "eval_items.parquet")
    runs: dict[str, list[tuple[int, Path]]] = {}
    for arm, change in numbers.items():
        for seed in SEED_SPREAD:
            folder = root / f"{arm}-seed{seed}"
            shutil.copytree(template, folder)
            right = {step: difficulty < accuracy_at(i, change, seed) for i, step in enumerate(STEPS)}
            write_records(folder, items, right)
            meta = json.loads((folder / "run.json").read_text())
            (folder / "run.json").write_text(json.dumps({**meta, "method": arm, "fingerprint": f"{arm}-{seed}"}))
            runs.setdefault(arm, []).append((seed, folder))
    return runs


def write_records(folder: Path, items: pd.DataFrame, right: dict[int, np.ndarray]) -> None:
    """records.parquet and aggregates.parquet as `write_run` writes them, for other outcomes."""
    records = pd.concat(
        [
            pd.DataFrame(
                {
                    "item_id": items["id"],
                    "step": step,
                    "family": items["family"],
                    "task": items["task"],
                    "level": items["level"],
                    "output": np.where(ok, items["answer"], "?"),
                    "score": ok.astype(float),
                    "correct": ok.astype(bool),
                    "outcome": "",
                }
            )
            for step, ok in sorted(right.items())
        ],
        ignore_index=True,
    )
    records.to_parquet(folder / "records.parquet", index=False)
    aggregate(records).to_parquet(folder / "aggregates.parquet", index=False)


def test_calibration_study_page_shows_every_arm_in_the_headline_figure(
    browser: Chromium,  # noqa: F811
    tmp_path: Path,
) -> None:
    arms, arms_file, claims_file = calibration_study()
    numbers = committed_numbers()
    assert len(arms) == 15 and sorted(numbers) == sorted(arms), (arms, sorted(numbers))  # the result is this study's
    runs = arm_runs(tmp_path / "runs", {arm: numbers[arm] for arm in arms})
    write_study(tmp_path, runs, load_claims(claims_file))

    points = json.loads((tmp_path / "headline.json").read_text())["points"]
    assert [p["arm"] for p in points] == arms and all(p["drawn"] and p["seeds"] == 3 for p in points)
    sft = next(p for p in points if p["arm"] == "sft")
    assert sft["target_gain"] == pytest.approx(numbers["sft"]["math"], abs=1)  # the committed numbers, to a point

    screenshot = ARTIFACTS / "study-headline-calibration.png"
    check_study_page(browser, tmp_path, arms, 3, screenshot)  # one point per arm, where its numbers put it

    # the picture itself: the page's width, and a figure that is drawn, not blank
    facts = browser.evaluate(
        "(() => { const r = document.querySelector('main figure svg').getBoundingClientRect();"
        " return [r.left, r.top + window.scrollY, r.width, r.height]; })()"
    )
    with Image.open(screenshot) as image:
        assert image.width == WIDTH and image.height > 1000
        left, top, width, height = (round(value) for value in facts)
        figure = np.asarray(image.convert("RGB").crop((left, top, left + width, top + height)))
    inked = (figure < 230).any(axis=2).mean()  # share of the figure's pixels that are not (near) white
    colours = len(np.unique(figure.reshape(-1, 3), axis=0))
    assert 0.01 < inked < 0.6, inked
    assert colours > 15, colours  # axes, bars, the frontier and the arms' colours
