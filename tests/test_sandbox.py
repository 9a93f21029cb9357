"""Sandbox tests: outcome classification, and hostile programs that must fail the right way
without hurting the harness or anything outside their scratch directory."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasticity_bench.harness.sandbox import (
    ExecutionResult,
    Outcome,
    SandboxError,
    SandboxLimits,
    isolation_report,
    run_program,
    run_programs,
)

# Short limits keep the hostile cases fast; the harness's backstop adds 1 s to the wall limit.
FAST = SandboxLimits(cpu_seconds=1, wall_seconds=1.5, memory_mb=256, max_processes=16, file_size_mb=4)
GOOD_PROGRAM = "def f(x):\n    return 3 * x + 1\n"
GOOD_TEST = "assert f(4) == 13\n"


def run(program: str, test: str = "pass\n", limits: SandboxLimits = FAST) -> ExecutionResult:
    return run_program(textwrap.dedent(program), textwrap.dedent(test), limits)


def assert_harness_keeps_going() -> None:
    """A normal program right after a hostile one still passes."""
    result = run_program(GOOD_PROGRAM, GOOD_TEST, FAST)
    assert result.outcome is Outcome.PASS, result


ROOT = Path(__file__).resolve().parent.parent
UNPRIVILEGED_UID = 4242


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>" for p in directory.rglob("*")}


# --------------------------------------------------------------------------- classification
@pytest.mark.parametrize(
    ("program", "test", "expected"),
    [
        (GOOD_PROGRAM, GOOD_TEST, Outcome.PASS),
        ("def f(x):\n    return 3 * x\n", GOOD_TEST, Outcome.WRONG_ANSWER),
        ("def f(x):\n    return 1 / 0\n", GOOD_TEST, Outcome.RUNTIME_ERROR),
        ("def f(x)\n    return x\n", GOOD_TEST, Outcome.SYNTAX_ERROR),
        ("def f(x):\n  return 1\n    return 2\n", GOOD_TEST, Outcome.SYNTAX_ERROR),  # IndentationError
        ("x = 1\0\n", "pass", Outcome.SYNTAX_ERROR),  # NUL byte in the source
        ("def f(x):\n    assert x < 0\n    return 13\n", GOOD_TEST, Outcome.RUNTIME_ERROR),  # program's own assert
        ("assert False, 'top-level'\n", "pass", Outcome.RUNTIME_ERROR),
        ("import nonexistent_module_xyz\n", "pass", Outcome.RUNTIME_ERROR),
        ("raise KeyboardInterrupt\n", "pass", Outcome.RUNTIME_ERROR),
        (GOOD_PROGRAM, "raise SystemExit(0)\n", Outcome.RUNTIME_ERROR),
    ],
)
def test_outcome_classification(program: str, test: str, expected: Outcome) -> None:
    result = run_program(program, test, FAST)
    assert result.outcome is expected, result
    assert result.passed is (expected is Outcome.PASS)
    assert result.ran_without_error is (expected in (Outcome.PASS, Outcome.WRONG_ANSWER))


def test_detail_names_the_exception_and_is_short() -> None:
    result = run("def f(x):\n    raise ValueError('bad ' * 1000)\n", GOOD_TEST)
    assert result.outcome is Outcome.RUNTIME_ERROR
    assert result.detail.startswith("ValueError: bad bad")
    assert len(result.detail) <= 300
    syntax = run("def f(x)\n    return x\n", GOOD_TEST)
    assert "SyntaxError" in syntax.detail and "line 1" in syntax.detail


def test_printed_output_is_captured_and_does_not_affect_the_verdict() -> None:
    result = run("print('hello from the program')\nprint('pass')\n" + GOOD_PROGRAM, GOOD_TEST)
    assert result.outcome is Outcome.PASS
    assert "hello from the program" in result.output


def test_a_test_that_does_not_compile_is_a_harness_error() -> None:
    with pytest.raises(ValueError, match="test itself"):
        run_program(GOOD_PROGRAM, "assert f(4) ==\n")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="wall_seconds"):
        SandboxLimits(wall_seconds=0)


def test_stdlib_and_installed_packages_import_inside_the_sandbox() -> None:
    program = """
        import collections, fractions, hashlib, itertools, json, math, re
        import numpy as np
        def f(x):
            return int(np.array([x]).sum()) * 3 + 1
    """
    result = run(program, GOOD_TEST, SandboxLimits(wall_seconds=5))
    assert result.outcome is Outcome.PASS, result


def test_run_programs_keeps_job_order_and_runs_in_parallel() -> None:
    sleepy = ("import time\ntime.sleep(0.5)\n" + GOOD_PROGRAM, GOOD_TEST)
    wrong = ("import time\ntime.sleep(0.5)\ndef f(x):\n    return 0\n", GOOD_TEST)
    started = time.monotonic()
    results = run_programs([sleepy, wrong, sleepy, wrong], FAST, workers=2)
    elapsed = time.monotonic() - started
    assert [r.outcome for r in results] == [Outcome.PASS, Outcome.WRONG_ANSWER] * 2
    assert elapsed < 1.8  # two 0.5 s sleeps per worker; one worker would need 2 s
    assert run_programs([], FAST) == []


# --------------------------------------------------------------------------- hostile programs
def test_infinite_loop_hits_the_cpu_limit() -> None:
    result = run("while True:\n    pass\n")
    assert result.outcome is Outcome.TIMEOUT, result
    assert result.wall_seconds < 3
    assert_harness_keeps_going()


def test_sleeping_forever_hits_the_wall_limit() -> None:
    result = run("import time\ntime.sleep(3600)\n")
    assert result.outcome is Outcome.TIMEOUT, result
    assert "wall-clock" in result.detail
    assert result.wall_seconds < FAST.wall_seconds + 1.5
    assert_harness_keeps_going()


def test_resetting_signals_and_timers_does_not_escape_the_limits() -> None:
    program = """
        import signal
        for sig in (signal.SIGXCPU, signal.SIGALRM, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        signal.setitimer(signal.ITIMER_REAL, 0)
        while True:
            pass
    """
    assert run(program).outcome is Outcome.TIMEOUT
    assert_harness_keeps_going()


@pytest.mark.parametrize(
    "program",
    [
        "x = bytearray(10 ** 11)\n",
        "chunks = []\nwhile True:\n    chunks.append(b'x' * 10 ** 7)\n",
        "x = [0] * (10 ** 10)\n",
    ],
)
def test_memory_bomb_hits_the_memory_limit(program: str) -> None:
    result = run(program)
    assert result.outcome is Outcome.RESOURCE_LIMIT, result
    assert_harness_keeps_going()


def test_fork_bomb_hits_the_process_limit_and_leaves_nothing_behind() -> None:
    program = """
        import os, time
        while True:
            os.fork()
    """
    result = run(program)
    report = isolation_report()
    if report["process_limit"]:
        assert result.outcome is Outcome.RESOURCE_LIMIT, result
        assert "EAGAIN" in result.detail or "Resource temporarily unavailable" in result.detail
    else:
        assert result.outcome in (Outcome.RESOURCE_LIMIT, Outcome.TIMEOUT)
        assert any("process limit" in note for note in report["notes"])
    assert_harness_keeps_going()


def processes_in_pid_namespace(namespace: str) -> list[int]:
    """Host pids of live processes whose PID namespace is ``namespace`` (e.g. 'pid:[4026532]')."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                if "\nState:\tZ" in status.read():
                    continue  # dead, only not yet reaped
            if os.readlink(f"/proc/{entry.name}/ns/pid") == namespace:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_processes_that_leave_the_group_die_with_the_attempt() -> None:
    program = """
        import os, time
        for _ in range(5):
            if os.fork() == 0:
                os.setsid()  # leave the attempt's session and process group
                print("CHILD", os.readlink("/proc/self/ns/pid"), flush=True)
                time.sleep(60)
                os._exit(0)
        time.sleep(0.2)
    """
    result = run(program)
    assert result.outcome is Outcome.PASS, result
    namespaces = {line.split()[1] for line in result.output.splitlines() if line.startswith("CHILD")}
    assert len(namespaces) == 1
    if not isolation_report()["pid_namespace"]:
        assert any("outlive" in note for note in isolation_report()["notes"])
        return
    (namespace,) = namespaces
    assert namespace != os.readlink("/proc/self/ns/pid")
    deadline = time.monotonic() + 2
    while processes_in_pid_namespace(namespace) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_in_pid_namespace(namespace) == []
    assert_harness_keeps_going()


def test_thread_bomb_hits_the_process_limit() -> None:
    program = """
        import threading, time
        threads = [threading.Thread(target=time.sleep, args=(5,), daemon=True) for _ in range(200)]
        for thread in threads:
            thread.start()
    """
    result = run(program)
    if isolation_report()["process_limit"]:
        assert result.outcome is Outcome.RESOURCE_LIMIT, result
    else:
        assert not result.passed
    assert_harness_keeps_going()


def test_unbounded_recursion_is_a_runtime_error() -> None:
    result = run("def f(n):\n    return f(n + 1) + 1\nf(0)\n")
    assert result.outcome is Outcome.RUNTIME_ERROR
    assert "RecursionError" in result.detail
    assert_harness_keeps_going()


def test_raised_recursion_limit_still_fails_safely() -> None:
    program = """
        import sys
        sys.setrecursionlimit(10 ** 9)
        def f(n):
            return f(n + 1) + 1
        f(0)
    """
    result = run(program)
    assert result.outcome in (Outcome.TIMEOUT, Outcome.RESOURCE_LIMIT, Outcome.RUNTIME_ERROR), result
    assert_harness_keeps_going()


def test_segfault_is_a_runtime_error() -> None:
    result = run("import ctypes\nctypes.string_at(0)\n")
    assert result.outcome is Outcome.RUNTIME_ERROR, result
    assert "SIGSEGV" in result.detail
    assert_harness_keeps_going()


def test_file_size_limit() -> None:
    result = run("with open('big.bin', 'wb') as f:\n    f.write(b'x' * (64 << 20))\n")
    assert result.outcome is Outcome.RESOURCE_LIMIT, result
    assert_harness_keeps_going()


def test_files_outside_the_scratch_directory_are_untouched(tmp_path: Path) -> None:
    protected = tmp_path / "protected"
    protected.mkdir()
    (protected / "sentinel.txt").write_text("keep me")
    before = snapshot(tmp_path)
    program = f"""
        import os, shutil
        target = {str(protected)!r}
        errors = []
        for action in (
            lambda: os.remove(os.path.join(target, "sentinel.txt")),
            lambda: open(os.path.join(target, "sentinel.txt"), "w").write("overwritten"),
            lambda: open(os.path.join(target, "new.txt"), "w").write("planted"),
            lambda: shutil.rmtree(target),
            lambda: os.chmod(target, 0o777),
        ):
            try:
                action()
            except OSError as error:
                errors.append(error)
        open("inside_scratch.txt", "w").write("fine")  # its own scratch dir is writable
        print("SCRATCH=" + os.getcwd())
        assert len(errors) == 5, errors
    """
    result = run(program)
    report = isolation_report()
    if report["uid_drop"] == "none":  # the attempt runs as our own user: it can reach our files
        assert any("same" in note or "own user" in note for note in report["notes"])
        return
    assert result.outcome is Outcome.PASS, result  # every write outside scratch was refused
    assert snapshot(tmp_path) == before
    scratch = result.output.split("SCRATCH=")[1].split()[0]
    assert not os.path.exists(scratch), "scratch directory must be removed afterwards"
    assert_harness_keeps_going()


def test_filesystem_outside_scratch_is_read_only_and_scratch_is_capped() -> None:
    program = """
        import os
        refused = []
        for directory in ("/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~/..")):
            path = os.path.join(directory, "planted-by-sandbox-test")
            try:
                with open(path, "w") as f:
                    f.write("x")
            except OSError as error:
                refused.append(error.errno)
    """
    result = run(program, "print(refused)\nassert len(refused) == 4, refused\n")
    planted = [Path(d, "planted-by-sandbox-test") for d in ("/tmp", "/var/tmp", "/dev/shm")]
    try:
        if not isolation_report()["read_only_filesystem"]:
            assert any("no mount namespace" in note for note in isolation_report()["notes"])
            return
        assert result.outcome is Outcome.PASS, result
        assert not any(path.exists() for path in planted)
    finally:
        for path in planted:
            if path.exists() and path.stat().st_uid != os.geteuid():
                path.unlink()
    disk_bomb = "for i in range(100):\n    open(f'chunk{i}', 'wb').write(b'x' * (4 << 20))\n"
    result = run(disk_bomb, limits=SandboxLimits(cpu_seconds=2, wall_seconds=3, scratch_mb=16, file_size_mb=8))
    assert result.outcome is Outcome.RESOURCE_LIMIT, result
    assert "No space left" in result.detail
    assert_harness_keeps_going()


# A program fragment: the command line of every process /proc shows it, in `seen`.
PROC_SCAN = """        seen = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        seen.append(f.read())
                except OSError:
                    pass
"""


def test_other_processes_are_invisible_in_proc() -> None:
    program = (
        """
        import os
"""
        + PROC_SCAN
        + """        leaked = [cmdline for cmdline in seen if b"pytest" in cmdline]
    """
    )
    result = run(program, "assert not leaked, leaked\n")
    if isolation_report()["private_proc"]:
        assert result.outcome is Outcome.PASS, result
    else:
        assert any("/proc" in note for note in isolation_report()["notes"])


def test_environment_of_the_harness_is_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASTICITY_TEST_SECRET", "hunter2-secret-token")
    program = f"""
        import os
        leaked = [v for v in os.environ.values() if "hunter2" in v]
        for pid in (os.getppid(), {os.getpid()}):
            try:
                with open(f"/proc/{{pid}}/environ", "rb") as f:
                    if b"hunter2" in f.read():
                        leaked.append(pid)
            except OSError:
                pass
        named = "PLASTICITY_TEST_SECRET" in os.environ
    """
    result = run(program, "assert not leaked, leaked\nassert not named\n")
    assert result.outcome is Outcome.PASS, result
    assert_harness_keeps_going()


def test_network_connections_do_not_arrive() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        program = f"""
            import socket
            socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"exfiltrated")
        """
        result = run(program)
        time.sleep(0.1)
        if isolation_report()["network_namespace"]:
            assert result.outcome is Outcome.RUNTIME_ERROR, result
            with pytest.raises(BlockingIOError):
                listener.accept()
        else:
            assert any("network" in note for note in isolation_report()["notes"])
    finally:
        listener.close()
    assert_harness_keeps_going()


def test_program_cannot_kill_the_harness() -> None:
    report = isolation_report()
    if not report["harness_protected_from_signals"]:
        # Without a uid drop or PID namespace the attempt could really kill us: do not try.
        assert any("NOT protected" in note for note in report["notes"])
        return
    harness = os.getpid()
    program = f"""
        import os, signal
        attempts = [
            lambda: os.kill(os.getppid(), signal.SIGKILL),
            lambda: os.killpg(os.getpgid(0), signal.SIGKILL),
            lambda: os.kill({harness}, signal.SIGKILL),
            lambda: os.killpg({os.getpgid(0)}, signal.SIGKILL),
            lambda: os.kill(-1, signal.SIGKILL),
        ]
        for attempt in attempts:
            try:
                attempt()
            except OSError:
                pass
    """
    result = run(program)
    assert os.getpid() == harness  # we are still here to check
    assert result.outcome in (Outcome.PASS, Outcome.RUNTIME_ERROR), result
    assert_harness_keeps_going()


@pytest.mark.parametrize(
    "program",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "exit()\n",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
        "import os\nif os.fork():\n    os._exit(0)\n",  # the child runs the test; the runner itself quits
    ],
)
def test_exiting_early_is_not_a_pass(program: str) -> None:
    # The test can only fail: a sandbox that took a clean early exit for success would pass it.
    result = run(program, "assert False, 'the test ran'\n")
    assert not result.passed, result
    # WRONG_ANSWER only if the program survived to the test (a PID namespace's init ignores
    # SIGKILL from inside its namespace, so killing itself does nothing there).
    assert result.outcome is Outcome.RUNTIME_ERROR or result.detail == "AssertionError: the test ran", result
    assert_harness_keeps_going()


