"""Turning an exception into an outcome and a short detail; shared by the runner (the program's
own top level) and the checker (the test). Only cheap built-in modules."""

import sys

DETAIL_CHARS = 300
# errno values meaning the program ran into one of our limits rather than a bug of its own
LIMIT_ERRNOS = {11: "EAGAIN", 12: "ENOMEM", 27: "EFBIG", 28: "ENOSPC", 122: "EDQUOT"}
FAILURES = frozenset({"wrong_answer", "runtime_error", "syntax_error", "resource_limit"})


def describe(error: BaseException) -> str:
    """``Type: message``, truncated; an exception rebuilt from the candidate's report keeps the
    candidate's own description (its class may not exist on this side)."""
    detail = getattr(error, "sandbox_detail", None)
    if isinstance(detail, str):
        return detail[:DETAIL_CHARS]
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # noqa: BLE001 (a hostile __str__ may raise anything)
        text = type(error).__name__
    return text[:DETAIL_CHARS]


def raised_in(error: BaseException, filename: str) -> bool:
    """True when the innermost frame of the traceback runs code compiled as ``filename``."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == filename


def classify(error: BaseException) -> tuple[str, str]:
    """Outcome of an exception that ended the program or the test. Only an assertion of the
    test itself (code compiled as ``<test>``) is a wrong answer; the limits surface as
    MemoryError, OSError with a limit errno (Python ignores SIGXFSZ, so the file size limit is
    EFBIG) or a thread that cannot start (the process limit)."""
    if isinstance(error, AssertionError):
        return ("wrong_answer" if raised_in(error, "<test>") else "runtime_error"), describe(error)
    if isinstance(error, MemoryError):
        return "resource_limit", describe(error)
    if isinstance(error, OSError):
        return ("resource_limit" if error.errno in LIMIT_ERRNOS else "runtime_error"), describe(error)
    if isinstance(error, RuntimeError) and describe(error).startswith("RuntimeError: can't start new thread"):
        return "resource_limit", describe(error)
    return "runtime_error", describe(error)


def flush_standard_streams() -> None:
    """Push buffered prints into the output pipe: processes here leave through os._exit or SIGKILL."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 (closed or replaced by the program: nothing to flush)
            pass
