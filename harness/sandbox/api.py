"""The public entry points: run one (program, test) attempt, or many with a bounded pool.

A job is a ``program`` (untrusted source: runs confined, in the runner) and a ``test`` (trusted
source written by the harness: runs in the checker, another process). In the test, every name
it does not define itself and that is not a builtin is the program's top-level name of that
spelling: calling a function calls it in the runner with copies of plain-data arguments and
returns a copy of its plain-data result; ``program.NAME`` says the same explicitly. So
``("def f(x):\n    return 3 * x + 1\n", "assert f(4) == 13\n")`` works as it reads.
"""

from __future__ import annotations

import marshal
import math
import os
import secrets
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from . import isolation, pool
from .interpreter import scrubbed_environment, site_package_paths
from .isolation import NOBODY, RANDOM_UID_RANGE, Isolation
from .results import DEFAULT_LIMITS, ExecutionResult, Outcome, SandboxError, SandboxLimits

__all__ = ["Job", "default_workers", "run_program", "run_programs"]

_SCRATCH_PREFIX = "sandbox-"
_OUTPUT_KEPT_CHARS = 2000
_WALL_GRACE_SECONDS = 1.0  # the supervisor enforces the wall limit; the harness is a backstop
_READ_CHUNK = 1 << 16
_RESULT_CHANNEL_BYTES = 1 << 16  # honest traffic on the result pipe is three short lines


class Job(NamedTuple):
    """One attempt: the model's ``program`` and the harness's ``test`` (see the module docstring)."""

    program: str
    test: str


def _child_config(limits: SandboxLimits, active: Isolation, scratch: str, uid: int | None) -> dict:
    return {
        "scratch": scratch,
        "environment": scrubbed_environment(scratch),
        "supervisor_unshare": active.supervisor_unshare_flags,
        "private_proc": active.private_proc,
        "scratch_bytes": limits.scratch_mb << 20,
        "uid": uid,
        "cpu_seconds": max(1, math.ceil(limits.cpu_seconds)),
        "wall_seconds": float(limits.wall_seconds),
        "memory_bytes": limits.memory_mb << 20,
        "file_size_bytes": limits.file_size_mb << 20,
        "max_processes": limits.max_processes,
        "limit_processes": active.limits_processes,
        # after a uid drop no capability is left anyway: dropping them explicitly would cost time for nothing
        "drop_capabilities": active.drops_capabilities and uid is None,
        "seccomp": active.socket_filter,
        "extra_paths": site_package_paths() if limits.site_packages else [],
    }


def _attempt_uid(active: Isolation) -> int | None:
    if active.uid_mode == "random":
        return secrets.randbelow(RANDOM_UID_RANGE[1] - RANDOM_UID_RANGE[0]) + RANDOM_UID_RANGE[0]
    if active.uid_mode == "nobody":
        return NOBODY
    return None


@dataclass
class _ChildReport:
    """What the harness learned from one child: the token-authenticated lines and its output."""

    verdict: tuple[str, str] | None = None  # (outcome, detail) from the runner
    exit_code: int | None = None  # runner's exit code (negative: killed by that signal)
    cpu_seconds: float = 0.0
    supervisor_timed_out: bool = False
    runner_pid: int | None = None
    sandbox_error: str | None = None
    output: bytes = b""
    output_overflow: bool = False
    harness_timed_out: bool = False

    @property
    def finished(self) -> bool:
        return self.exit_code is not None or self.sandbox_error is not None


def _parse_result_lines(data: bytes, token: str, report: _ChildReport) -> None:
    """Only lines starting with this attempt's token count; anything else is noise or forgery."""
    prefix = token + " "
    for raw in data.decode("utf-8", "replace").splitlines():
        if not raw.startswith(prefix):
            continue
        kind, _, rest = raw[len(prefix) :].partition(" ")
        if kind == "verdict" and report.verdict is None:
            outcome, _, detail = rest.partition(" ")
            report.verdict = (outcome, detail)
        elif kind == "exit":
            code, cpu, timed_out = rest.split(" ")
            report.exit_code, report.cpu_seconds = int(code), float(cpu)
            report.supervisor_timed_out = timed_out == "1"
        elif kind == "runner":
            report.runner_pid = int(rest)
        elif kind == "sandbox_error":
            report.sandbox_error = rest