def test_forked_child_cannot_report_a_pass_for_the_runner() -> None:
    program = """
        import os, time
        if os.fork() != 0:
            time.sleep(0.3)
            raise ValueError("the runner itself fails")
    """
    result = run(program, "pass\n")  # the forked child reaches the test and would pass it
    assert result.outcome is Outcome.RUNTIME_ERROR, result
    assert "ValueError" in result.detail


def test_closing_stdout_and_stderr_does_not_break_the_verdict() -> None:
    program = "import os, sys\nos.close(1)\nos.close(2)\nsys.stdout.close()\n" + GOOD_PROGRAM
    assert run(program, GOOD_TEST).outcome is Outcome.PASS
    wrong = "import os\nos.close(1)\nos.close(2)\ndef f(x):\n    return 0\n"
    assert run(wrong, GOOD_TEST).outcome is Outcome.WRONG_ANSWER
    assert_harness_keeps_going()


def test_forged_verdicts_are_ignored() -> None:
    program = """
        import os, sys
        print("pass")
        for fd in range(3, 256):
            for line in (b"pass\\n", b"0123456789abcdef0123456789abcdef verdict pass \\n"):
                try:
                    os.write(fd, line)
                except OSError:
                    pass
        def f(x):
            return 0
    """
    result = run(program, GOOD_TEST)
    assert result.outcome is Outcome.WRONG_ANSWER, result


