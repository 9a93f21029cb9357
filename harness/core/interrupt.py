"""Stopping a run cleanly on SIGINT / SIGTERM, and the test hook that kills it mid-training.

`stop_on_signals()` turns SIGINT and SIGTERM into an `Interrupted` exception raised in the main
thread, at once, except inside `uninterruptible()` blocks (a checkpoint being written, an atomic
file write), where it is raised as soon as the block ends. So an interrupted run leaves only
complete files behind and resumes from its last complete checkpoint. The CLI prints one line
and exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Tests only (tests/test_resume.py): PLASTICITY_BENCH_KILL_AT=POINT:STEP makes the process SIGKILL
# itself at that point of training, as `kill -9` would (see `kill_point`).
KILL_ENV = "PLASTICITY_BENCH_KILL_AT"


class Interrupted(Exception):
    """A run stopped by a signal; `message` says how to resume (filled in by whoever knows)."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(
            message or f"interrupted ({signal.Signals(signum).name}): re-run the same command to start again"
        )
        self.signum = signum
        self.message = message or str(self)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _State:
    depth = 0  # nesting of uninterruptible() blocks
    pending: int | None = None  # a signal received inside one, raised when the outermost ends
    active = False  # inside stop_on_signals()


def _handle(signum: int, _frame: FrameType | None) -> None:
    if _State.depth > 0:
        _State.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` inside this block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread() or _State.active:
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    _State.active, _State.pending = True, None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _State.active, _State.pending = False, None


@contextmanager
def uninterruptible() -> Iterator[None]:
    """Defer SIGINT/SIGTERM until this block ends (then raise `Interrupted`)."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:  # reached only when the block ended normally
        signum, _State.pending = _State.pending, None
        raise Interrupted(signum)


def kill_point(point: str, step: int) -> None:
    """Test hook: SIGKILL this process here when PLASTICITY_BENCH_KILL_AT is `POINT:STEP`.

    Points, in the order they happen around training step STEP (trainers/common.py, harness/app/stages/train.py):
      step:N        after step N's update, before its checkpoint (if it has one) is written
      model:N       after checkpoint N's model folder is written, before its training state and manifest
      checkpoint:N  after checkpoint N is completely written
    """
    if os.environ.get(KILL_ENV) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
