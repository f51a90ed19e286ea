"""Atomic outputs: a directory or file that exists is complete."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Yield a temporary directory beside `final`; rename it to `final` only on success.

    An existing `final` is replaced (the caller decides whether to overwrite).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, final)


def partial_dir(final: str | Path, fresh: bool = False) -> Path:
    """A working directory beside `final` that outlives the process (`.partial-NAME`), for work
    that a later run continues (see progress.py); emptied first if `fresh`."""
    final = Path(final)
    work = final.parent / f".partial-{final.name}"
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    return work


def publish_dir(work: str | Path, final: str | Path) -> None:
    """Rename a finished working directory to `final`, replacing what is there."""
    work, final = Path(work), Path(final)
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(final)


@contextlib.contextmanager
def atomic_file(final: str | Path):
    """Yield a temporary path beside `final`; `os.replace` it into place on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