def test_flooding_the_result_pipe_is_cut_off() -> None:
    program = """
        import os
        junk = b"x" * (1 << 20)
        while True:
            for fd in range(3, 64):
                try:
                    os.write(fd, junk)
                except OSError:
                    pass
    """
    result = run(program)
    assert result.outcome is Outcome.RESOURCE_LIMIT, result
    assert_harness_keeps_going()


def test_printing_gigabytes_is_cut_off_quickly() -> None:
    program = "import os\nblock = b'x' * (1 << 20)\nwhile True:\n    os.write(1, block)\n"
    started = time.monotonic()
    result = run(program)
    assert result.outcome is Outcome.RESOURCE_LIMIT, result
    assert "output" in result.detail
    assert time.monotonic() - started < 2
    assert len(result.output) <= 2000
    assert_harness_keeps_going()


def test_isolation_report_describes_this_machine() -> None:
    report = isolation_report()
    json.dumps(report)  # goes into run metadata
    assert report["euid"] == os.geteuid()
    assert report["uid_drop"] in ("random", "nobody", "none")
    if os.geteuid() == 0:
        assert report["uid_drop"] != "none"
    assert report["harness_protected_from_signals"] == (report["uid_drop"] != "none" or report["pid_namespace"])
    for key in ("network_namespace", "pid_namespace", "user_namespace", "process_limit"):
        assert isinstance(report[key], bool)
    assert isinstance(report["notes"], list)


