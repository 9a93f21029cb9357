"""How long `bench --help` and usage errors take to answer: the median of N runs of each command.

Every command runs as `python -m harness.app.cli ...` in a fresh process from a source tree, so
two trees can be compared on one machine in one sitting, e.g. the last commit against the
working tree:

    git archive HEAD | tar -x -C /tmp/bench-head
    python benchmarks/bench_cli_latency.py --tree /tmp/bench-head --tree . --runs 5

Prints a Markdown table (one column per tree) and checks that each command exits with the
status a usage error or `--help` must give (2 and 0); a command that does otherwise is marked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (what is typed after `bench`, the exit status it must give)
COMMANDS: tuple[tuple[str, int], ...] = (
    ("--help", 0),
    ("run --bogus", 2),
    ("eval", 2),
    ("run --method nosuch", 2),
    ("run --preset nosuch", 2),
    ("run --backend nosuch", 2),
    ("run --suite nosuch", 2),
    ("eval model --suite micro --out OUT --steps abc", 2),
)


def time_once(tree: Path, command: str, scratch: Path) -> tuple[float, int]:
    """Wall seconds of one fresh `bench COMMAND` process from `tree`, and its exit status."""
    argv = [
        sys.executable,
        "-m",
        "plasticity_bench.harness.app.cli",
        *command.replace("OUT", str(scratch / "out")).split(),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree), "PLASTICITY_BENCH_CACHE": str(scratch / "cache")}
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - started, done.returncode


def table(trees: list[Path], runs: int) -> str:
    """Runs alternate between the trees, so a change in the machine's load hits every tree alike."""
    header = "| command | " + " | ".join(f"`{tree}` (s)" for tree in trees) + " |"
    lines = [header, "|---|" + "---:|" * len(trees)]
    with tempfile.TemporaryDirectory() as scratch:
        for command, expected in COMMANDS:
            seconds: list[list[float]] = [[] for _ in trees]
            as_expected = [True for _ in trees]
            for _ in range(runs):
                for index, tree in enumerate(trees):
                    elapsed, status = time_once(tree.resolve(), command, Path(scratch))
                    seconds[index].append(elapsed)
                    as_expected[index] &= status == expected
            cells = [
                f"{statistics.median(s):.2f}" + ("" if ok else f" (exit ≠ {expected})")
                for s, ok in zip(seconds, as_expected)
            ]
            lines.append(f"| `bench {command}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree", type=Path, action="append", help="a source tree to time (repeatable) [default: this one]"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per command; the median is shown")
    args = parser.parse_args()
    print(table(args.tree or [ROOT], args.runs))
    print(f"\nmedian of {args.runs} runs; python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
