"""Progress bars for long work (stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(total: int, description: str, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """Yield `advance(loss=None)`; the bar shows the latest loss when one is given."""
    bar = tqdm(total=total, desc=description, disable=quiet, file=sys.stderr, dynamic_ncols=True, leave=False)

    def advance(loss: float | None = None, n: int = 1) -> None:
        bar.update(n)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    try:
        yield advance
    finally:
        bar.close()