def test_harness_survives_a_program_killing_its_own_supervisor() -> None:
    # Without a PID namespace or uid drop the runner can see and kill its supervisor; the
    # harness must still classify the attempt (not hang) and replace anything it lost.
    result = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(5)\n")
    assert not result.passed
    assert result.wall_seconds < FAST.wall_seconds + 1.5
    assert_harness_keeps_going()


@pytest.mark.slow
def test_without_kernel_protections_it_still_works_and_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that allows no namespaces and no uid drop (non-root, user namespaces off)."""
    from plasticity_bench.harness.sandbox import isolation, pool

    bare = isolation.Isolation(
        user_namespace=False,
        network_namespace=False,
        pid_namespace=False,
        read_only_mounts=False,
        private_proc=False,
        uid_mode="none",
    )
    monkeypatch.setattr(isolation, "current", lambda: bare)
    monkeypatch.setattr(pool, "ZYGOTES", pool.ZygotePool())  # zygotes without namespaces
    monkeypatch.setenv("PLASTICITY_TEST_SECRET", "hunter2")
    try:
        report = isolation_report()
        missing = (
            "network_namespace",
            "pid_namespace",
            "read_only_filesystem",
            "private_proc",
            "process_limit",
            "socket_filter",
        )
        assert all(report[protection] is False for protection in missing)
        assert report["harness_protected_from_signals"] is False
        assert any("NOT protected" in note for note in report["notes"])
        assert any("network" in note for note in report["notes"])
        assert any("unix socket" in note for note in report["notes"])
        assert "processes" not in report["rlimits"]
        assert run(GOOD_PROGRAM, GOOD_TEST).outcome is Outcome.PASS
        assert run("def f(x):\n    return 0\n", GOOD_TEST).outcome is Outcome.WRONG_ANSWER
        assert run("import time\ntime.sleep(60)\n").outcome is Outcome.TIMEOUT
        assert run("while True:\n    pass\n").outcome is Outcome.TIMEOUT
        assert run("x = bytearray(10 ** 11)\n").outcome is Outcome.RESOURCE_LIMIT
        scrubbed = run("import os\nnamed = 'PLASTICITY_TEST_SECRET' in os.environ\n", "assert not named\n")
        assert scrubbed.outcome is Outcome.PASS
    finally:
        pool.ZYGOTES.close()


# --------------------------------------------------------------------------- verdicts the program cannot touch
# The test runs in the checker, another process: expected values, comparisons and the verdict
# token never exist where the program runs. Its expected value here is not derivable from f's input.
SECRET_TEST = "assert f(4) == 987654321\n"


@pytest.mark.parametrize(
    "program",
    [
        (
            "class Always:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
            "def f(x):\n    return Always()\n"
        ),
        (
            "class Always(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
            "def f(x):\n    return Always(0)\n"
        ),
        (
            "class Always(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
            "def f(x):\n    return Always('')\n"
        ),
        (  # hidden inside plain data
            "class Always(list):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return [Always()]\n"
        ),
        "import unittest.mock\ndef f(x):\n    return unittest.mock.ANY\n",
    ],
)
def test_an_object_equal_to_everything_is_a_wrong_answer(program: str) -> None:
    result = run(program, SECRET_TEST, SandboxLimits(wall_seconds=5))
    assert result.outcome is Outcome.WRONG_ANSWER, result
    assert "not plain data" in result.detail
    swallowed = run(program, "try:\n    assert f(4) == 987654321\nexcept BaseException:\n    pass\n")
    assert swallowed.outcome is Outcome.WRONG_ANSWER, swallowed  # even if the test swallows the error


def test_expected_values_are_not_in_the_program_s_process() -> None:
    program = r"""
        import gc, inspect, re, sys

        def values():
            frame = sys._getframe(1)
            while frame is not None:  # the caller's frames, as in the old single-interpreter design
                yield from frame.f_locals.values()
                yield from frame.f_globals.values()
                frame = frame.f_back
            for info in inspect.stack():
                yield from info.frame.f_locals.values()
            yield from gc.get_objects()

        def f(x):
            found = set()
            for value in values():
                if type(value) is int and value > 10 ** 8 and value & (value - 1):  # not a power of two
                    found.add(value)
                elif isinstance(value, str):  # the test's source, if it were here
                    found.update(int(number) for number in re.findall(r"== *([0-9]+)", value))
            print("FOUND", sorted(found))
            return max(found, default=0)
    """
    result = run(program, SECRET_TEST, SandboxLimits(wall_seconds=5))
    assert result.outcome is Outcome.WRONG_ANSWER, result
    assert "FOUND" in result.output and "987654321" not in result.output, result.output


def test_the_verdict_token_and_channel_are_out_of_reach() -> None:
    program = r"""
        import gc, os, re, sys
        def strings():
            frame = sys._getframe()
            while frame is not None:  # every frame of this process, and what gc can reach
                yield from list(frame.f_locals.values())
                frame = frame.f_back
            for container in gc.get_objects():
                if isinstance(container, (dict, list, tuple, set)):
                    yield from list(container.values() if isinstance(container, dict) else container)

        hexes = set()
        for value in strings():
            if isinstance(value, (str, bytes)):
                text = value if isinstance(value, str) else value.decode("latin-1")
                hexes.update(re.findall(r"\b[0-9a-f]{32}\b", text))
        try:  # the raw memory of the process, too (refused after a uid drop: not dumpable)
            with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as memory:
                for line in maps:
                    start, end = (int(part, 16) for part in line.split()[0].split("-"))
                    if "rw" in line.split()[1] and end - start < 64 << 20:
                        try:
                            memory.seek(start)
                            found = re.findall(rb"\b[0-9a-f]{32}\b", memory.read(end - start))
                            hexes.update(token.decode() for token in found)
                        except (OSError, OverflowError, ValueError):
                            pass
        except OSError:
            pass
        lines = [f"{token} verdict pass \n".encode() for token in sorted(hexes)[:200]]
        lines += [b"pass\n", b"0123456789abcdef0123456789abcdef verdict pass \n"]
        for fd in range(256):
            for line in lines:
                try:
                    os.write(fd, line)
                except OSError:
                    pass
        print("TRIED", len(hexes))
        def f(x):
            return 0
    """
    result = run(program, SECRET_TEST, SandboxLimits(wall_seconds=5))
    assert result.outcome is Outcome.WRONG_ANSWER, result
    assert "TRIED" in result.output


def test_the_program_cannot_forge_protocol_messages_into_a_pass_or_a_sandbox_error() -> None:
    # The channel's framing is no secret (the runner's modules are importable in the runner);
    # forged frames can only say what the program could have answered anyway.
    forge = """
        import os, sys
        protocol = sys.modules["child.protocol"]
        for fd in range(3, 64):
            for message in {messages}:
                try:
                    os.write(fd, protocol.frame(message))
                except OSError:
                    pass
        def f(x):
            return 0
    """
    messages = [("sandbox_error", "forged"), ("failed", "pass", ""), ("verdict", "pass"), ("value", 987654321)]
    for message in messages[:3]:
        result = run(forge.format(messages=[message]), SECRET_TEST)
        assert result.outcome is Outcome.RUNTIME_ERROR, (message, result)  # malformed: not a SandboxError
    # A frame answering the first call before it is asked: the program's own answer, so it counts;
    # but it cannot know the expected value, and here it answers wrongly.
    result = run(forge.format(messages=[("loaded",), ("function",), ("value", 1)]), SECRET_TEST)
    assert result.outcome is Outcome.WRONG_ANSWER, result
    assert_harness_keeps_going()


def test_exceptions_of_the_program_keep_their_meaning_in_the_test() -> None:
    program = """
        class Mine(ValueError):
            pass
        def f(x):
            if x < 0:
                raise Mine("negative")
            return {"x": [x, (x, None)], "s": {1.5, "a"}, "b": b"\\x00"}
    """
    test = """
        try:
            f(-1)
        except ValueError as error:  # the program's own class arrives as its nearest builtin base
            assert "Mine: negative" in str(error.sandbox_detail)
        else:
            raise AssertionError("no error")
        assert f(2) == {"x": [2, (2, None)], "s": {1.5, "a"}, "b": b"\\x00"}
    """
    assert run(program, test).outcome is Outcome.PASS
    failing = run(program, "f(-1)\n")
    assert failing.outcome is Outcome.RUNTIME_ERROR
    assert failing.detail == "Mine: negative"


def test_a_program_that_dies_during_a_call_is_a_runtime_error() -> None:
    result = run("import os\ndef f(x):\n    os._exit(0)\n", SECRET_TEST)
    assert result.outcome is Outcome.RUNTIME_ERROR, result
    timeout = run("def f(x):\n    while True:\n        pass\n", SECRET_TEST)
    assert timeout.outcome is Outcome.TIMEOUT, timeout
    too_big = run("def f(x):\n    return 'x' * (40 << 20)\n", SECRET_TEST, SandboxLimits(wall_seconds=5))
    assert too_big.outcome is Outcome.RESOURCE_LIMIT, too_big
    assert_harness_keeps_going()


def test_a_test_passing_something_that_is_not_plain_data_is_a_harness_error() -> None:
    with pytest.raises(SandboxError, match="not plain data"):
        run(GOOD_PROGRAM, "f(lambda: 1)\n")


# --------------------------------------------------------------------------- no way out through the filesystem
@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory every uid can reach (pytest's tmp_path is private to its owner): files and
    sockets in it are stopped by the sandbox or not at all."""
    directory = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def unix_listener(directory: Path, kind: int) -> socket.socket:
    """A unix socket on the host that any uid may connect to (so only the sandbox can stop it)."""
    listener = socket.socket(socket.AF_UNIX, kind)
    path = directory / f"host-{kind}.sock"
    listener.bind(str(path))
    path.chmod(0o777)
    if kind == socket.SOCK_STREAM:
        listener.listen(1)
    listener.settimeout(1.0)
    return listener


