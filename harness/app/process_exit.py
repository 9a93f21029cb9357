"""Ending the `bench` process without the interpreter's teardown.

After a command that imported torch, transformers and vLLM, the interpreter's own exit (clearing
every module, collecting the objects left) took 1 to 15 s on a loaded 2-core machine, every run
(BENCHMARKS.md, "Fixed cost"). Nothing in that teardown is needed: the command's files are
written and closed. So the process does what a normal exit does that matters, in the same order
(wait for the threads that are not daemons, run the atexit handlers, flush stdout and stderr),
and then ends at once.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any


def is_entry_point(function: Callable[..., Any]) -> bool:
    """Whether `function` is the program's own entry (the `bench` script, `python -m`), not a
    function called inside another program (a test calling `main()` in its own process)."""
    return getattr(sys.modules.get("__main__"), "main", None) is function


def end_process(status: int = 0) -> None:
    """A normal exit's work that matters, then the process's end without the teardown."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001  (the interpreter's own list: trackers, sandbox zygotes, vLLM)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(status)
