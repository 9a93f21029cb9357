"""`bench` in a subprocess for the tests, without importing torch again for every call.

A `bench` process spends ≈ 8 s importing torch, transformers and the harness before it reads its
arguments, and the suite starts hundreds of them (BENCHMARKS §27). So each pytest worker keeps a
server per import-time environment: the server imports those modules once and forks one child per
call. From the fork on, the child *is* `python -m plasticity_bench.harness.app.cli ARGS`: its own
process (and process group), the call's environment, working directory and arguments, stdin from
/dev/null, stdout and stderr captured, `__main__` the CLI module (so multiprocessing's spawned
children start as they would), and its exit status or killing signal returned as a
`subprocess.CompletedProcess`.

Why forking is safe here: the server never runs a tensor operation, so no OpenMP pool exists when
it forks; the native threads its imports start (OpenBLAS, jemalloc) re-create themselves after a
fork. What a fork cannot reproduce is an environment variable read while importing (the offline
switches, OMP_NUM_THREADS, PYTHONPATH): a server's imports happened under one environment, so a
call is forked only by a server whose environment equals the call's in everything but the
harness's own PLASTICITY_BENCH_* variables (read when used) and pytest's PYTEST_CURRENT_TEST, and a
new server is started for a new environment. `BENCH_TESTS_FORK=0` turns all of this off: every
call is then a plain subprocess.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = "plasticity_bench.harness.app.cli"
# read when used, not while importing: may differ between calls that share a server (pytest names the
# running test in PYTEST_CURRENT_TEST, so keying servers on it would start one per test)
CALL_TIME_PREFIXES = ("PLASTICITY_BENCH_", "PYTEST_CURRENT_TEST")
MAX_SERVERS = 4  # per pytest worker; the least recently used one is stopped beyond that
# What a run, an eval and a report import (a smoke run spends 8 of its 15 s importing them); a call that
# needs more imports it itself. Not vLLM: only the calls that use it import it.
PRELOAD = (
    "torch",
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
    "plasticity_bench.harness.app.cli",
    "plasticity_bench.harness.app.run",
    "plasticity_bench.harness.app.evaluate",
    "plasticity_bench.harness.app.study",
    "plasticity_bench.harness.app.sweep",
    *(
        f"plasticity_bench.harness.app.stages.{stage}"
        for stage in ("prepare", "train", "few_shot", "generate", "kl", "prompts", "score", "report")
    ),
    "plasticity_bench.harness.backends.hf",
    "plasticity_bench.harness.backends.vllm_backend",
    "plasticity_bench.trainers",
    "plasticity_bench.tasks.suites",
    "plasticity_bench.reports.html",
    "plasticity_bench.reports.study",
)


# ------------------------------------------------------------------------------------------ client


def import_environment(args: tuple[str, ...], env: dict[str, str]) -> dict[str, str]:
    """The environment `bench ARGS` has when it imports torch & co: what `main` sets before then."""
    from plasticity_bench.harness.app import cli, offline

    effective = dict(env)
    for name, value in SILENCED.items():
        effective.setdefault(name, value)
    network = bool(cli.NETWORK_COMMANDS & set(args[:1])) and "--help" not in args
    if network and not any(name in effective for name in offline.OFFLINE_VARIABLES) and hub_unresolvable():
        effective.update(dict.fromkeys(offline.OFFLINE_VARIABLES, "1"))
    return effective


def silenced_variables() -> dict[str, str]:
    """The variables `silence_libraries` sets by default, read off the function itself."""
    from plasticity_bench.harness.app.cli import silence_libraries

    saved = dict(os.environ)
    os.environ.clear()
    try:
        silence_libraries()
        return dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


SILENCED: dict[str, str] = {}
_HUB_UNRESOLVABLE: list[bool] = []


def hub_unresolvable() -> bool:
    if not _HUB_UNRESOLVABLE:
        from plasticity_bench.harness.app.offline import hub_host
        from plasticity_bench.harness.app.offline import hub_unresolvable as unresolvable

        _HUB_UNRESOLVABLE.append(unresolvable(hub_host()))
    return _HUB_UNRESOLVABLE[0]


class Server:
    """One forking server process, started with `env` as its whole environment."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self.connection = Connection(ours.detach())
        ready = self.connection.recv() if self.connection.poll(300) else None
        if ready != "ready":
            self.stop()
            raise RuntimeError(f"the bench test server did not start: {ready!r}")

    def call(
        self, args: tuple[str, ...], env: dict[str, str], cwd: Path, timeout: float, entry: str
    ) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="bench-call-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            self.connection.send(
                {"args": args, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "entry": entry}
            )
            pid = self.connection.recv()
            if not self.connection.poll(timeout):
                os.killpg(pid, signal.SIGKILL)  # the child and whatever it started
                self.connection.recv()
                raise subprocess.TimeoutExpired(command(args, entry), timeout, out.read_text(), err.read_text())
            status = self.connection.recv()
            return subprocess.CompletedProcess(command(args, entry), status, out.read_text(), err.read_text())

    def stop(self) -> None:
        self.connection.close()  # the server exits when its end of the socket closes
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


