"""Writes that readers never see half of: each goes to a temporary name beside its target and is
renamed into place, so a kill or a full disk leaves at most a `*.tmp` / `*.partial` that nothing reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from plasticity_bench.harness.core.interrupt import uninterruptible

PARTIAL_SUFFIX = ".partial"  # a folder being written: FOLDER.partial, renamed to FOLDER once complete


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp), then rename tmp to path, uninterruptible by SIGINT/SIGTERM: readers see the old
    file or the new one, never half of one; a failed write (a full disk, say) leaves no tmp file."""
    tmp = path.with_name(path.name + ".tmp")
    with uninterruptible():
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # best effort: on a read-only filesystem there is no tmp to remove
                tmp.unlink(missing_ok=True)
            raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_folder_atomic(folder: Path, write: Callable[[Path], object]) -> Path:
    """write(partial) fills `FOLDER.partial` (it creates the folder itself), which then replaces
    `folder`: a crash, a kill or a full disk never leaves half a folder under its real name, and a
    failed write leaves no partial one either. The swap at the end is uninterruptible; the write is
    not (a long write stops at Ctrl-C, removing what it wrote). Returns `folder`."""
    partial = folder.with_name(folder.name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    with uninterruptible():
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder
