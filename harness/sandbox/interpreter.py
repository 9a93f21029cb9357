"""How the harness starts the sandbox's child interpreters (zygotes and the isolation probe)."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

CHILD_MAIN = str(Path(__file__).resolve().parent / "child" / "__main__.py")


def child_command(*arguments: str) -> list[str]:
    """``-I`` ignores ``PYTHON*`` variables and the user site; ``-S`` skips ``site`` (faster)."""
    return [sys.executable, "-I", "-S", CHILD_MAIN, *arguments]


def scrubbed_environment(scratch: str) -> dict[str, str]:
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


def site_package_paths() -> list[str]:
    """Where the harness's third-party packages live: its environment's site-packages and any
    PYTHONPATH entries (the child runs with -I, which ignores PYTHONPATH)."""
    paths = sysconfig.get_paths()
    from_environment = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    candidates = [paths["purelib"], paths["platlib"], *from_environment]
    return list(dict.fromkeys(p for p in candidates if p and os.path.isdir(p)))