def _read_available(fd: int) -> tuple[bytes, bool]:
    """Read what is buffered on a non-blocking fd; returns (data, reached end of file)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return b"".join(chunks), False
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def _kill_group(pgid: int | None) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _watch_child(output_fd: int, result_fd: int, token: str, deadline: float, max_output: int) -> _ChildReport:
    """Drain both pipes until the supervisor's exit line (or end of file on the result pipe),
    the deadline, or an output overflow."""
    report = _ChildReport()
    output, results = bytearray(), bytearray()
    poller = select.poll()
    for fd in (output_fd, result_fd):
        poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            report.harness_timed_out = True
            break
        results_ended = False
        for fd, _ in poller.poll(remaining * 1000):
            data, at_end = _read_available(fd)
            (output if fd == output_fd else results).extend(data)
            if at_end:
                poller.unregister(fd)
                results_ended |= fd == result_fd
        if len(output) > max_output or len(results) > _RESULT_CHANNEL_BYTES:  # a flood must not exhaust us
            report.output_overflow = True
            break
        _parse_result_lines(bytes(results), token, report)
        if report.finished or results_ended:
            # Output written before the runner exited is already in the pipe; leftovers of a
            # runner without a PID namespace may hold it open, so do not wait for its end.
            output.extend(_read_available(output_fd)[0])
            break
    report.output = bytes(output[:max_output])
    return report


def _payload(*parts: tuple) -> bytes:
    """Length-prefixed marshal parts. The supervisor reads the first (program, config), forks the
    runner, and only then reads the second (token, test): the runner never holds them."""
    encoded = [marshal.dumps(part) for part in parts]
    return b"".join(len(data).to_bytes(8, "little") + data for data in encoded)


def _run_child(program: str, test: str, limits: SandboxLimits, scratch: str) -> tuple[_ChildReport, float]:
    active = isolation.current()
    uid = _attempt_uid(active)
    if uid is not None and not active.read_only_mounts:  # else a tmpfs owned by uid covers it
        os.chown(scratch, uid, uid)
    token = secrets.token_hex(16)
    payload = _payload((program, _child_config(limits, active, scratch, uid)), (token, test))
    output_read, output_write = os.pipe()
    result_read, result_write = os.pipe()
    try:
        for fd in (output_read, result_read):
            os.set_blocking(fd, False)
        # The payload travels as an unlinked file: any size, no pipe to deadlock on, and nothing
        # left in the scratch directory for the program to find.
        with tempfile.TemporaryFile() as payload_file:
            payload_file.write(payload)
            payload_file.seek(0)
            started = time.monotonic()
            supervisor_pid = pool.ZYGOTES.start_attempt(payload_file.fileno(), output_write, result_write)
        os.close(output_write)
        os.close(result_write)
        output_write = result_write = -1
        deadline = started + limits.wall_seconds + _WALL_GRACE_SECONDS
        report = _watch_child(output_read, result_read, token, deadline, limits.max_output_bytes)
        wall = time.monotonic() - started
        if not report.finished or report.output_overflow:
            _kill_group(supervisor_pid)
            _kill_group(report.runner_pid)  # the runner leads its own group (and PID namespace)
    finally:
        for fd in (output_read, output_write, result_read, result_write):
            if fd >= 0:
                os.close(fd)
    return report, wall


_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


def _classify(report: _ChildReport, limits: SandboxLimits) -> tuple[Outcome, str]:
    """Map what the child reported onto an Outcome; PASS needs the checker's authentic verdict."""
    if report.sandbox_error is not None:
        raise SandboxError(f"the sandbox failed in the child: {report.sandbox_error}")
    if report.output_overflow:
        return Outcome.RESOURCE_LIMIT, f"output exceeded {limits.max_output_bytes} bytes (or flooded the result pipe)"
    if report.supervisor_timed_out or report.harness_timed_out:
        return Outcome.TIMEOUT, f"exceeded the wall-clock limit of {limits.wall_seconds:g} s"
    code = report.exit_code
    if code is None:
        return Outcome.RUNTIME_ERROR, "the sandbox supervisor died before reporting (killed by the program?)"
    if report.verdict is not None:  # the checker reached one while the runner was alive; it then killed it
        outcome, detail = report.verdict
        return Outcome(outcome), detail
    if code < 0:
        return _classify_signal(-code, report.cpu_seconds, limits)
    return Outcome.RUNTIME_ERROR, f"exited with status {code} before the test finished"


