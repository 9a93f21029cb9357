"""The one error type users see: printed as a single line by the CLI, exit status 2.

`writing` turns the failures of writing a file that a user can foresee and fix (no permission,
a read-only filesystem, a full disk or quota) into a BenchError naming the path; anything else
keeps its traceback (exit status 1), since it is a bug to be reported, not bad input.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BenchError(Exception):
    """Bad input or an impossible request; the message must say what is wrong and how to fix it."""


# errno → what to do about it. Only failures that say something about the place being written.
WRITE_ERRORS = {
    errno.EACCES: "check its permissions or choose another place",
    errno.EPERM: "check its permissions or choose another place",
    errno.EROFS: "choose a place on a writable filesystem",
    errno.ENOSPC: "free some space or choose another place",
    errno.EDQUOT: "free some space (disk quota exceeded) or choose another place",
}
# A path the user named as an output file may also not exist or not be a file.
NAMED_PATH_ERRORS = {
    errno.ENOENT: "create its folder first",
    errno.ENOTDIR: "a component of the path is a file, not a folder",
    errno.EISDIR: "name a file, not a folder",
    errno.EEXIST: "a file stands where a folder is needed",
}
# Rust libraries (safetensors, tokenizers) report I/O errors as text ending "(os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def error_number(error: BaseException) -> int | None:
    """The errno behind an OSError, or behind a Rust library's error whose text carries one."""
    if isinstance(error, OSError):
        return error.errno
    found = _RUST_OS_ERROR.search(str(error))
    return int(found.group(1)) if found else None


def _concerns(failed: Path | None, target: Path) -> bool:
    """Whether an error about the file `failed` is about `target`: the target, its FILE.tmp, a file
    inside it, or a folder on its way (a read-only parent)."""
    if failed is None:
        return True  # pyarrow and the Rust writers do not say which file: the one being written
    sibling = failed.parent == target.parent and failed.name.startswith(
        target.name
    )  # FILE.tmp, written first, then renamed
    return failed == target or sibling or target in failed.parents or failed in target.parents


def write_failure(error: BaseException, target: Path, named_by_user: bool = False) -> BenchError | None:
    """A BenchError for a foreseeable failure to write `target` (a folder or a file), else None."""
    number = error_number(error)
    known = {**WRITE_ERRORS, **(NAMED_PATH_ERRORS if named_by_user else {})}
    filename = getattr(error, "filename", None)
    failed = Path(os.path.abspath(os.fsdecode(filename))) if isinstance(filename, (str, bytes, os.PathLike)) else None
    absolute = Path(os.path.abspath(target))
    if number is None or number not in known or not _concerns(failed, absolute):
        return None
    where = (
        f" ({failed})" if failed is not None and failed in absolute.parents else ""
    )  # a folder on the way (made first) failed
    return BenchError(f"cannot write {target}{where}: {os.strerror(number).lower()}; {known[number]}")


@contextmanager
def writing(target: Path, named_by_user: bool = False) -> Iterator[None]:
    """Run a block that writes `target`; a foreseeable failure to write it becomes one BenchError line."""
    try:
        yield
    except BenchError:
        raise
    except Exception as error:  # re-raised untouched unless it is a foreseeable write failure
        converted = write_failure(error, Path(target), named_by_user)
        if converted is None:
            raise
        raise converted from None


def warn(message: str) -> None:
    """One line on stderr for something a user must know but that need not stop the command
    (e.g. a setting the model cannot honour). Kept apart from BenchError: the work goes on."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
