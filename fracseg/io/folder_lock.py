"""An exclusive lock on an output folder, so two runs never write (or clean up) the same folder at once.

The lock is an ``flock`` on ``<folder>/.fracseg-lock``: the kernel releases it when the holder exits, even
after ``kill -9``, so a killed run never leaves a stale lock behind and a rerun can resume at once. The
lock is re-entrant within one process (the CLI holds it around DICOMweb download and the batch).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from fracseg.errors import FracsegError

#: Name of the lock file inside a locked folder (left in place: deleting it would race with a new run).
LOCK_NAME = ".fracseg-lock"
#: Folders this process holds: resolved path -> (file descriptor, nesting depth).
_held: dict[Path, tuple[int, int]] = {}


class FolderBusyError(FracsegError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created when missing) for the ``with`` block.

    Raises:
        FolderBusyError: another process holds it; the message names the folder and that process.
    """
    folder = Path(folder).resolve()
    if folder in _held:
        fd, depth = _held[folder]
        _held[folder] = (fd, depth + 1)
        try:
            yield folder
        finally:
            fd, depth = _held[folder]
            _held[folder] = (fd, depth - 1)
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise FolderBusyError(
            f"{folder}: another fracseg run (pid {holder}) is writing to this folder; "
            "wait for it to finish or choose another output folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _held[folder] = (fd, 1)
    try:
        yield folder
    finally:
        depth = _held[folder][1]
        if depth <= 1:
            del _held[folder]
            os.close(fd)  # releases the flock
        else:
            _held[folder] = (fd, depth - 1)
