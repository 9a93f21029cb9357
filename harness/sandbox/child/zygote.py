"""The zygote, the per-attempt supervisor and the runner that executes untrusted code.

Process layout: the harness starts one zygote per worker; the zygote forks one supervisor per
attempt; the supervisor enters the attempt's own namespaces and forks the runner, which confines
itself and runs program + test. Only cheap built-in modules: this runs in every attempt.
"""

import _signal as signal  # the C module: `import signal` pulls in enum and costs ~4 ms
import marshal
import os
import sys

from .confine import (
    CLONE_NEWNS,
    confine,
    enter_namespaces,
    libc_call,
    make_filesystem_read_only,
    mount_private_proc,
    mount_scratch,
)

DETAIL_CHARS = 300
# errno values meaning the program ran into one of our limits rather than a bug of its own
LIMIT_ERRNOS = {11: "EAGAIN", 12: "ENOMEM", 27: "EFBIG", 28: "ENOSPC", 122: "EDQUOT"}


def send(fd: int, token: str, *fields: str) -> None:
    line = " ".join([token, *fields]).replace("\n", " ") + "\n"
    os.write(fd, line.encode("utf-8", "replace"))


def describe(error: BaseException) -> str:
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # noqa: BLE001 (a hostile __str__ may raise anything)
        text = type(error).__name__
    return text[:DETAIL_CHARS]


def raised_in_test(error: BaseException) -> bool:
    """True when the innermost frame of the traceback is test code (an assert of the test)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == "<test>"


def execute(program: str, test: str) -> tuple[str, str]:
    """Run program then test in one namespace; return (outcome, detail)."""
    import builtins

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        program_code = compile(program, "<program>", "exec")
    except (SyntaxError, ValueError) as error:  # ValueError: NUL bytes in the source
        return "syntax_error", describe(error)
    except MemoryError as error:
        return "resource_limit", describe(error)
    except BaseException as error:  # noqa: BLE001 (e.g. RecursionError from absurd nesting)
        return "runtime_error", describe(error)
    test_code = compile(test, "<test>", "exec")  # validated by the harness beforehand
    try:
        exec(program_code, namespace)  # noqa: S102 (running the untrusted program is the point)
        exec(test_code, namespace)  # noqa: S102
    except AssertionError as error:
        return ("wrong_answer" if raised_in_test(error) else "runtime_error"), describe(error)
    except MemoryError as error:
        namespace.clear()  # free the program's data so reporting does not fail too
        return "resource_limit", describe(error)
    except OSError as error:  # Python ignores SIGXFSZ, so the file size limit surfaces as EFBIG
        return ("resource_limit" if error.errno in LIMIT_ERRNOS else "runtime_error"), describe(error)
    except RuntimeError as error:
        limited = str(error).startswith("can't start new thread")  # the process limit, for threads
        return ("resource_limit" if limited else "runtime_error"), describe(error)
    except BaseException as error:  # noqa: BLE001 (SystemExit and KeyboardInterrupt too: not a pass)
        return "runtime_error", describe(error)
    return "pass", ""


def flush_standard_streams() -> None:
    """Push buffered prints into the output pipe: the runner leaves through os._exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 (closed or replaced by the program: nothing to flush)
            pass


def run(token: str, program: str, test: str, config: dict) -> None:
    """The runner: confine itself, run the untrusted code, report the verdict, exit."""
    write_verdict, exit_now, own_pid = send, os._exit, os.getpid  # bound before the program can patch os
    fd = config["result_fd"]
    runner_pid = own_pid()
    os.setsid()  # own session and group: killpg(0) from the program cannot reach the supervisor
    try:
        if config["private_proc"]:
            mount_private_proc()
        confine(config)
    except BaseException as error:  # noqa: BLE001 (any setup failure is the sandbox's, reported as such)
        write_verdict(fd, token, "sandbox_error", describe(error))
        exit_now(1)
    outcome, detail = execute(program, test)
    flush_standard_streams()
    if own_pid() == runner_pid:  # a process the program forked returns here too: it has no say
        write_verdict(fd, token, "verdict", outcome, detail)
    exit_now(0)


def supervise(runner: int, token: str, config: dict) -> None:
    """Enforce the wall-clock limit on the runner, clean up its group, report how it ended."""
    fd = config["result_fd"]
    send(fd, token, "runner", str(runner))
    timed_out = []

    def on_deadline(signum, frame):
        timed_out.append(True)
        os.kill(runner, signal.SIGKILL)

    signal.signal(signal.SIGALRM, on_deadline)
    signal.setitimer(signal.ITIMER_REAL, config["wall_seconds"])
    os.waitid(os.P_PID, runner, os.WEXITED | os.WNOWAIT)  # still a zombie: its pgid stays reserved
    signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        os.killpg(runner, signal.SIGKILL)  # whatever it left behind in its group
    except OSError:
        pass
    _, status, usage = os.wait4(runner, 0)
    cpu = usage.ru_utime + usage.ru_stime
    send(fd, token, "exit", str(os.waitstatus_to_exitcode(status)), f"{cpu:.3f}", "1" if timed_out else "0")
    os._exit(0)


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def supervisor(payload_fd: int, output_fd: int, result_fd: int) -> None:
    """One attempt, in a process freshly forked from the zygote."""
    os.setsid()  # out of the zygote's session: the harness kills attempts by this group
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; we must wait for the runner
    token, program, test, config = marshal.loads(read_all(payload_fd))
    os.close(payload_fd)
    nowhere = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((nowhere, 0), (output_fd, 1), (output_fd, 2)):
        os.dup2(source, target)
    os.close(nowhere)
    os.close(output_fd)
    config["result_fd"] = result_fd
    os.environ.clear()
    os.environ.update(config["environment"])
    try:
        if config["supervisor_unshare"]:
            libc_call("unshare", config["supervisor_unshare"])
        if config["supervisor_unshare"] & CLONE_NEWNS:
            mount_scratch(config["scratch"], config["scratch_bytes"], config["uid"])
        os.chdir(config["scratch"])
    except OSError as error:
        send(result_fd, token, "sandbox_error", describe(error))
        os._exit(1)
    runner = os.fork()  # with a new PID namespace, the runner is its init
    if runner == 0:
        run(token, program, test, config)
    supervise(runner, token, config)


def zygote(channel_fd: int, shared_unshare_flags: int) -> None:
    """Fork one supervisor per job request. Forking this small, idle interpreter costs well
    under a millisecond; starting a new one costs ~11 ms. It never runs untrusted code.

    The user, network and mount namespaces are entered once here and shared by all attempts (a
    new network namespace costs ~1 ms; its loopback is down, so attempts cannot talk to anything;
    the whole filesystem is made read-only once). PID namespaces and the scratch tmpfs must be
    new per attempt, so each supervisor creates its own."""
    import socket

    channel = socket.socket(fileno=channel_fd)
    if shared_unshare_flags:
        enter_namespaces(shared_unshare_flags)
    if shared_unshare_flags & CLONE_NEWNS:
        make_filesystem_read_only()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped automatically
    while True:
        message, fds, _, _ = socket.recv_fds(channel, 16, 3)
        if not message:  # the harness closed the channel (or died): stop
            return
        pid = os.fork()
        if pid == 0:
            channel.close()
            try:
                supervisor(*fds)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        channel.sendall(pid.to_bytes(8, "little"))
