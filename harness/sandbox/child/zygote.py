"""The zygote and the per-attempt supervisor, which is also the attempt's checker.

Process layout: the harness starts one zygote per worker; the zygote forks one supervisor per
attempt; the supervisor enters the attempt's own namespaces, forks the runner (``runner.py``:
confines itself, runs the program, answers calls) and then runs the test against it
(``checker.py``), enforcing the wall-clock limit. Only the supervisor holds the test and the
verdict token, and only it writes to the result pipe. Only cheap built-in modules: this runs in
every attempt.
"""

import _signal as signal  # the C module: `import signal` pulls in enum and costs ~4 ms
import marshal
import os
import sys

from . import checker, runner
from .confine import (
    CLONE_NEWNS,
    PR_SET_DUMPABLE,
    enter_namespaces,
    libc_call,
    make_filesystem_read_only,
    mount_scratch,
)
from .verdicts import describe


def send(fd: int, token: str, *fields: str) -> None:
    line = " ".join([token, *fields]).replace("\n", " ") + "\n"
    os.write(fd, line.encode("utf-8", "replace"))


def read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the attempt's payload is truncated")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_part(fd: int) -> tuple:
    """One length-prefixed marshal part of the payload, read exactly: nothing of the next part
    gets into this process's memory before it is wanted."""
    size = int.from_bytes(read_exactly(fd, 8), "little")
    return marshal.loads(read_exactly(fd, size))


def enter_attempt(config: dict, output_fd: int) -> None:
    """Standard streams, environment, this attempt's own namespaces and scratch directory."""
    nowhere = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((nowhere, 0), (output_fd, 1), (output_fd, 2)):
        os.dup2(source, target)
    os.close(nowhere)
    os.close(output_fd)
    os.environ.clear()
    os.environ.update(config["environment"])
    if config["supervisor_unshare"]:
        libc_call("unshare", config["supervisor_unshare"])
    if config["supervisor_unshare"] & CLONE_NEWNS:
        mount_scratch(config["scratch"], config["scratch_bytes"], config["uid"])
    os.chdir(config["scratch"])


def start_runner(program: str, config: dict, private_fds: tuple[int, ...]) -> tuple[int, checker.Channel]:
    """Fork the runner with one pipe each way; it keeps none of our other descriptors."""
    calls_read, calls_write = os.pipe()
    replies_read, replies_write = os.pipe()
    # Not dumpable: a process of the same uid (the runner, in a user namespace) cannot ptrace us
    # or open our /proc/PID/fd entries (the payload, the result pipe).
    libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
    pid = os.fork()  # with a new PID namespace, the runner is its init
    if pid == 0:
        for fd in (*private_fds, calls_write, replies_read):
            os.close(fd)
        libc_call("prctl", PR_SET_DUMPABLE, 1, 0, 0, 0)  # an ordinary process; the uid drop resets it anyway
        runner.run(program, config, calls_read, replies_write)
    os.close(calls_read)
    os.close(replies_write)
    return pid, checker.Channel(pid, calls_write, replies_read)


def kill_runner(pid: int) -> None:
    """The runner and whatever it left in its group (with a PID namespace: all it started)."""
    for kill in (os.killpg, os.kill):  # kill: in case it has not made its own group yet
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


def supervisor(payload_fd: int, output_fd: int, result_fd: int) -> None:
    """One attempt, in a process freshly forked from the zygote."""
    os.setsid()  # out of the zygote's session: the harness kills attempts by this group
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; we must wait for the runner
    program, config = read_part(payload_fd)
    try:
        enter_attempt(config, output_fd)
    except OSError as error:
        token, _ = read_part(payload_fd)  # no runner exists yet: safe to read
        send(result_fd, token, "sandbox_error", describe(error))
        os._exit(1)
    runner_pid, channel = start_runner(program, config, (payload_fd, result_fd))
    token, test = read_part(payload_fd)  # only now: the runner's memory never held these
    os.close(payload_fd)
    sys.path.extend(config["extra_paths"])  # the test may import the harness's packages too
    send(result_fd, token, "runner", str(runner_pid))
    timed_out = []

    def on_deadline(signum, frame):
        timed_out.append(True)
        kill_runner(runner_pid)  # the checker then sees the runner gone

    signal.signal(signal.SIGALRM, on_deadline)
    signal.setitimer(signal.ITIMER_REAL, config["wall_seconds"])
    verdict = checker.judge(test, channel)
    signal.setitimer(signal.ITIMER_REAL, 0)
    kill_runner(runner_pid)
    _, status, usage = os.wait4(runner_pid, 0)
    if verdict is not None and verdict[0] == "sandbox_error":
        send(result_fd, token, "sandbox_error", verdict[1])
    elif verdict is not None:
        send(result_fd, token, "verdict", *verdict)
    cpu = usage.ru_utime + usage.ru_stime
    send(result_fd, token, "exit", str(os.waitstatus_to_exitcode(status)), f"{cpu:.3f}", "1" if timed_out else "0")
    os._exit(0)


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