def test_unix_sockets_of_the_host_cannot_be_reached(public_tmp: Path) -> None:
    stream = unix_listener(public_tmp, socket.SOCK_STREAM)
    datagram = unix_listener(public_tmp, socket.SOCK_DGRAM)
    arrived: list[object] = []

    def accept() -> None:
        try:
            arrived.append(stream.accept())
        except OSError:  # timed out: nothing came
            pass

    watcher = threading.Thread(target=accept)
    watcher.start()
    stream_path = str(public_tmp / f"host-{socket.SOCK_STREAM}.sock")
    datagram_path = str(public_tmp / f"host-{socket.SOCK_DGRAM}.sock")
    program = f"""
        import socket
        errors = []
        attempts = [
            lambda: socket.socket(socket.AF_UNIX).connect({stream_path!r}),
            lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"x", {datagram_path!r}),
            lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)[0].sendto(b"x", {datagram_path!r}),
        ]
        for attempt in attempts:
            try:
                attempt()
            except OSError as error:
                errors.append(error.errno)
        left, right = socket.socketpair()  # a connected stream pair reaches nothing outside: allowed
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
    """
    try:
        result = run(program, "assert len(errors) == 3, errors\n")
        watcher.join()
        try:
            arrived.append(datagram.recv(16))
        except OSError:
            pass
        if not isolation_report()["socket_filter"]:
            assert any("unix socket" in note for note in isolation_report()["notes"])
            return
        assert arrived == [], "a connection from the sandbox reached the host's socket"
        assert result.outcome is Outcome.PASS, result  # every attempt was refused, and pairs still work
    finally:
        watcher.join()
        stream.close()
        datagram.close()
    assert_harness_keeps_going()


