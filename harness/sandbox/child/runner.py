"""The runner: the only process that runs untrusted code.

It confines itself, runs the program's top level, then answers the checker's requests, one at a
time: call one of the program's functions with plain-data arguments, or read one of its
top-level names. It never holds the test, its expected values or the verdict token (they are
read by the supervisor only after this process was forked), and it has no handle on the result
pipe. Whatever it sends back is plain data the checker validates, so the program can make its
own answers wrong but cannot make the checker's comparison or verdict say anything else.
Only cheap built-in modules.
"""

import builtins
import os
from marshal import loads

from . import protocol
from .confine import confine, mount_private_proc
from .verdicts import classify, describe, flush_standard_streams

MAX_REQUEST_BYTES = 1 << 30  # requests come from the trusted checker; this only bounds a bug
_exit, _getpid = os._exit, os.getpid  # bound before the program can patch os


def _prebuilt_memory_error() -> bytes:
    """Sent when even encoding a reply fails for lack of memory."""
    return protocol.frame(("raised", "MemoryError", "MemoryError", None, "", "MemoryError: out of memory"))


MEMORY_ERROR_FRAME = _prebuilt_memory_error()


def send(fd: int, message: tuple) -> None:
    try:
        data = protocol.frame(message)
    except MemoryError:
        data = MEMORY_ERROR_FRAME
    except ValueError:  # marshal refused it after all (e.g. nested beyond its limit)
        data = protocol.frame(("opaque", "a value marshal refused"))
    protocol.write_all(fd, data)


def builtin_base(kind: type) -> type:
    """The first class of ``kind``'s MRO that the checker also has: a builtin exception."""
    for base in kind.__mro__:
        if base.__module__ == "builtins":
            return base
    return BaseException


def raised_reply(error: BaseException) -> tuple:
    """An exception as plain data: class name, builtin base, errno, message, description."""
    kind = type(error)
    errno, message = None, ""
    if isinstance(error, OSError) and type(error.errno) is int:
        errno, message = error.errno, str(error.strerror or "")
    else:
        try:
            message = str(error)
        except BaseException:  # noqa: BLE001 (a hostile __str__)
            message = ""
    return "raised", str(kind.__name__), builtin_base(kind).__name__, errno, message[:1000], describe(error)


def value_reply(value: object) -> tuple:
    try:
        return "value", protocol.to_plain(value)
    except protocol.NotPlain as error:
        return "opaque", error.description
    except BaseException as error:  # noqa: BLE001 (e.g. a tolist() that raises: the program's error)
        return raised_reply(error)


def answer(namespace: dict, request: tuple) -> tuple:
    """One request of the checker: ("get", name) or ("call", name, args, kwargs)."""
    kind, name = request[0], request[1]
    if name not in namespace:
        return ("missing",)
    target = namespace[name]
    if kind == "get":
        return ("function",) if callable(target) else value_reply(target)
    if not callable(target):
        return "opaque", f"a {type(target).__name__} object, not a function,"
    try:
        result = target(*request[2], **request[3])
    except BaseException as error:  # noqa: BLE001 (every failure of the program goes back as data)
        return raised_reply(error)
    return value_reply(result)


def execute_program(program: str, namespace: dict) -> tuple[str, str] | None:
    """Run the program's top level; None if it finished, else (outcome, detail)."""
    try:
        code = compile(program, "<program>", "exec")
    except (SyntaxError, ValueError) as error:  # ValueError: NUL bytes in the source
        return "syntax_error", describe(error)
    except MemoryError as error:
        return "resource_limit", describe(error)
    except BaseException as error:  # noqa: BLE001 (e.g. RecursionError from absurd nesting)
        return "runtime_error", describe(error)
    try:
        exec(code, namespace)  # noqa: S102 (running the untrusted program is the point)
    except MemoryError as error:
        namespace.clear()  # free the program's data so reporting does not fail too
        return "resource_limit", describe(error)
    except BaseException as error:  # noqa: BLE001 (SystemExit and KeyboardInterrupt too: not a pass)
        return classify(error)
    return None


def serve(namespace: dict, calls_fd: int, replies_fd: int, runner_pid: int) -> None:
    """Answer requests until the checker closes the channel."""
    reader = protocol.blocking_reader(calls_fd, MAX_REQUEST_BYTES)
    while True:
        payload = reader.next_payload()
        if payload is None:
            _exit(0)
        reply = answer(namespace, loads(payload))
        flush_standard_streams()
        if _getpid() != runner_pid:  # a process the program forked returns here too: it has no say
            _exit(0)
        send(replies_fd, reply)


def run(program: str, config: dict, calls_fd: int, replies_fd: int) -> None:
    """Confine this process, run the program, serve the checker; never returns."""
    runner_pid = _getpid()
    os.setsid()  # own session and group: killpg(0) from the program cannot reach the supervisor
    try:
        if config["private_proc"]:
            mount_private_proc()
        confine(config)
    except BaseException as error:  # noqa: BLE001 (any setup failure is the sandbox's, reported as such)
        send(replies_fd, ("sandbox_error", describe(error)))
        _exit(1)
    # Sent before any untrusted code runs, so the program cannot fake a sandbox error.
    send(replies_fd, ("ready",))
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    failure = execute_program(program, namespace)
    flush_standard_streams()
    if _getpid() != runner_pid:
        _exit(0)
    if failure is not None:
        send(replies_fd, ("failed", *failure))
        _exit(0)
    send(replies_fd, ("loaded",))
    serve(namespace, calls_fd, replies_fd, runner_pid)
