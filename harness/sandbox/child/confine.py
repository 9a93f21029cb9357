"""Kernel confinement used by the child processes: namespaces, mounts, rlimits, uid drop,
capabilities and a seccomp filter.

Only cheap built-in modules: this runs in every attempt.
"""

import _signal as signal  # the C module: `import signal` pulls in enum and costs ~4 ms
import os
import resource
import sys

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, SECCOMP_MODE_FILTER = 47, 4, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = -100, 0x8000, 0x1, 442


_LIBC_FUNCTIONS: dict = {}


def libc_function(name: str):
    """A libc function taking int, bytes or None arguments (bytes pass as a pointer to their
    contents). Uses _ctypes directly: `import ctypes` costs ~3 ms per attempt."""
    if name not in _LIBC_FUNCTIONS:
        try:
            import _ctypes

            address = _ctypes.dlsym(_ctypes.dlopen(None), name)  # type: ignore[arg-type]  # None: the program itself
            _LIBC_FUNCTIONS[name] = lambda *args: _ctypes.call_function(address, args)
        except (ImportError, AttributeError, OSError):
            import ctypes

            _LIBC_FUNCTIONS[name] = getattr(ctypes.CDLL(None, use_errno=True), name)
    return _LIBC_FUNCTIONS[name]


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


def effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise OSError("no CapEff line in /proc/self/status")


def drop_capabilities() -> None:
    """Give up every capability. Needed in a user namespace: its creator holds all capabilities
    inside it (enough to unmount the private /proc and see the host's processes) and a uid drop
    is impossible there. Empties the bounding set too, so that even a process running as root
    without a uid drop gains nothing by exec."""
    prctl = libc_function("prctl")
    for capability in range(64):  # fails past the kernel's last capability, or without CAP_SETPCAP
        prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # fails on kernels without ambient sets
    header = _LINUX_CAPABILITY_VERSION_3.to_bytes(4, "little") + bytes(4)  # this process
    libc_call("capset", header, bytes(24))  # effective, permitted, inheritable: all empty


# --- seccomp: a small classic-BPF filter over (architecture, syscall number, arguments) ----------
# Denied: creating sockets (so no connect() to any unix socket file on the host, or to any
# network, whatever the filesystem and network namespaces allow), socketpairs other than
# connected stream pairs (a datagram pair can sendto() any socket path), new namespaces
# (unshare, setns, clone with namespace flags: user namespaces hand out fresh capabilities and
# widen the kernel's attack surface), io_uring (it can create sockets on its own) and
# pidfd_getfd. clone3 answers ENOSYS: its flags sit in memory a filter cannot read, and the C
# library then falls back to clone, whose flags it can.
_SECCOMP_ARCHITECTURES = {  # uname machine: (AUDIT_ARCH_*, syscall numbers, first x32 number)
    "x86_64": (
        0xC000003E,
        {"socket": 41, "socketpair": 53, "clone": 56, "unshare": 272, "setns": 308},
        0x40000000,
    ),
    "aarch64": (0xC00000B7, {"socket": 198, "socketpair": 199, "clone": 220, "unshare": 97, "setns": 268}, None),
}
_COMMON_SYSCALLS = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "clone3": 435,
    "pidfd_getfd": 438,
}
_BPF_LD_W_ABS, _BPF_ALU_AND_K, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x54, 0x15, 0x35, 0x45, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS, _SOCK_STREAM, _SOCK_TYPE_MASK = 1, 38, 1, 0xF
_NAMESPACE_CLONE_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (low halves: little-endian)


def seccomp_supported() -> bool:
    return os.uname().machine in _SECCOMP_ARCHITECTURES


