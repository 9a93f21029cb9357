"""Isolation probe: which kernel protections this machine allows, tried with the very functions
the sandbox uses, each in a throwaway child. Reads ``marshal((user_flag, uids, scratch_parent))``
on stdin and writes ``marshal(found)`` on stdout."""

import marshal
import os
import sys

from .confine import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    enter_namespaces,
    libc_call,
    make_filesystem_read_only,
    mount_private_proc,
    mount_scratch,
)


def in_child(action) -> bool:
    """Try an irreversible action in a throwaway child; True if it succeeded."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if action() is not False else 1)
        except BaseException:  # noqa: BLE001 (any failure means: not available here)
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def become(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def pid_namespace_works(user: int) -> bool:
    enter_namespaces(user | CLONE_NEWPID)
    return in_child(lambda: os.getpid() == 1)


def mounts_work(user: int, scratch_parent: str) -> None:
    enter_namespaces(user | CLONE_NEWNS)
    make_filesystem_read_only()
    libc_call("unshare", CLONE_NEWNS)
    mount_scratch(scratch_parent, 1 << 20, None)
    with open(os.path.join(scratch_parent, "probe"), "w") as probe:
        probe.write("writable")


def private_proc_works(user: int) -> bool:
    enter_namespaces(user | CLONE_NEWNS | CLONE_NEWPID)
    make_filesystem_read_only()
    return in_child(mount_private_proc)


def main() -> None:
    user, uids, scratch_parent = marshal.loads(sys.stdin.buffer.read())
    found = {
        "user_namespace": bool(user) and in_child(lambda: enter_namespaces(CLONE_NEWUSER)),
        "network": in_child(lambda: enter_namespaces(user | CLONE_NEWNET)),
        "pid": in_child(lambda: pid_namespace_works(user)),
        "mounts": in_child(lambda: mounts_work(user, scratch_parent)),
        "proc": in_child(lambda: private_proc_works(user)),
        "uid": next((uid for uid in uids if in_child(lambda: become(uid))), None),  # noqa: B023 (called at once)
    }
    sys.stdout.buffer.write(marshal.dumps(found))
