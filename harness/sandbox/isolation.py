"""Which kernel protections the sandbox applies on this machine: probed once, reported in words."""

from __future__ import annotations

import functools
import marshal
import os
import subprocess
import tempfile
from dataclasses import dataclass

from .interpreter import child_command, scrubbed_environment

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
NOBODY = 65534
RANDOM_UID_RANGE = (1_000_000_000, 2_000_000_000)  # far above any real account or subuid range


@dataclass(frozen=True)
class Isolation:
    """Which kernel protections the sandbox applies; decided once by probing the kernel."""

    user_namespace: bool  # non-root only: the unprivileged way to get the namespaces below
    network_namespace: bool
    pid_namespace: bool
    read_only_mounts: bool  # read-only filesystem + tmpfs scratch, in mount namespaces
    private_proc: bool
    uid_mode: str  # "random" (fresh uid per attempt), "nobody", or "none"
    drops_capabilities: bool = False  # the runner gives up every capability (and the bounding set)
    socket_filter: bool = False  # seccomp: no sockets, no new namespaces, no io_uring

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
    def capabilities_gone(self) -> bool:
        """The program holds no capability: dropped explicitly, lost with the uid drop, or never
        had any (a non-root harness without user namespaces)."""
        if self.drops_capabilities:
            return True
        if os.geteuid() == 0:
            return self.uid_mode != "none"
        return not self.user_namespace

    @property
    def limits_processes(self) -> bool:
        # RLIMIT_NPROC counts all processes of the real uid and does not bind root: it only caps
        # one attempt when the attempt has a uid (or user namespace) to itself.
        return self.uid_mode == "random" or self.user_namespace


def probe() -> Isolation:
    """Try each protection in a throwaway child interpreter (harness/sandbox/child/probe.py)."""
    is_root = os.geteuid() == 0
    user_flag = 0 if is_root else CLONE_NEWUSER
    uids = [RANDOM_UID_RANGE[0], NOBODY] if is_root else []
    completed = subprocess.run(
        child_command("probe"),
        input=marshal.dumps((user_flag, uids, tempfile.gettempdir())),
        capture_output=True,
        env=scrubbed_environment(tempfile.gettempdir()),
        timeout=30,
        check=True,
    )
    found = marshal.loads(completed.stdout)
    namespaces_usable = is_root or found["user_namespace"]
    return Isolation(
        user_namespace=found["user_namespace"],
        network_namespace=namespaces_usable and found["network"],
        pid_namespace=namespaces_usable and found["pid"],
        read_only_mounts=namespaces_usable and found["mounts"],
        private_proc=namespaces_usable and found["pid"] and found["mounts"] and found["proc"],
        uid_mode={None: "none", NOBODY: "nobody"}.get(found["uid"], "random"),
        drops_capabilities=found["capabilities"],
        socket_filter=found["seccomp"],
    )


@functools.cache
def _probed() -> Isolation:
    return probe()


def current() -> Isolation:
    """This machine's isolation, probed on first use (tests replace this function)."""
    return _probed()


def notes(isolation: Isolation) -> list[str]:
    """What a program can still do on this machine, in words."""
    found: list[str] = []
    if isolation.uid_mode == "none":
        reason = "not root, so no uid drop is possible" if os.geteuid() != 0 else "setuid failed"
        found.append(f"programs run as the harness's own user ({reason}): they can read what it can read")
    if isolation.uid_mode == "nobody":
        found.append("dropping to uid 'nobody': parallel attempts share one process budget")
    if not isolation.read_only_mounts:
        own_user = isolation.uid_mode == "none"
        writable = "whatever the harness's user can write" if own_user else "world-writable directories"
        found.append(f"no mount namespace: programs can write {writable}, and the scratch directory has no size cap")
    if not isolation.network_namespace:
        found.append("no network namespace: programs can open network connections")
    if not isolation.pid_namespace:
        found.append("no PID namespace: processes that leave their session may outlive an attempt")
    if not isolation.private_proc:
        found.append("/proc shows the machine's processes (their command lines are readable)")
    if not isolation.capabilities_gone:
        where = "inside their user namespace" if isolation.user_namespace else "of root"
        found.append(
            f"programs keep every capability {where}: they can unmount the private /proc "
            "and read the machine's processes' command lines"
        )
    if not isolation.socket_filter:
        found.append(
            "no seccomp filter: programs can create sockets and connect() to unix socket files of the host "
            "(a network namespace and a read-only filesystem do not stop that), and create namespaces"
        )
    if isolation.uid_mode == "none" and not isolation.pid_namespace:
        found.append("the harness is NOT protected: a program can signal it (same uid, same PID namespace)")
    if not isolation.limits_processes:
        found.append("no per-attempt process limit (RLIMIT_NPROC needs a uid or user namespace of its own)")
    return found


def isolation_report() -> dict[str, object]:
    """Which protections are active on this machine, for run metadata (JSON-serialisable)."""
    isolation = current()
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
        "no_capabilities": isolation.capabilities_gone,
        "socket_filter": isolation.socket_filter,
        "rlimits": ["cpu", "address_space", "file_size", "core=0"]
        + (["processes"] if isolation.limits_processes else []),
        "no_new_privs": True,
        "own_session": True,
        "scrubbed_environment": True,
        "scratch_directory": True,
        "output_cap": True,
        "notes": notes(isolation),
    }
