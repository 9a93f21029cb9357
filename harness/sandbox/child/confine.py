"""Kernel confinement used by the child processes: namespaces, mounts, rlimits, uid drop.

Only cheap built-in modules: this runs in every attempt.
"""

import _signal as signal  # the C module: `import signal` pulls in enum and costs ~4 ms
import os
import resource
import sys

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = -100, 0x8000, 0x1, 442


def libc_function(name: str):
    """A libc function taking int, bytes or None arguments. Uses _ctypes directly: `import ctypes`
    costs ~3 ms per attempt."""
    try:
        import _ctypes

        address = _ctypes.dlsym(_ctypes.dlopen(None), name)
        return lambda *args: _ctypes.call_function(address, args)
    except (ImportError, AttributeError, OSError):
        import ctypes

        return getattr(ctypes.CDLL(None, use_errno=True), name)


def libc_call(name: str, *args) -> None:
    if libc_function(name)(*args) != 0:
        raise OSError(f"{name}{args!r} failed")


def make_filesystem_read_only() -> None:
    """In a fresh mount namespace: stop mount events propagating out, then make every mount
    read-only (one mount_setattr call, recursive)."""
    libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    attributes = MOUNT_ATTR_RDONLY.to_bytes(8, "little") + bytes(24)  # struct mount_attr
    libc_call("syscall", SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, attributes, len(attributes))


def enter_namespaces(flags: int) -> None:
    """unshare(flags); in a new user namespace, map our own uid and gid to themselves: without a
    mapping, creating any file fails with EOVERFLOW."""
    uid, gid = os.getuid(), os.getgid()
    libc_call("unshare", flags)
    if flags & CLONE_NEWUSER:
        maps = (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1"))
        for name, text in maps:
            with open("/proc/self/" + name, "w") as mapping:
                mapping.write(text)


def mount_scratch(path: str, size_bytes: int, uid: int | None) -> None:
    """A size-capped tmpfs on the scratch directory: the only writable place, gone with the attempt."""
    options = f"size={size_bytes},mode=0700"
    if uid is not None:
        options += f",uid={uid},gid={uid}"
    libc_call("mount", b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode())


def mount_private_proc() -> None:
    """/proc of the attempt's own PID namespace: other processes' command lines stay hidden."""
    libc_call("mount", b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


def readable_path_through_fds(paths: list[str]) -> dict[str, str]:
    """Import paths that stay usable after the uid drop even if an ancestor directory is private
    to root (e.g. a pyenv under /root): /proc/self/fd/N of a directory opened while still root."""
    mapping = {}
    for path in paths:
        if os.path.isdir(path):
            mapping[path] = f"/proc/self/fd/{os.open(path, os.O_RDONLY | os.O_DIRECTORY)}"
    return mapping


def remap(path: str, mapping: dict[str, str]) -> str:
    for original, through_fd in mapping.items():
        if path == original or path.startswith(original + "/"):
            return through_fd + path[len(original) :]
    return path


def set_limits(config: dict) -> None:
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


def drop_uid(uid: int, import_paths: list[str]) -> list[str]:
    """Become ``uid``; returns the import paths rewritten to stay readable afterwards."""
    mapping = readable_path_through_fds(import_paths)
    for module in list(sys.modules.values()):  # packages already imported, e.g. encodings
        package_path = getattr(module, "__path__", None)
        if isinstance(package_path, list):
            package_path[:] = [remap(p, mapping) for p in package_path]
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    return [mapping[p] for p in import_paths if p in mapping]


def confine(config: dict) -> None:
    """Everything the runner does to itself before running untrusted code, in this order:
    limits first (they cannot be raised again once the uid is dropped), then the uid drop."""
    libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    set_limits(config)
    import_paths = sys.path + config["extra_paths"]
    if config["uid"] is not None:
        import_paths = drop_uid(config["uid"], import_paths)
    sys.path[:] = import_paths
    libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
