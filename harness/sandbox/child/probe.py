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
    MS_PRIVATE,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    drop_capabilities,
    effective_capabilities,
    enter_namespaces,
    install_seccomp_filter,
    libc_call,
    libc_function,
    make_filesystem_read_only,
    mount_private_proc,
    mount_scratch,
    seccomp_supported,
)

MNT_DETACH, AF_UNIX, SOCK_STREAM = 2, 1, 1


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


def capabilities_can_be_dropped(user: int) -> bool:
    """All capabilities gone, and /proc cannot be unmounted any more. Tried in a private mount
    namespace of its own, so that an unmount that wrongly succeeded would not reach the host."""
    enter_namespaces(user | CLONE_NEWNS)
    libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    drop_capabilities()
    return effective_capabilities() == 0 and libc_function("umount2")(b"/proc", MNT_DETACH) != 0


def socket_filter_works() -> bool:
    """The seccomp filter installs, denies sockets and new namespaces, and leaves fork and
    threads working (threads go through clone3 first, which it answers with ENOSYS)."""
    import _socket
    import _thread

    if not seccomp_supported():
        return False
    libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    install_seccomp_filter()
    try:
        _socket.socket(AF_UNIX, SOCK_STREAM).close()
        return False
    except PermissionError:
        pass
    if libc_function("unshare")(CLONE_NEWUSER) == 0 or not in_child(lambda: True):
        return False
    started = _thread.allocate_lock()
    started.acquire()
    _thread.start_new_thread(started.release, ())
    return started.acquire(timeout=5)


def main() -> None:
    user, uids, scratch_parent = marshal.loads(sys.stdin.buffer.read())
    found = {
        "user_namespace": bool(user) and in_child(lambda: enter_namespaces(CLONE_NEWUSER)),
        "network": in_child(lambda: enter_namespaces(user | CLONE_NEWNET)),
        "pid": in_child(lambda: pid_namespace_works(user)),
        "mounts": in_child(lambda: mounts_work(user, scratch_parent)),
        "proc": in_child(lambda: private_proc_works(user)),
        "uid": next((uid for uid in uids if in_child(lambda: become(uid))), None),  # noqa: B023 (called at once)
        "capabilities": in_child(lambda: capabilities_can_be_dropped(user)),
        "seccomp": in_child(socket_filter_works),
    }
    sys.stdout.buffer.write(marshal.dumps(found))
