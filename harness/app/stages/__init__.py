"""The run's stages, one module each, in the order they run: prepare → train → kl → generate →
score → report (harness/app/run.py calls them for `bench run`; `bench eval`, `bench wise-ft` and
`bench score` call the same generate, score and report stages).

Each stage reads only what earlier stages wrote in the run folder (harness/store) plus the run's
resolved settings, writes its own files, and marks itself done in run.json (`timed`), so a re-run
skips finished stages and any one of them can be redone alone from the folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from plasticity_bench.harness.store import RunStore


def timed(store: RunStore, stage: str, work: Callable[[], object]) -> None:
    """Run one stage and mark it done in run.json with its wall time (and what it returned)."""
    started = time.time()
    info = work()
    store.mark_stage(stage, True, seconds=round(time.time() - started, 2), **(info if isinstance(info, dict) else {}))