def _classify_signal(signum: int, cpu_seconds: float, limits: SandboxLimits) -> tuple[Outcome, str]:
    name = _SIGNAL_NAMES.get(signum, f"signal {signum}")
    cpu_limit = max(1, math.ceil(limits.cpu_seconds))
    # RLIMIT_CPU's hard limit is the only SIGKILL the sandbox leaves unflagged. Its accounting is
    # tick-sampled (we measured 0.90 s reported for a 1 s limit on a loaded machine), so a SIGKILL
    # after most of the CPU budget is the limit; an early one came from elsewhere (the program).
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu_seconds >= 0.5 * cpu_limit):
        return Outcome.TIMEOUT, f"exceeded the CPU limit of {cpu_limit} s ({name})"
    if signum == signal.SIGXFSZ:
        return Outcome.RESOURCE_LIMIT, f"exceeded the file size limit of {limits.file_size_mb} MB ({name})"
    return Outcome.RUNTIME_ERROR, f"killed by {name}"


def _remove_tree(path: str) -> None:
    """Delete the scratch directory even if the program made parts of it unreadable."""

    def make_writable_and_retry(function, failed_path, _exc_info) -> None:
        parent = os.path.dirname(failed_path)
        for target in (parent, failed_path):
            try:
                os.chmod(target, 0o700, follow_symlinks=False)
            except OSError:
                pass
        try:
            function(failed_path)
        except FileNotFoundError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def _check_test_compiles(test: str) -> None:
    try:
        compile(test, "<test>", "exec")
    except (SyntaxError, ValueError) as error:
        raise ValueError(f"the test itself does not compile: {error}") from error


def run_program(program: str, test: str, limits: SandboxLimits = DEFAULT_LIMITS) -> ExecutionResult:
    """Run ``program`` confined, then ``test`` against it from the checker; classify the outcome.

    Raises ``ValueError`` if the test (harness-provided) does not compile and ``SandboxError`` if
    the sandbox itself failed (or the test passed the program something that is not plain
    data); every failure of the program is an ``Outcome``.
    """
    _check_test_compiles(test)
    scratch = tempfile.mkdtemp(prefix=_SCRATCH_PREFIX)
    try:
        report, wall = _run_child(program, test, limits, scratch)
    finally:
        _remove_tree(scratch)
    outcome, detail = _classify(report, limits)
    output = report.output.decode("utf-8", "replace")[:_OUTPUT_KEPT_CHARS]
    return ExecutionResult(outcome=outcome, detail=detail, wall_seconds=wall, output=output)


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def run_programs(
    jobs: Sequence[Job | tuple[str, str]],
    limits: SandboxLimits = DEFAULT_LIMITS,
    workers: int | None = None,
    progress: bool = False,
) -> list[ExecutionResult]:
    """Run many ``Job(program, test)`` (or plain tuples) with a bounded pool; results in job order.

    Threads suffice: each only waits on its child process, so the GIL is not a bottleneck.
    """
    if not jobs:
        return []
    isolation.current()  # probe once, before the threads race to do it
    done = 0
    lock = threading.Lock()

    def run_one(job: tuple[str, str]) -> ExecutionResult:
        nonlocal done
        result = run_program(job[0], job[1], limits)
        if progress:
            with lock:
                done += 1
                print(f"\rsandbox: {done}/{len(jobs)}", end="" if done < len(jobs) else "\n", file=sys.stderr)
        return result

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as executor:
        return list(executor.map(run_one, jobs))
