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

A Trainer with `save_total_limit` deletes old checkpoints while the watch works. So each complete checkpoint
is first pinned: its model files hard-linked into the run folder (`watched-checkpoints/`, copied where links
cannot cross file systems), and the manifest points there. A deletion then removes only the Trainer's names:
a checkpoint the watch pinned stays scored and can be generated again; one deleted before it was pinned is
skipped with a one-line warning.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError, warn

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")  # as harness/app/sweep.py reads a Trainer's folder
POLL_SECONDS = 1.0
PINNED = "watched-checkpoints"  # in the run folder: the checkpoints the watch scores, pinned
# Training state a checkpoint holds for resuming, never read by scoring: not pinned, so the disk a Trainer's
# rotation frees is at least the optimizer's (the largest part of a full fine-tune's checkpoint).
UNSCORED_FILE = re.compile(r"(optimizer|scheduler|scaler)\.(pt|bin)|rng_state.*\.pth")
UNSCORED_DIR = re.compile(r"global_step\d+")  # DeepSpeed's partitioned optimizer states


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
    folder: Path,
    backend: str,
    seed: int,
    base_model: Path | None,
    label: str,
    per_slice: int | None,
    vllm: Any = None,
) -> dict[str, Any]:
    """What defines the sweep: the same as `bench eval DIR` (same fingerprint)."""
    from plasticity_bench.harness.app.eval_vllm import vllm_identity
    from plasticity_bench.harness.app.evaluate import sweep_identity

    return {**sweep_identity([folder], None, backend, seed, base_model, label, per_slice), **vllm_identity(vllm)}


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
    vllm: Any = None,
) -> Any:
    """Follow `folder` until training ends; returns the run folder's RunStore. `vllm`: the engine's arguments
    (`--vllm-setting`, a VllmSettings), as for `bench eval`."""
    from plasticity_bench.harness.app.eval_vllm import check_on_this_machine, pool_settings
    from plasticity_bench.harness.app.evaluate import check_per_slice, open_sweep, prepare_sweep
    from plasticity_bench.harness.backends import BackendPool

    check_per_slice(per_slice)
    check_on_this_machine(vllm)
    identity = watch_identity(folder, backend, seed, base_model, label, per_slice, vllm)
    sweep = prepare_sweep(suite_ref, out, backend, identity, False)
    new_folder = not out.exists()
    try:
        store = open_sweep(sweep, out, seed, label)
        with BackendPool(pool_settings(vllm)) as backends:
            _watch_loop(store, sweep, folder, base_model, backends, seed, quiet, settings)
    except BenchError:
        # leave no half-made run behind, but never what a round already generated or scored: hours of a
        # sweep are not thrown away for a checkpoint that came later (a watch started again resumes it)
        if new_folder and not holds_results(out):
            shutil.rmtree(out, ignore_errors=True)
        raise
    return store


def holds_results(out: Path) -> bool:
    """Whether a round has written anything the watch would have to redo: generations or scores."""
    return (out / "records.parquet").is_file() or any((out / "generations").glob("*.parquet"))


def _model_files(checkpoint: Path) -> list[Path]:
    """The files of a checkpoint that scoring reads (everything but the resuming state), relative paths."""
    found = []
    for path in checkpoint.rglob("*"):
        relative = path.relative_to(checkpoint)
        if any(UNSCORED_DIR.fullmatch(part) for part in relative.parts) or UNSCORED_FILE.fullmatch(path.name):
            continue
        if path.is_file():
            found.append(relative)
    return sorted(found)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        shutil.copy2(source, target)  # another file system (or one without hard links): a copy pins it too


def pin_checkpoint(checkpoint: Path, pinned: Path) -> Path | None:
    """CHECKPOINT's model files, hard-linked under PINNED/<name> (kept when pinned before); None when the
    checkpoint vanished, or lost its config or weights, before every file was pinned."""
    from plasticity_bench.harness.app.sweep import has_model_weights, is_adapter

    target = pinned / checkpoint.name
    if target.is_dir():
        return target
    partial = pinned / f".{checkpoint.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for relative in _model_files(checkpoint):
            _link_or_copy(checkpoint / relative, partial / relative)
    except FileNotFoundError:  # deleted while we linked: the Trainer rotating its checkpoints
        shutil.rmtree(partial, ignore_errors=True)
        return None
    loadable = partial.is_dir() and ((partial / "config.json").is_file() and has_model_weights(partial))
    if not (loadable or (partial.is_dir() and is_adapter(partial))):
        shutil.rmtree(partial, ignore_errors=True)
        return None
    partial.rename(target)
    return target


def pin_ready(ready: Sequence[Path], pinned: Path, skipped: set[str]) -> list[Path]:
    """Pin every complete checkpoint; return every pinned one (this round's and earlier rounds'), in step order.
    A checkpoint gone before it could be pinned is skipped with a one-line warning (once: `skipped` remembers)."""
    pinned.mkdir(parents=True, exist_ok=True)
    for checkpoint in ready:
        if checkpoint.name in skipped or (pinned / checkpoint.name).is_dir():
            continue
        if pin_checkpoint(checkpoint, pinned) is None:
            skipped.add(checkpoint.name)
            warn(
                f"{checkpoint} was deleted before the watch could pin it (the Trainer's save_total_limit?): not scored"
            )
    return complete_pins(pinned)


def complete_pins(pinned: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in pinned.iterdir() if p.is_dir() and (m := CHECKPOINT_DIR.fullmatch(p.name))]
    return [path for _, path in sorted(found)]


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
    skipped: set[str] = set()
    last_new = time.monotonic()
    while True:
        ended = (folder / DONE_MARKER).is_file()  # read first: a checkpoint saved before the end is listed below
        ready = pin_ready(complete_checkpoints(folder, settings.settle), store.root / PINNED, skipped)
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
    from plasticity_bench.harness.app.stages.few_shot import few_shot
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
    few_shot(store, sweep.suite, sweep.evaluation.probes, backends, seed, quiet)  # the new checkpoints' probe
    score(store)
    report(store)
    chosen = store.metadata()["backend"]  # `auto` decided at the first round: kept for the rest
    return replace(sweep, backend=resolve_backend(chosen), requested=chosen)