def _assemble(program: list) -> bytes:
    """Classic BPF with labels: items are ("label", name) or (code, k, jump_if_true, jump_if_false),
    jumps being 0 (the next instruction) or a label further down."""
    positions: dict[str, int] = {}
    instructions: list[tuple] = []
    for item in program:
        if item[0] == "label":
            positions[item[1]] = len(instructions)
        else:
            instructions.append(item)
    code = bytearray()
    for index, (opcode, k, if_true, if_false) in enumerate(instructions):
        jumps = [positions[j] - index - 1 if isinstance(j, str) else j for j in (if_true, if_false)]
        code += opcode.to_bytes(2, "little") + bytes(jumps) + k.to_bytes(4, "little")
    return bytes(code)


def seccomp_filter(machine: str) -> bytes:
    audit_arch, numbers, x32_base = _SECCOMP_ARCHITECTURES[machine]
    numbers = {**numbers, **_COMMON_SYSCALLS}
    denied = ("socket", "unshare", "setns", "io_uring_setup", "io_uring_enter", "io_uring_register", "pidfd_getfd")
    program: list[tuple] = [
        (_BPF_LD_W_ABS, _ARCH, 0, 0),
        (_BPF_JEQ_K, audit_arch, 0, "deny"),
        (_BPF_LD_W_ABS, _NR, 0, 0),
    ]
    if x32_base is not None:  # the x32 ABI reaches the same kernel code under other numbers
        program.append((_BPF_JGE_K, x32_base, "deny", 0))
    program += [(_BPF_JEQ_K, numbers[name], "deny", 0) for name in denied]
    program += [
        (_BPF_JEQ_K, numbers["clone3"], "enosys", 0),
        (_BPF_JEQ_K, numbers["clone"], "clone", 0),
        (_BPF_JEQ_K, numbers["socketpair"], "socketpair", "allow"),
        ("label", "clone"),
        (_BPF_LD_W_ABS, _ARG0, 0, 0),
        (_BPF_JSET_K, _NAMESPACE_CLONE_FLAGS, "deny", "allow"),
        ("label", "socketpair"),
        (_BPF_LD_W_ABS, _ARG1, 0, 0),
        (_BPF_ALU_AND_K, _SOCK_TYPE_MASK, 0, 0),
        (_BPF_JEQ_K, _SOCK_STREAM, "allow", "deny"),
        ("label", "allow"),  # classic BPF jumps only forward: the verdicts come last
        (_BPF_RET_K, _SECCOMP_RET_ALLOW, 0, 0),
        ("label", "deny"),
        (_BPF_RET_K, _SECCOMP_RET_ERRNO | _EPERM, 0, 0),
        ("label", "enosys"),
        (_BPF_RET_K, _SECCOMP_RET_ERRNO | _ENOSYS, 0, 0),
    ]
    return _assemble(program)


def _address_of_contents(data: bytes) -> int:
    """CPython keeps a bytes object's contents inline right after its header, and id() is the
    object's address; ctypes would tell the same but costs ~3 ms to import per attempt. The probe
    checks the installed filter really denies what it should, so a wrong address cannot go unseen."""
    return id(data) + bytes.__basicsize__ - 1


# Assembled once, when the zygote imports this module, not in every attempt.
_FILTER = seccomp_filter(os.uname().machine) if seccomp_supported() else b""


def install_seccomp_filter() -> None:
    """Needs PR_SET_NO_NEW_PRIVS first (then no privilege is needed)."""
    if not _FILTER:
        raise OSError(f"no seccomp filter for the {os.uname().machine} architecture")
    instructions = _FILTER
    count = len(instructions) // 8
    program = count.to_bytes(2, "little") + bytes(6) + _address_of_contents(instructions).to_bytes(8, "little")
    libc_call("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, program, 0, 0)


def confine(config: dict) -> None:
    """Everything the runner does to itself before running untrusted code, in this order:
    limits first (they cannot be raised again once the uid is dropped), then the uid drop, then
    capabilities (after the last mount) and the seccomp filter."""
    libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    set_limits(config)
    import_paths = sys.path + config["extra_paths"]
    if config["uid"] is not None:
        import_paths = drop_uid(config["uid"], import_paths)
    sys.path[:] = import_paths
    libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if config["drop_capabilities"]:
        drop_capabilities()
    if config["seccomp"]:
        install_seccomp_filter()