def unprivileged_python() -> str | None:
    """An interpreter the unprivileged uid can run: the venv's may point into root's private home."""
    for candidate in dict.fromkeys([sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]):
        try:
            probe = subprocess.run(
                [candidate, "-I", "-c", "import sys; print(sys.version_info >= (3, 10))"],
                user=UNPRIVILEGED_UID,
                group=UNPRIVILEGED_UID,
                extra_groups=[],
                capture_output=True,
                text=True,
                timeout=30,
                cwd="/",
                check=False,
            )
        except OSError:
            continue
        if probe.stdout.strip() == "True":
            return candidate
    return None


def run_as_unprivileged_harness(directory: Path, program: str, test: str) -> dict:
    """The harness itself without root: a subprocess as uid 4242 (when we are root) calls
    run_program, which then confines attempts through an unprivileged user namespace."""
    script = directory / "unprivileged_harness.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from plasticity_bench.harness.sandbox import SandboxLimits, isolation_report, run_program
        result = run_program(
            {textwrap.dedent(program)!r}, {textwrap.dedent(test)!r}, SandboxLimits(site_packages=False)
        )
        print(json.dumps({{"report": isolation_report(), "outcome": result.outcome.value, "detail": result.detail,
                          "output": result.output}}))
    """)
    )
    script.chmod(0o644)
    if os.geteuid() != 0:
        command, switch = [sys.executable, "-I", str(script)], {}
    else:
        interpreter = unprivileged_python()
        if interpreter is None:
            pytest.skip(f"no Python interpreter that uid {UNPRIVILEGED_UID} may run")
        command = [interpreter, "-I", str(script)]
        switch = {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_UID, "extra_groups": []}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/", check=False, **switch)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_without_root_the_program_cannot_unmount_proc_to_see_the_host(public_tmp: Path) -> None:
    program = (
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        unmounted = libc.umount2(b"/proc", 2) == 0  # MNT_DETACH
        print("umount", unmounted, os.strerror(ctypes.get_errno()))
"""
        + PROC_SCAN
        + """        host_visible = any(b"pytest" in cmdline for cmdline in seen)
    """
    )
    done = run_as_unprivileged_harness(public_tmp, program, "assert unmounted or host_visible\n")
    report = done["report"]
    if report["euid"] != 0 and not report["user_namespace"]:
        pytest.skip("unprivileged user namespaces are disabled here: nothing to escape from")
    if not report["no_capabilities"]:
        assert any("unmount" in note for note in report["notes"]), report
        return
    assert done["outcome"] == "wrong_answer", done  # the program ran, and both attempts failed
    assert "umount False" in done["output"], done


