"""`bench eval --watch DIR`: score each checkpoint of a training output folder as the trainer finishes
writing it, into one run folder, until the trainer marks the end (docs/watch.md).

A checkpoint counts when it is complete: with `BenchCheckpointCallback` (harness/app/callback.py) in the
Trainer, when its marker exists; without it, once none of its files has changed for the settle time.
Each round puts the complete checkpoints in the run's manifest and runs the ordinary generate → score →
report stages: generate writes only the steps that have no generations yet (one backend, one engine,
for the whole watch), score and report cover every step. The run folder, its fingerprint included, is
the one `bench eval DIR` makes over the same checkpoints, so its records are the same.

The watch ends when the callback's end marker exists and every complete checkpoint is scored, or, with
`--watch-timeout`, when no new checkpoint has come for that long.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")  # as harness/app/sweep.py reads a Trainer's folder
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WatchSettings:
    settle: float  # seconds without a change before an unmarked checkpoint counts (no callback)
    timeout: float | None  # seconds without a new checkpoint that end the watch (None: only the end marker)
    poll: float = POLL_SECONDS


def check_watch(paths: Sequence[Path], steps: object, refresh: bool, report_to: Sequence[str]) -> Path:
    """The one training output folder `--watch` follows; one-line errors for what it cannot take."""
    if len(paths) != 1:
        raise BenchError(f"--watch follows one training output folder, got {len(paths)} paths")
    folder = Path(paths[0])
    if not folder.is_dir():
        raise BenchError(f"--watch needs a training output folder (where checkpoint-N folders appear): {folder}")
    for given, option in ((steps is not None, "--steps"), (refresh, "--refresh"), (bool(report_to), "--report-to")):
        if given:
            raise BenchError(f"{option} cannot be combined with --watch")
    return folder


def check_settings(settle: float, timeout: float | None) -> WatchSettings:
    if settle < 0:
        raise BenchError(f"--watch-settle must be 0 or more seconds, got {settle}")
    if timeout is not None and timeout <= 0:
        raise BenchError(f"--watch-timeout must be a positive number of seconds, got {timeout}")
    return WatchSettings(settle, timeout)


def _newest_change(folder: Path) -> float:
    return max((path.stat().st_mtime for path in folder.rglob("*") if path.is_file()), default=folder.stat().st_mtime)


def complete_checkpoints(folder: Path, settle: float, now: float | None = None) -> list[Path]:
    """The checkpoint-N folders the trainer has finished writing, in step order: marked by the callback
    when it is in use (its folder marker exists), else unchanged for `settle` seconds."""
    from plasticity_bench.harness.app.callback import COMPLETE_MARKER, WATCHED_MARKER

    marked = (folder / WATCHED_MARKER).is_file()
    now = time.time() if now is None else now
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_DIR.fullmatch(path.name)
        if match is None or not path.is_dir():
            continue
        try:
            ready = (path / COMPLETE_MARKER).is_file() if marked else now - _newest_change(path) >= settle
        except FileNotFoundError:  # a file removed while we looked (the trainer rotating checkpoints)
            continue
        if ready:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def watch_identity(
    folder: Path, backend: str, seed: int, base_model: Path | None, label: str, per_slice: int | None
) -> dict[str, Any]:
    """What defines the sweep: the same as `bench eval DIR` (same fingerprint)."""
    from plasticity_bench.harness.app.evaluate import sweep_identity

    return sweep_identity([folder], None, backend, seed, base_model, label, per_slice)


def watch_sweep(
    folder: Path,
    suite_ref: str,
    out: Path,
    base_model: Path | None,
    backend: str,
    seed: int,
    label: str,
    per_slice: int | None,
    quiet: bool,
    settings: WatchSettings,
) -> Any:
    """Follow `folder` until training ends; returns the run folder's RunStore."""
    from plasticity_bench.harness.app.evaluate import check_per_slice, open_sweep, prepare_sweep
    from plasticity_bench.harness.backends import BackendPool

    check_per_slice(per_slice)
    identity = watch_identity(folder, backend, seed, base_model, label, per_slice)
    sweep = prepare_sweep(suite_ref, out, backend, identity, False)
    new_folder = not out.exists()
    try:
        store = open_sweep(sweep, out, seed, label)
        with BackendPool() as backends:
            _watch_loop(store, sweep, folder, base_model, backends, seed, quiet, settings)
    except BenchError:
        if new_folder:  # leave no half-made run behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    return store


def _scored_steps(store: Any) -> set[int]:
    """The steps of a finished round (none while a round is unfinished: a watch resumed redoes it)."""
    return _scored_steps_of_manifest(store) if store.stage_done("report") else set()


def _scored_steps_of_manifest(store: Any) -> set[int]:
    from plasticity_bench.harness.store import MANIFEST, read_manifest

    if not (store.checkpoints / MANIFEST).is_file():
        return set()
    return {record.step for record in read_manifest(store.checkpoints)}


def _watch_loop(
    store: Any,
    sweep: Any,
    folder: Path,
    base_model: Path | None,
    backends: Any,
    seed: int,
    quiet: bool,
    settings: WatchSettings,
) -> None:
    from plasticity_bench.harness.app.callback import DONE_MARKER

    scored = _scored_steps(store)
    last_new = time.monotonic()
    while True:
        ended = (folder / DONE_MARKER).is_file()  # read first: a checkpoint saved before the end is listed below
        ready = complete_checkpoints(folder, settings.settle)
        steps = {int(path.name.split("-")[1]) for path in ready}
        if steps - scored:
            sweep = _score_round(store, sweep, ready, base_model, backends, seed, quiet)
            scored = _scored_steps(store)
            last_new = time.monotonic()
            continue  # look again at once: more may have come while this round ran
        if ended or (settings.timeout is not None and time.monotonic() - last_new >= settings.timeout):
            break
        time.sleep(settings.poll)
    if not scored:
        raise BenchError(f"training in {folder} ended (or --watch-timeout passed) with no complete checkpoint")


def _score_round(
    store: Any, sweep: Any, ready: list[Path], base_model: Path | None, backends: Any, seed: int, quiet: bool
) -> Any:
    """One round: the complete checkpoints become the manifest, the new ones are generated, all scored and
    reported. Returns the sweep with its backend fixed to the one that generated (one engine throughout)."""
    from dataclasses import replace

    from plasticity_bench.harness.app.evaluate import adopt_sweep
    from plasticity_bench.harness.app.stages.generate import generate
    from plasticity_bench.harness.app.stages.report import report
    from plasticity_bench.harness.app.stages.score import score
    from plasticity_bench.harness.app.sweep import discover_sweep
    from plasticity_bench.harness.backends.auto import resolve_backend

    store.mark_stage("train", False)  # the manifest grows: generate, score and report follow it again
    points = discover_sweep(ready, None, base_model, work_dir=store.root)
    before = _scored_steps_of_manifest(store)
    adopt_sweep(store, points)
    rounds = store.metadata().get("watch_rounds", [])  # which steps each round added: how the watch saw them come
    store.update_metadata(watch_rounds=[*rounds, [point.step for point in points if point.step not in before]])
    generate(store, sweep.suite, sweep.backend, sweep.requested, backends, seed, quiet)
    score(store)
    report(store)
    chosen = store.metadata()["backend"]  # `auto` decided at the first round: kept for the rest
    return replace(sweep, backend=resolve_backend(chosen), requested=chosen)
