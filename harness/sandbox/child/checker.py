"""The checker: runs the harness's test in the supervisor process, outside the candidate's reach.

The test is ordinary Python (``assert f(4) == 13``, HumanEval's ``check(candidate)``, an
evalplus comparison). Names it does not define itself and that are not builtins resolve to the
program's top-level names: a function becomes a proxy that calls it in the runner, a plain-data
value arrives as a copy; ``program.NAME`` does the same explicitly (for a test that defines a
name of its own with the same spelling). So expected values, comparisons and the verdict token
live only here; the candidate sees nothing but the arguments of its calls.

A candidate answer that is not plain data raises ``NotPlainData`` (a wrong answer, even if the
test swallows it); an exception of the candidate is re-raised here as the nearest builtin
exception class carrying the candidate's own description; a candidate that dies, closes its
channel or breaks the protocol raises ``CandidateGone``. Only cheap built-in modules.
"""

import builtins
import os
import select
from marshal import loads

from . import protocol
from .verdicts import DETAIL_CHARS, FAILURES, classify

MAX_REPLY_BYTES = 32 << 20  # a larger answer is a resource-limit failure (it would bloat the checker)
POLL_MS_WITHOUT_PIDFD = 50  # kernels before 5.3: look at the runner's state this often instead
BUILTIN_EXCEPTIONS = {
    name: value for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, Exception)
}
BUILTIN_NAMES = {name: value for name, value in vars(builtins).items() if not name.startswith("__")}


class CandidateGone(BaseException):
    """The runner exited, closed its channel or broke the protocol: no verdict from the test.
    A BaseException so that a test's ``except Exception`` cannot swallow it."""


class NotPlainData(BaseException):
    """The candidate answered with something that is not plain data: a wrong answer."""


class BadTest(BaseException):
    """The harness's test did something the channel cannot carry: a bug of the harness."""


class CandidateError(Exception):
    """An exception of a class the checker does not have (a class of the program's own)."""


