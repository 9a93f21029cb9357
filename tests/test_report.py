"""The HTML report, opened in a real headless Chromium: it must render without console errors,
show every chart, fetch nothing, and its tables must hold the runs' numbers. Screenshots go to
test-artifacts/ for a person to look at.

Chromium is driven over its DevTools protocol through a pipe (--remote-debugging-pipe), which
needs nothing but the browser itself: no driver package, no browser download.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers import cli, rejected
from tests.test_gate import SLICES, write_run

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WIDTH = 1200  # CSS pixels: a laptop browser window
STEPS = (0, 50, 100, 150, 200, 250, 300)

# Accuracy (%) per checkpoint in STEPS, per family, shaped like the embedded organism's real runs.
TRAJECTORIES = {
    "sft": {
        "math": (5, 16, 50, 66, 82, 87, 87),
        "reasoning": (97, 86, 74, 69, 64, 62, 62),
        "code": (88, 40, 32, 32, 29, 30, 30),
    },
    "rps": {
        "math": (5, 8, 6, 6, 4, 5, 4),
        "reasoning": (97, 98, 97, 97, 97, 97, 96),
        "code": (88, 74, 71, 71, 72, 67, 67),
    },
    "eps": {
        "math": (5, 8, 6, 6, 26, 47, 58),
        "reasoning": (97, 98, 97, 97, 66, 63, 63),
        "code": (88, 74, 71, 71, 30, 26, 26),
    },
}
N_PER_SLICE = 100


class Chromium:
    """A headless Chromium and one page, spoken to in DevTools-protocol messages over a pipe."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    )

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        commands_read, self.commands = os.pipe()
        self.replies, replies_write = os.pipe()
        # The protocol pipe is fds 3 (browser reads) and 4 (browser writes). Copies at fd >= 10
        # first, so dup2 never lands on its own fd (which would keep it close-on-exec).
        high_read, high_write = (
            fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10),
            fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10),
        )

        def onto_fds_3_and_4() -> None:
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self.process = subprocess.Popen(
            [binary, *self.FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=onto_fds_3_and_4,
        )
        for fd in (commands_read, replies_write, high_read, high_write):
            os.close(fd)
        self.buffer, self.last_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", page=True)

    def _next_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (crashed?)")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, page: bool = False, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        message = {
            "id": self.last_id,
            "method": method,
            "params": params,
            **({"sessionId": self.session} if page else {}),
        }
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next_message(deadline)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, path: Path, timeout: float = 60) -> None:
        self.events.clear()
        self.send(
            "Emulation.setDeviceMetricsOverride", page=True, width=WIDTH, height=900, deviceScaleFactor=1, mobile=False
        )
        self.send("Page.navigate", page=True, url=path.resolve().as_uri())
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._next_message(deadline))

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", page=True, expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser-logged errors (failed loads) so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self, out: Path) -> None:
        """The whole page, top to bottom, at the emulated width."""
        height = int(self.send("Page.getLayoutMetrics", page=True)["cssContentSize"]["height"])
        self.send(
            "Emulation.setDeviceMetricsOverride",
            page=True,
            width=WIDTH,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        png = self.send("Page.captureScreenshot", page=True, format="png", captureBeyondViewport=True)["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(png))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
            self.process.wait(timeout=10)
        except (TimeoutError, RuntimeError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self.commands)
            os.close(self.replies)
            shutil.rmtree(self.profile, ignore_errors=True)


def chromium_binary() -> str:
    """The installed Chromium; its absence fails (not skips) the test, so a CI machine that lost
    it cannot pass the report check without running it."""
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if found is None:
        pytest.fail("no Chromium on PATH; install it (Debian/Ubuntu: apt-get install -y chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Chromium:
    chrome = Chromium(chromium_binary())
    yield chrome
    chrome.close()


def trajectory_run(root: Path, method: str) -> Path:
    """A run whose per-family accuracy follows TRAJECTORIES[method] exactly. Each item has one
    fixed difficulty (its rank in its slice) shared by all methods, so the runs start from the
    same model and items flip the way real checkpoints do."""
    rng = np.random.default_rng(7)
    difficulty = np.concatenate([rng.permutation(N_PER_SLICE) / N_PER_SLICE for _slice in SLICES])
    correct = {}
    for index, step in enumerate(STEPS):
        accuracy = np.concatenate(
            [np.full(N_PER_SLICE, TRAJECTORIES[method][family][index] / 100) for family, *_ in SLICES]
        )
        correct[step] = difficulty < accuracy
    stages = {step: ("hard" if method == "sft" or step > 150 else "easy") for step in STEPS}
    return write_run(root / method, correct, N_PER_SLICE, method=method, stage_of_step=stages)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("methods")
    return [trajectory_run(root, method) for method in TRAJECTORIES]


PAGE_FACTS = """(() => ({
  images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, inline: i.src.startsWith('data:image/png;base64,')})),
  external: [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => !u.startsWith('data:') && !u.startsWith('#')),
  fetched: performance.getEntriesByType('resource').map(e => e.name),
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  results: [...document.querySelectorAll('table.results tr[data-family]')].map(r => ({family: r.dataset.family, slice: r.dataset.slice, method: r.dataset.method, cells: [...r.cells].map(c => c.textContent.trim())})),
  summary: [...document.querySelectorAll('table.summary tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim())),
  flips: [...document.querySelectorAll('details.flips summary')].map(s => s.textContent.trim()),
}))()"""


def expected_rows(run: Path) -> dict[tuple[str, str], dict[str, str]]:
    """What the family table must say about a run, computed here from aggregates.parquet and
    records.parquet (not with the report's code)."""
    agg = pd.read_parquet(run / "aggregates.parquet")
    records = pd.read_parquet(run / "records.parquet")
    first, last = records.step.min(), records.step.max()
    paired = records[records.step == first].merge(records[records.step == last], on="item_id", suffixes=("", "_final"))
    slices_per_family = agg[agg.slice != "all"].groupby("family").slice.nunique()
    shown = (agg.slice == "all") | agg.family.map(
        lambda family: slices_per_family.get(family, 0) > 1
    )  # every family's slices, if several
    rows = {}
    for (family, slice_), group in agg[shown].groupby(["family", "slice"]):
        group = group.sort_values("step")
        in_group = paired[
            (paired.family == family) & ((slice_ == "all") | (paired.task + "/" + paired.level == slice_))
        ]
        lost = int((in_group.correct & ~in_group.correct_final).sum())
        gained = int((~in_group.correct & in_group.correct_final).sum())
        rows[family, slice_] = {
            "n": str(group.n.iloc[-1]),
            "start": f"{group.score.iloc[0]:.1f}",
            "final": f"{group.score.iloc[-1]:.1f}",
            "best": f"{group.score.max():.1f}",
            "change": f"{group.score.iloc[-1] - group.score.iloc[0]:+.1f}",
            "lost / gained": f"{lost} / {gained}",
        }
    return rows


def check_page(browser: Chromium, page: Path, runs: Sequence[Path], screenshot: Path) -> dict[str, Any]:
    browser.open(page)
    facts = browser.evaluate(PAGE_FACTS)
    browser.screenshot(screenshot)
    assert browser.errors() == []
    charts = 2 + any(
        (Path(run) / "kl_to_start.parquet").is_file() for run in runs
    )  # the KL-to-start chart when a run has it
    charts += any(
        (Path(run) / "train_log.parquet").is_file() for run in runs
    )  # and the training objectives when one was trained here
    assert len(facts["images"]) == charts and all(
        i["complete"] and i["width"] > 600 and i["height"] > 300 and i["inline"] for i in facts["images"]
    )
    assert facts["external"] == [] and facts["fetched"] == []  # self-contained: nothing to fetch
    assert facts["overflow"] <= 0, "the page is wider than the window"
    assert screenshot.stat().st_size > 50_000

    columns = ("method", "n", "start", "final", "best", "at step", "change", "95% CI", "lost / gained")
    shown = {(r["method"], r["family"], r["slice"]): dict(zip(columns, r["cells"])) for r in facts["results"]}
    labels = [json.loads((run / "run.json").read_text())["method"] for run in runs]
    assert len(shown) == len(facts["results"])  # no row twice
    for label, run in zip(labels, runs):
        expected = expected_rows(run)
        assert {(f, s) for m, f, s in shown if m == label} == set(expected)
        for (family, slice_), numbers in expected.items():
            row = shown[label, family, slice_]
            assert {key: row[key] for key in numbers} == numbers, (label, family, slice_)
            low, high = (float(v) for v in row["95% CI"].strip("[]").split(","))
            assert low <= float(row["change"]) <= high
    assert [row[0] for row in facts["summary"]] == labels
    return facts


def test_report_of_three_methods_in_chromium(browser: Chromium, three_runs: list[Path], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    done = cli("report", *map(str, three_runs), "-o", str(page))
    assert done.returncode == 0, done.stderr
    facts = check_page(browser, page, three_runs, ARTIFACTS / "report-three-methods.png")
    gains = {row[0]: row[1] for row in facts["summary"]}
    assert gains == {"sft": "+82.0", "rps": "-1.0", "eps": "+53.0"}  # math (its hard slice): final − start
    sft_examples = facts["summary"][0][6]  # after the KL-to-start column
    assert sft_examples == "9,600"  # from the manifest: 32 per step × 300 steps
    assert len(facts["flips"]) == 3 * 3 and facts["flips"][0].startswith("math: 0 right → wrong, 82 wrong → right")


def test_run_report_of_the_smoke_run_in_chromium(browser: Chromium, smoke_run: Path) -> None:
    """The report `bench run` itself wrote (harness/app/stages/report.py)."""
    check_page(browser, smoke_run / "report.html", [smoke_run], ARTIFACTS / "report-smoke-run.png")


def test_combined_report_writes_nothing_into_the_runs(three_runs: list[Path], tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for run in three_runs for p in run.rglob("*")}
    assert cli("report", *map(str, three_runs[:2]), "-o", str(tmp_path / "two.html")).returncode == 0
    assert {p: p.stat().st_mtime_ns for run in three_runs for p in run.rglob("*")} == before


# ---------------------------------------------------------------- bad input: one line, exit 2


def test_report_refuses_runs_on_different_items(bench, three_runs: list[Path], smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed.html"
    rejected(bench("report", str(three_runs[0]), str(smoke_run), "-o", str(out)), "different item sets")  # end to end
    assert not out.exists()
    other = tmp_path / "other-suite"
    shutil.copytree(three_runs[1], other)
    meta = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**meta, "suite": "mega"}))
    rejected(cli("report", str(three_runs[0]), str(other), "-o", str(out)), "different suites (micro vs mega)")


def test_report_refuses_an_unscored_run(three_runs: list[Path], tmp_path: Path) -> None:
    unscored = tmp_path / "unscored"
    shutil.copytree(three_runs[0], unscored)
    (unscored / "aggregates.parquet").unlink()
    rejected(cli("report", str(unscored)), "has no aggregates.parquet", "bench score")
    (unscored / "records.parquet").unlink()
    rejected(cli("report", str(unscored)), "has no records.parquet")
    rejected(cli("report", str(three_runs[0]), str(three_runs[1])), "several runs need --output FILE")
