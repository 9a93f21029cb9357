"""`bench eval --steps`: the training step of each path, checked before anything is loaded.

Light on purpose (no torch, no transformers): the CLI checks `--steps` the moment it parses it, so a
mistyped list is one line in well under a second.

The rule: one integer per path, in the order of the paths, each ≥ 0, no step twice, and
**strictly increasing**. The steps are matched to the paths by position only (a plain model folder
records no step of its own), so a list that goes down (`--steps 10,5`) either pairs a path with
another path's step, which would silently swap two points of every curve, or lists the paths out of
order on purpose. The second is rare and costs nothing to avoid (list the paths from the earliest
checkpoint to the latest, as the curves read), the first is undetectable later: so it is an error,
not a warning, and the message says how to write it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from plasticity_bench.harness.core.errors import BenchError


def parse_steps(text: str | None) -> list[int] | None:
    """`--steps` as given on the command line (comma-separated integers), checked; None when absent."""
    if text is None:
        return None
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--steps must be comma-separated integers, got {text!r}") from None
    if not steps:
        raise BenchError(f"--steps gives no step, got {text!r}; give one step per path (e.g. --steps 0,100,200)")
    check_steps(steps)
    return steps


def check_steps(steps: Sequence[int], paths: Sequence[Path] | None = None) -> None:
    """One step per path (when the paths are known: the messages then name them), none negative,
    none repeated, strictly increasing."""
    if paths is not None and len(steps) != len(paths):
        raise BenchError(
            f"--steps has {len(steps)} step(s) but {len(paths)} path(s) were given; "
            "give one step per path, in the same order"
        )
    negative = [step for step in steps if step < 0]
    if negative:
        raise BenchError(
            f"--steps: step {negative[0]} is negative; a step counts optimiser updates from 0 (the starting model)"
        )

    def where(index: int) -> str:
        return f" ({paths[index]})" if paths is not None else ""

    for index in range(1, len(steps)):
        earlier = steps.index(steps[index])
        if earlier < index:
            raise BenchError(
                f"duplicate step {steps[index]} in --steps{where(earlier)}{where(index)}; "
                "each path is one checkpoint with its own step"
            )
    down = next((index for index in range(1, len(steps)) if steps[index] < steps[index - 1]), None)
    if down is not None:
        raise BenchError(
            f"--steps must increase, as the paths go from the earliest checkpoint to the latest: "
            f"step {steps[down]}{where(down)} follows step {steps[down - 1]}{where(down - 1)}; "
            "steps are matched to the paths in order, so list the paths in step order"
        )
