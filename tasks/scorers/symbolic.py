"""`math_verify`: math answers judged by Hugging Face's math-verify library (sympy underneath).

The gold (``item.answer``) may be plain (``42``, ``3/4``, ``1,234``, ``2.5e-3``) or LaTeX
(``\\frac{3}{4}``, ``\\boxed{...}``, ``$...$``): `prepare_gold` wraps a gold without math
delimiters in ``$...$`` so that math-verify reads it as LaTeX. The output is given to
math-verify's `parse` with its default extraction (``\\boxed{}`` first, then the last LaTeX or
plain expression), and `verify(gold, parsed)` decides. The recorded answer is the text
math-verify extracted (its parse's last element; empty when it found none).

Bounding the time. math-verify enforces its own timeouts with ``signal.alarm``, which works only
in a process's main thread and cannot interrupt C code (``9^{9^{9^{9}}}`` hangs inside one integer
power). So the work runs in a few worker processes (``_math_verify_worker.py``, plain
subprocesses speaking JSON lines) with math-verify's timeouts off, and this process times every
step from the outside: a gold parse, or one output's parse + verify, that takes longer than
``timeout_s`` has its worker killed (and replaced) and scores wrong with outcome ``timeout``. This
works from any thread. Each distinct gold string belongs to one worker (by a hash), which parses
it once and keeps it cached for later batches (only a worker helping out with another's queue
parses it again). Workers start on first use or `start()` (≈ 0.5 s), are shared by all
`MathVerify` instances with the same worker count, and live until `close()` or exit.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import re
import selectors
import subprocess
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score
from plasticity_bench.tasks.scorers.base import SCORERS, Scorer, binary

TIMEOUT = "timeout"
GOLD_UNPARSED = "gold_unparsed"  # math-verify found no answer in the gold: a data problem, scored wrong
WORKER_ERROR = "error"  # the worker died on this output (e.g. killed for memory); scored wrong

WORKER_SCRIPT = Path(__file__).with_name("_math_verify_worker.py")
WORKER_MEMORY_MB = 4096  # address-space cap per worker: a runaway expression fails instead of eating the machine
STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded machine can take a while
MAX_FAILED_STARTS = 3  # workers that die while starting, in one batch, before giving up
CHUNK = 32  # jobs per request at most

_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")
_PLAIN_NUMBER = re.compile(r"([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+)(?:[eE]([-+]?\d+))?")


def prepare_gold(answer: str) -> str:
    """The gold as math-verify should see it: plain golds wrapped in ``$...$`` (LaTeX golds kept).

    Plain scientific notation is rewritten first, because inside LaTeX ``1e-5`` reads as
    ``1·e - 5`` (Euler's e) and outside it math-verify stops at ``1``.
    """
    text = answer.strip()
    number = _PLAIN_NUMBER.fullmatch(text)
    if number and number.group(2) is not None:
        text = f"{number.group(1)}\\times 10^{{{int(number.group(2))}}}"
    if _DELIMITED.search(text):
        return text
    return f"${text}$"


@SCORERS.register(
    "math_verify", "math answers judged equivalent by math-verify (LaTeX or plain; boxed or last expression)"
)
class MathVerify(Scorer):
    """math-verify's parse + verify, in worker processes, with a per-step time limit."""

    needs = frozenset({"answer"})

    requires = ("math-verify", "latex2sympy2_extended", "sympy")  # the parser and the algebra both decide a verdict

    def __init__(self, timeout_s: float = 5.0, workers: int | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self.workers = workers if workers is not None else default_workers()

    def check(self, item: Item, output: str) -> Score:
        return self.check_items([item], [output])[0]

    def check_items(self, items: Sequence[Item], outputs: Sequence[str]) -> list[Score]:
        """The batch goes to the worker pool together (each gold parsed once, outputs in parallel)."""
        if not items:
            return []
        groups: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(prepare_gold(item.answer), []).append(index)
        # a gold's items together
        jobs = [_Job(i, gold, outputs[i]) for gold, indices in groups.items() for i in indices]
        outcomes, answers = shared_pool(self.workers).run(jobs, self.timeout_s)
        return [binary(outcomes[i] == "correct", outcomes[i], answers.get(i, "")) for i in range(len(items))]

    def start(self) -> None:
        """Start the worker processes now and wait until they are ready (else the first batch starts them)."""
        shared_pool(self.workers).start()

    def close(self) -> None:
        close_pool(self.workers)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class _Job(NamedTuple):
    position: int  # in the batch
    gold: str  # prepared
    output: str


@dataclass
class _Worker:
    process: subprocess.Popen
    slot: int  # its place in the pool; the golds hashed to it are its own
    ready: bool = False
    jobs: list[_Job] = field(default_factory=list)  # sent and not yet answered; the first is under way
    parsing_gold: bool = False  # the first job's gold is being parsed
    deadline: float = 0.0
    pending: bytearray = field(default_factory=bytearray)

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    @property
    def fd(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # closing stdin flushes what a dead worker never read
                    stream.close()


class _Pool:
    """`size` math-verify worker processes, used by one batch at a time.

    Each gold belongs to one worker slot (a hash of the gold), so a gold is parsed once by the
    worker of its slot and then served from its cache, in this batch and later ones (the same
    evaluation set at the next checkpoint); an idle worker whose own queue is empty takes jobs
    from the longest other queue. Jobs go out in requests of up to CHUNK (fewer near the end of
    a batch, to balance the workers); a worker answers each step as it finishes it, and each
    answer restarts its clock.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.slots: list[_Worker | None] = [None] * size
        self.lock = threading.Lock()
        self.failed_starts = 0  # in this batch
        self.gold_parses = 0  # golds parsed by workers (not served from their cache), for tests
        # the batch under way
        self.queues: list[deque[_Job]] = [deque() for _ in range(size)]
        self.results: dict[int, str] = {}
        self.answers: dict[int, str] = {}  # what math-verify extracted, by position (none for a lost job)
        self.hung_golds: set[str] = set()  # golds whose parse timed out: their other jobs are not tried
        self.selector: selectors.BaseSelector = selectors.DefaultSelector()

    @property
    def workers(self) -> list[_Worker]:
        return [worker for worker in self.slots if worker is not None]

    def start(self) -> None:
        """Start every worker and wait until all are ready (they otherwise start on first use)."""
        self.run([], timeout_s=STARTUP_TIMEOUT_S, start_all=True)

    def run(self, jobs: list[_Job], timeout_s: float, start_all: bool = False) -> tuple[dict[int, str], dict[int, str]]:
        """The outcome of every job and the answer extracted from its output, by position."""
        with self.lock:
            self.failed_starts = 0
            self.queues = [deque() for _ in range(self.size)]
            for job in jobs:
                self.queues[zlib.crc32(job.gold.encode()) % self.size].append(job)
            self.results = {}
            self.answers = {}
            self.hung_golds = set()
            self.selector = selectors.DefaultSelector()
            try:
                for worker in self.workers:
                    self.selector.register(worker.fd, selectors.EVENT_READ, worker)
                    if not worker.ready:  # started by an earlier batch: its "ready" may be waiting unread
                        worker.deadline = time.monotonic() + STARTUP_TIMEOUT_S
                while (
                    any(self.queues)
                    or any(w.busy or (start_all and not w.ready) for w in self.workers)
                    or (start_all and None in self.slots)
                ):
                    self._fill(timeout_s, start_all)
                    now = time.monotonic()
                    waiting = [w.deadline for w in self.workers if w.busy or not w.ready]
                    for key, _ in self.selector.select(max(0.0, min(waiting, default=now) - now)):
                        self._read(key.data, timeout_s)
                    now = time.monotonic()
                    for worker in self.workers:
                        if (worker.busy or not worker.ready) and now > worker.deadline:
                            self._lost(worker, TIMEOUT)
            except BaseException:
                for worker in self.workers:  # their state is unknown now: start afresh next time
                    if worker.busy or not worker.ready:
                        self._drop(worker)
                raise
            finally:
                self.selector.close()
            return self.results, self.answers

    def _fill(self, timeout_s: float, start_all: bool) -> None:
        """Start a worker in each empty slot that has jobs queued, and give idle workers jobs."""
        for slot, worker in enumerate(self.slots):
            if worker is None and (self.queues[slot] or start_all):
                worker = self.slots[slot] = _start_worker(slot)
                self.selector.register(worker.fd, selectors.EVENT_READ, worker)
        queued = sum(len(queue) for queue in self.queues)
        size = max(1, min(CHUNK, queued // (2 * self.size)))
        for steal in (False, True):  # each worker's own queue first; then idle workers help the others
            for worker in self.workers:
                if worker.ready and not worker.busy:
                    self._send(worker, self._take(worker.slot, size, steal), timeout_s)

    def _take(self, slot: int, size: int, steal: bool) -> list[_Job]:
        """Up to `size` jobs from the queue of `slot`, or with `steal` from the tail of the longest queue."""
        queue = max(self.queues, key=len) if steal else self.queues[slot]
        jobs: list[_Job] = []
        while len(jobs) < size and queue:
            job = queue.pop() if steal else queue.popleft()
            if job.gold in self.hung_golds:
                self.results[job.position] = TIMEOUT
            else:
                jobs.append(job)
        return jobs

    def _send(self, worker: _Worker, jobs: list[_Job], timeout_s: float) -> None:
        if not jobs:
            return
        worker.jobs, worker.parsing_gold, worker.deadline = jobs, False, time.monotonic() + timeout_s
        assert worker.process.stdin is not None
        try:
            worker.process.stdin.write((json.dumps([[job.gold, job.output] for job in jobs]) + "\n").encode())
            worker.process.stdin.flush()
        except OSError:  # it died while idle: the jobs were not tried, so they go back in the queue
            self.queues[worker.slot].extendleft(reversed(jobs))
            worker.jobs = []
            self._drop(worker)

    def _read(self, worker: _Worker, timeout_s: float) -> None:
        chunk = os.read(worker.fd, 1 << 16)
        if not chunk:
            self._lost(worker, WORKER_ERROR)
            return
        worker.pending += chunk
        while b"\n" in worker.pending and self.slots[worker.slot] is worker:
            line, _, rest = worker.pending.partition(b"\n")
            worker.pending = bytearray(rest)
            self._handle(worker, json.loads(line), timeout_s)

    def _handle(self, worker: _Worker, message: dict, timeout_s: float) -> None:
        worker.deadline = time.monotonic() + timeout_s
        if "fatal" in message:
            self._drop(worker)
            raise BenchError(
                f"math_verify scorer: the worker could not start math-verify ({message['fatal']}); "
                "install it with `pip install math-verify`"
            )
        if "ready" in message:
            worker.ready = True
        elif message.get("gold") == "start":
            worker.parsing_gold = True
        elif message.get("gold") == "done":
            worker.parsing_gold = False
            self.gold_parses += 1
        else:
            job = worker.jobs.pop(0)
            self.results[job.position] = message["v"]
            self.answers[job.position] = message.get("a", "")

    def _lost(self, worker: _Worker, outcome: str) -> None:
        """The worker overran or died: its current step scores `outcome`, its other jobs go back in the queue."""
        jobs, parsing_gold = worker.jobs, worker.parsing_gold
        self._drop(worker)
        if not jobs and worker.ready:  # died while idle
            return
        if not jobs:  # died or hung while starting: retried a few times, then it is the installation
            self.failed_starts += 1
            if self.failed_starts < MAX_FAILED_STARTS:
                return
            if outcome == TIMEOUT:
                raise BenchError(f"math_verify scorer: a worker did not start within {STARTUP_TIMEOUT_S:.0f} s")
            raise BenchError(
                "math_verify scorer: workers exit while starting (is math-verify installed? `pip install math-verify`)"
            )
        current, rest = jobs[0], jobs[1:]
        self.results[current.position] = outcome
        if parsing_gold:  # the gold itself: every job sharing it is lost with it
            if outcome == TIMEOUT:
                self.hung_golds.add(current.gold)
            for job in rest:
                if job.gold == current.gold:
                    self.results[job.position] = outcome
            rest = [job for job in rest if job.gold != current.gold]
        self.queues[worker.slot].extendleft(reversed(rest))

    def _drop(self, worker: _Worker) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(worker.fd)
        worker.kill()
        if self.slots[worker.slot] is worker:
            self.slots[worker.slot] = None

    def close(self) -> None:
        with self.lock:
            for worker in self.workers:
                worker.kill()
            self.slots = [None] * self.size


def _start_worker(slot: int) -> _Worker:
    if importlib.util.find_spec("math_verify") is None:
        raise BenchError("math_verify scorer: math-verify is not installed; install it with `pip install math-verify`")
    env = {**os.environ, "MATH_VERIFY_WORKER_MEMORY_MB": str(WORKER_MEMORY_MB), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return _Worker(process, slot, deadline=time.monotonic() + STARTUP_TIMEOUT_S)


_POOLS: dict[int, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(size: int) -> _Pool:
    with _POOLS_LOCK:
        if size not in _POOLS:
            _POOLS[size] = _Pool(size)
        return _POOLS[size]


def close_pool(size: int) -> None:
    with _POOLS_LOCK:
        pool = _POOLS.pop(size, None)
    if pool is not None:
        pool.close()


@atexit.register
def _close_all() -> None:
    for size in list(_POOLS):
        close_pool(size)
