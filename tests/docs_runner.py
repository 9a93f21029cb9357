"""Runs the docs' `bench` commands for tests/test_docs.py, each in a process forked from this one.

A `bench` command spends 5–8 s importing torch, transformers and the packages before its work,
which for a smoke run is a few seconds; the docs hold dozens of commands. So this process imports
them once and forks one child per command, which runs the real entry point
(`plasticity_bench.harness.app.cli:main`) with the command's arguments, in its folder, its output
in files, and ends with its exit status. Protocol: one JSON request per line on stdin
(`argv`, `cwd`, `stdout`, `stderr`), one JSON answer per line on stdout (`code`).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import pkgutil
import sys
import traceback

# What a run, an eval and a report import; imported here once instead of in every command.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.models.qwen3.modeling_qwen3",
    "pandas",
    "pyarrow.parquet",
    "matplotlib.pyplot",
    "scipy.stats",
    "sympy",
    "datasets",
    "reasoning_gym",
    "math_verify",
    "peft",
)


def preload() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  (an optional library: the command imports it, or says it is missing)
            pass
    import plasticity_bench

    for module in pkgutil.walk_packages(plasticity_bench.__path__, "plasticity_bench."):
        if "vllm" in module.name or module.name.rsplit(".", 1)[-1].startswith("_"):
            continue  # vLLM starts engines' machinery on import; private workers run as their own scripts
        try:
            importlib.import_module(module.name)
        except Exception:  # noqa: BLE001
            pass


def run_child(request: dict) -> None:
    """In the forked child: the command, then the process's end with its exit status."""
    code = 1
    try:
        os.chdir(request["cwd"])
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["bench", *request["argv"]]
        from plasticity_bench.harness.app.cli import main

        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001  (a bug: its traceback goes to the command's stderr, status 1)
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # noqa: SLF001  (what the command registered: trackers, sandbox workers)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