class Channel:
    """The checker's end of the channel to one runner."""

    def __init__(self, runner_pid: int, calls_fd: int, replies_fd: int) -> None:
        self.runner_pid = runner_pid
        self.calls_fd = calls_fd
        self.replies_fd = replies_fd
        self.violation: tuple[str, str] | None = None  # a failure that stands even if the test swallows it
        self.poller = select.poll()
        self.poller.register(replies_fd, select.POLLIN)
        self.pidfd = _open_pidfd(runner_pid)
        if self.pidfd is not None:
            self.poller.register(self.pidfd, select.POLLIN)  # readable once the runner has exited
        self.reader = protocol.FrameReader(self._fill, MAX_REPLY_BYTES)

    def runner_alive(self) -> bool:
        return os.waitid(os.P_PID, self.runner_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    def _fill(self) -> bytes:
        """More reply bytes; raises CandidateGone once the runner has exited and nothing is left."""
        timeout = -1 if self.pidfd is not None else POLL_MS_WITHOUT_PIDFD
        while True:
            ready = {fd for fd, _ in self.poller.poll(timeout)}
            if self.replies_fd in ready:  # read what it said before it went, if anything
                try:
                    return os.read(self.replies_fd, protocol.READ_CHUNK)
                except OSError:
                    return b""
            if self.pidfd in ready or (self.pidfd is None and not self.runner_alive()):
                raise CandidateGone("the program's process exited")

    def receive(self) -> tuple:
        try:
            payload = self.reader.next_payload()
        except protocol.Overflow as overflow:
            self.violation = ("resource_limit", f"the program's answer was too large: {overflow}"[:DETAIL_CHARS])
            raise CandidateGone(str(overflow)) from None
        if payload is None:
            raise CandidateGone("the program closed its channel")
        try:
            message = loads(payload)
        except (ValueError, EOFError, TypeError):
            message = None
        if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
            self.violation = ("runtime_error", "the program wrote a malformed message into its channel")
            raise CandidateGone("malformed message")
        return message

    def request(self, message: tuple) -> tuple:
        try:
            protocol.write_all(self.calls_fd, protocol.frame(message))
        except OSError:  # the runner is gone (EPIPE)
            raise CandidateGone("the program's process exited") from None
        return self.receive()

    def get(self, name: str) -> object:
        """The program's top-level ``name``: a proxy for a function, a copy of plain data."""
        reply = self.request(("get", name))
        if reply == ("function",):
            return CandidateFunction(self, name)
        if reply == ("missing",):
            raise NameError(f"name {name!r} is not defined")
        return self.value(reply, f"the program's name {name!r}")

    def call(self, name: str, args: tuple, kwargs: dict) -> object:
        if not (protocol.is_plain(args) and protocol.is_plain(kwargs)):
            raise BadTest(f"the test passed something that is not plain data to {name}()")
        reply = self.request(("call", name, args, kwargs))
        if reply == ("missing",):
            raise NameError(f"name {name!r} is not defined")
        return self.value(reply, f"{name}()")

    def value(self, reply: tuple, what: str) -> object:
        """The value in a reply; raises the candidate's exception or NotPlainData."""
        kind = reply[0]
        if kind == "value" and len(reply) == 2 and protocol.is_plain(reply[1]):
            return reply[1]
        if kind == "raised" and _well_formed_exception(reply):
            raise rebuild_exception(*reply[1:])
        opaque = kind == "opaque" and len(reply) == 2 and isinstance(reply[1], str)
        description = reply[1][:80] if opaque else "a malformed reply"
        detail = f"{what} gave {description}, which is not plain data"
        self.violation = ("wrong_answer", detail)
        raise NotPlainData(detail)


class CandidateFunction:
    """Calls the program's function in the runner; arguments and result are copied as plain data."""

    def __init__(self, channel: Channel, name: str) -> None:
        self._channel = channel
        self.__name__ = name

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._channel.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<function {self.__name__} of the program>"


class Program:
    """``program.NAME`` in the test: the program's top-level NAME, explicitly."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):  # protocol lookups (copy, pickle, ...) are not the program's names
            raise AttributeError(name)
        try:
            return self._channel.get(name)
        except NameError:
            raise AttributeError(f"the program defines no {name!r}") from None


class CheckNamespace(dict):
    """The test's globals: builtins and its own names first, then the program's, on demand."""

    def __init__(self, channel: Channel) -> None:
        super().__init__(BUILTIN_NAMES)
        self.update({"__name__": "__main__", "__builtins__": builtins, "program": Program(channel)})
        self._channel = channel

    def __missing__(self, name: str) -> object:
        try:
            value = self._channel.get(name)
        except NameError:
            raise KeyError(name) from None  # the interpreter turns this into NameError
        if isinstance(value, CandidateFunction):
            self[name] = value  # functions are looked up once; data is re-read, it may change
        return value


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _well_formed_exception(reply: tuple) -> bool:
    return (
        len(reply) == 6
        and all(isinstance(reply[i], str) for i in (1, 2, 4, 5))
        and (reply[3] is None or type(reply[3]) is int)
    )


def rebuild_exception(class_name: str, base_name: str, errno: int | None, message: str, detail: str) -> Exception:
    """The candidate's exception as an instance of the nearest builtin class (OSError keeps its
    errno, which the limits are classified by), described as the candidate described it."""
    base = BUILTIN_EXCEPTIONS.get(base_name, CandidateError)
    if errno is not None and issubclass(base, OSError):
        error: Exception = OSError(errno, message)
    else:
        error = _instantiate(base, message)
    error.sandbox_detail = detail[:DETAIL_CHARS] or class_name  # type: ignore[attr-defined]
    return error


def _instantiate(base: type, message: str) -> Exception:
    for candidate in base.__mro__:  # e.g. UnicodeDecodeError needs 5 arguments; UnicodeError takes one
        try:
            return candidate(message)
        except TypeError:
            continue
    return CandidateError(message)


def handshake(channel: Channel) -> tuple[str, str] | None:
    """Wait for the runner's confinement and the program's top level. None: go on to the test;
    else the verdict (a sandbox error, or the program's own failure)."""
    first = channel.receive()
    if first[0] == "sandbox_error" and len(first) == 2 and isinstance(first[1], str):
        return "sandbox_error", first[1][:DETAIL_CHARS]
    if first != ("ready",):
        return "runtime_error", "the sandbox's runner did not report ready"
    second = channel.receive()
    if second == ("loaded",):
        return None
    well_formed = len(second) == 3 and second[1] in FAILURES and isinstance(second[2], str)
    if second[0] == "failed" and well_formed:
        return second[1], second[2][:DETAIL_CHARS]
    return "runtime_error", "the program wrote a malformed message into its channel"


def run_test(test: str, channel: Channel) -> tuple[str, str]:
    """Execute the test against the program; the verdict as (outcome, detail)."""
    namespace = CheckNamespace(channel)
    try:
        exec(compile(test, "<test>", "exec"), namespace)  # noqa: S102 (trusted: written by the harness)
    except (CandidateGone, BadTest):
        raise
    except NotPlainData as error:
        return "wrong_answer", str(error)[:DETAIL_CHARS]
    except BaseException as error:  # noqa: BLE001 (SystemExit and KeyboardInterrupt too: not a pass)
        return classify(error)
    return "pass", ""


def judge(test: str, channel: Channel) -> tuple[str, str] | None:
    """The verdict, or None when the candidate died first (the harness then classifies how it
    died: a CPU-limit kill, a signal, an early exit)."""
    try:
        verdict = handshake(channel) or run_test(test, channel)
    except CandidateGone:
        return channel.violation
    except BadTest as error:
        return "sandbox_error", str(error)[:DETAIL_CHARS]
    if channel.violation is not None:
        return channel.violation
    if verdict[0] in FAILURES or verdict[0] == "sandbox_error":
        return verdict
    # A pass also needs the runner itself alive: not replaced by a process it forked, not exited
    # early. A test that swallowed CandidateGone lands here too.
    return verdict if channel.runner_alive() else None