_SERVERS: dict[frozenset[tuple[str, str]], Server] = {}


def command(args: tuple[str, ...], entry: str = "module") -> list[str]:
    """The command line a call stands for: `python -m CLI ARGS`, or the installed `bench ARGS` script."""
    if entry == "script":
        return [str(Path(sys.executable).with_name("bench")), *args]
    return [sys.executable, "-m", CLI, *args]


def run_bench(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    entry: str = "module",
) -> subprocess.CompletedProcess:
    """`python -m plasticity_bench.harness.app.cli ARGS` (entry "module") or `bench ARGS` (entry
    "script", the console script a user types) with this environment and folder, output captured as
    text: forked from a pre-imported server where the environment allows, else a subprocess."""
    env = dict(os.environ if env is None else env)
    cwd = cwd or ROOT
    if os.environ.get("BENCH_TESTS_FORK", "1") == "0":
        return subprocess.run(command(args, entry), capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if not SILENCED:
        SILENCED.update(silenced_variables())
    imported_under = import_environment(args, env)
    key = frozenset((k, v) for k, v in imported_under.items() if not k.startswith(CALL_TIME_PREFIXES))
    server = _SERVERS.pop(key, None)
    if server is None or server.process.poll() is not None:
        if len(_SERVERS) >= MAX_SERVERS:
            _SERVERS.pop(next(iter(_SERVERS))).stop()
        server = Server(dict(key))
    _SERVERS[key] = server  # most recently used last
    return server.call(args, env, cwd, timeout, entry)


@atexit.register
def stop_servers() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].stop()


# ------------------------------------------------------------------------------------------ server


def serve(connection: Connection) -> None:
    """Import once, then fork a child per request until the client closes its end."""
    import importlib
    import importlib.util
    import warnings

    warnings.filterwarnings("ignore", message=".*multi-threaded.*fork.*", category=DeprecationWarning)
    for name in PRELOAD:
        importlib.import_module(name)
    if importlib.util.find_spec("deepspeed") is not None:
        # when installed, every save_pretrained imports it (accelerate's unwrapping checks for DeepSpeedEngine)
        importlib.import_module("deepspeed")
    connection.send("ready")
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        pid = os.fork()
        if pid == 0:
            connection.close()
            become_the_cli(request)
        connection.send(pid)
        _, status = os.waitpid(pid, 0)
        connection.send(os.waitstatus_to_exitcode(status))


def become_the_cli(request: dict[str, Any]) -> None:
    """In the forked child: what `python -m` would have set up, then the CLI; never returns."""
    import runpy
    import traceback
    import types

    from plasticity_bench.harness.app.process_exit import end_process

    status = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        if request["entry"] == "script":  # the console script: a `__main__` that imported `main` and calls it
            sys.argv = command(tuple(request["args"]), "script")
            sys.path[0] = os.path.dirname(sys.argv[0])  # a script's own folder, as Python has it
            from plasticity_bench.harness.app.cli import main

            script = types.ModuleType("__main__")
            script.main = main  # type: ignore[attr-defined]
            sys.modules["__main__"] = script
            main()
        else:
            sys.path[0] = os.getcwd()  # as `python -m` has it
            sys.argv = [CLI, *request["args"]]  # run_module puts the module's file first
            sys.modules.pop(CLI, None)  # `python -m` runs the module as __main__ only, never under its name
            runpy.run_module(CLI, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            status = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    end_process(status)


if __name__ == "__main__":
    sys.path[0] = str(ROOT)  # not tests/: the server imports the package as `python -m` from the root would
    serve(Connection(int(sys.argv[1])))