def test_without_root_unix_sockets_of_the_host_cannot_be_reached(public_tmp: Path) -> None:
    listener = unix_listener(public_tmp, socket.SOCK_STREAM)
    try:
        program = f"""
            import socket
            socket.socket(socket.AF_UNIX).connect({str(public_tmp / f"host-{socket.SOCK_STREAM}.sock")!r})
        """
        done = run_as_unprivileged_harness(public_tmp, program, "pass\n")
        with pytest.raises(OSError):  # timed out: nothing connected
            listener.accept()
    finally:
        listener.close()
    if not done["report"]["socket_filter"]:
        assert any("unix socket" in note for note in done["report"]["notes"])
        return
    assert done["outcome"] == "runtime_error" and "PermissionError" in done["detail"], done


# --------------------------------------------------------------------------- the channel's rules, in-process
def test_only_plain_data_crosses_the_channel() -> None:
    import numpy

    from plasticity_bench.harness.sandbox.child import protocol

    shared = [1, 2]
    assert protocol.is_plain([shared, shared, {"a": (1.5, None, 2j)}, {frozenset({b"x"})}, ...])
    cyclic: list = []
    cyclic.append(cyclic)
    assert not protocol.is_plain(cyclic)  # marshal would carry it; comparing it would recurse forever
    assert not protocol.is_plain(compile("1", "<x>", "eval"))  # marshal carries code objects too
    assert not protocol.is_plain([True, type("Int", (int,), {})(3)])
    assert protocol.to_plain(numpy.array([[1, 2]])) == [[1, 2]]
    assert type(protocol.to_plain(numpy.int64(3))) is int
    with pytest.raises(protocol.NotPlain, match="a bytearray object"):
        protocol.to_plain([bytearray(b"x")])  # marshal would have sent it as bytes


