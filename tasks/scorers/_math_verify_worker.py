"""A math-verify worker process for `tasks.scorers.symbolic` (started as a script, not imported).

Speaks JSON lines. A request on stdin is a list of jobs ``[[<prepared gold>, <model output>], ...]``.
Replies on stdout: ``{"ready": true}`` once at start (or ``{"fatal": <message>}``), then per job,
in order, ``{"v": <outcome>, "a": <the text math-verify extracted from the output>}``; a gold not
seen before is parsed first, between ``{"gold": "start"}`` and ``{"gold": "done"}``. Each reply is
flushed at once: the parent times every step (a gold's parse; each output's parse + verify) and
kills this process when one overruns, because
math-verify's own timeout (``signal.alarm``) cannot interrupt work stuck inside C code such as a
huge integer power. So math-verify's timeouts are off here (None).

It imports nothing from the project, and drops its own folder from ``sys.path`` so that no
module beside it can shadow a library module.
"""

import json
import os
import sys
from collections.abc import Callable

if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

GOLD_CACHE_SIZE = 100_000  # parsed golds kept per worker; a gold string is parsed once per worker


Reply = Callable[[dict], None]


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")  # the protocol channel
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    _limit_memory(int(os.environ.get("MATH_VERIFY_WORKER_MEMORY_MB", "0")))

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        parse, verify = _load_math_verify()
    except Exception as error:  # noqa: BLE001 (reported to the parent as one line)
        reply({"fatal": f"{type(error).__name__}: {error}"})
        return
    reply({"ready": True})
    _serve(reply, parse, verify)


def _limit_memory(memory_mb: int) -> None:
    """An address-space limit for this process, where the parent asks for one and the system allows it."""
    if memory_mb > 0:
        try:
            import resource

            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass


def _load_math_verify() -> tuple[Callable, Callable]:
    """math-verify's parse and verify, quiet and warmed up (sympy's first use is slow)."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" and per-item warnings
    verify(parse("$1$", parsing_timeout=None), parse("1", parsing_timeout=None), timeout_seconds=None)
    return parse, verify


def _serve(reply: Reply, parse: Callable, verify: Callable) -> None:
    """Answer every request on stdin, one reply per job (and two around each new gold's parse)."""
    golds: dict[str, list] = {}
    for line in sys.stdin:
        for gold_text, output in json.loads(line):
            gold = golds.get(gold_text)
            if gold is None:
                reply({"gold": "start"})
                try:
                    gold = parse(gold_text, parsing_timeout=None)
                except Exception:  # noqa: BLE001
                    gold = []
                if len(golds) >= GOLD_CACHE_SIZE:
                    golds.clear()
                golds[gold_text] = gold
                reply({"gold": "done"})
            if not gold:
                reply({"v": "gold_unparsed", "a": ""})
                continue
            reply(_judge(gold, output, parse, verify))


def _judge(gold: list, output: str, parse: Callable, verify: Callable) -> dict:
    """One job's reply: the outcome and the text math-verify extracted from the output."""
    parsed = []
    try:
        parsed = parse(output, parsing_timeout=None)
        if not parsed:
            outcome = "no_answer"
        elif verify(gold, parsed, timeout_seconds=None):
            outcome = "correct"
        else:
            outcome = "wrong_answer"
    except Exception:  # noqa: BLE001 (math-verify catches its own; anything left is a wrong answer)
        outcome = "error"
    return {"v": outcome, "a": str(parsed[-1]) if parsed else ""}


if __name__ == "__main__":
    main()