def test_frames_survive_junk_and_floods_are_cut_off() -> None:
    import marshal

    from plasticity_bench.harness.sandbox.child import protocol

    data = b"junk" + protocol.frame(("value", 1)) + b"more junk" + protocol.frame(("loaded",))
    chunks = [data[i : i + 3] for i in range(0, len(data), 3)]  # frames split at every byte offset
    reader = protocol.FrameReader(lambda: chunks.pop(0) if chunks else b"", limit=1000)
    assert [marshal.loads(reader.next_payload()) for _ in range(2)] == [("value", 1), ("loaded",)]
    assert reader.next_payload() is None
    flood = iter([b"x" * 600] * 3)
    with pytest.raises(protocol.Overflow):
        protocol.FrameReader(lambda: next(flood), limit=1000).next_payload()
    huge = iter([protocol.MAGIC + (10**6).to_bytes(4, "little")])
    with pytest.raises(protocol.Overflow):
        protocol.FrameReader(lambda: next(huge), limit=1000).next_payload()


@pytest.mark.parametrize("pidfd", [True, False])
def test_the_checker_notices_its_runner_die_even_if_a_child_holds_the_channel(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plasticity_bench.harness.sandbox.child import checker

    if not pidfd:  # as on kernels before 5.3
        monkeypatch.setattr(checker, "_open_pidfd", lambda pid: None)
    calls_read, calls_write = os.pipe()
    replies_read, replies_write = os.pipe()
    runner = os.fork()
    if runner == 0:  # a "runner" that leaves a child holding the reply pipe open, then dies
        if os.fork() == 0:
            time.sleep(2)
        os._exit(0)
    os.close(calls_read)
    os.close(replies_write)
    channel = checker.Channel(runner, calls_write, replies_read)
    started = time.monotonic()
    try:
        with pytest.raises(checker.CandidateGone):
            channel.receive()
        assert time.monotonic() - started < 1.5
    finally:
        os.waitpid(runner, 0)
        os.close(calls_write)
        os.close(replies_read)
