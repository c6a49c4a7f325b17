"""Atomic file writes: write to a temporary name in the target folder, then rename over the target.

Temporary names start with the reserved prefix :data:`TEMP_PREFIX` (``.fracseg-tmp-<random>-<name>``),
so that clean-up after a killed run (:func:`remove_stale_temporaries`) can never match a user's own file
(``.thesis.tmp.docx`` and the like).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Reserved prefix of every temporary file :func:`atomic_path` creates; nothing else uses it.
TEMP_PREFIX = ".fracseg-tmp-"
#: Longest part of the target's name kept in the temporary name (file names are limited to 255 bytes).
_NAME_TAIL = 100


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    A crash or exception leaves ``target`` untouched (either absent or its previous content) and removes
    the temporary file. The temporary name keeps the target's suffix so writers that infer the format
    from the extension (Pillow, SimpleITK) still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=f"-{target.name[-_NAME_TAIL:]}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; results are ordinary files for their readers
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def write_csv_atomic(
    target: str | os.PathLike[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> None:
    """Write ``rows`` as CSV with exactly ``columns`` (missing values empty, extra keys ignored)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    write_text_atomic(target, buffer.getvalue())


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (deterministic bytes) to ``target`` atomically."""
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_path`."""
    return os.path.basename(os.fspath(path)).startswith(TEMP_PREFIX)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete temporary files that :func:`atomic_path` left under ``folder`` when a process was killed
    mid-write. Returns how many were removed.

    Only names with the reserved :data:`TEMP_PREFIX` are touched, symbolic links are neither followed nor
    removed, and the caller must hold :func:`fracseg.io.folder_lock.folder_lock` on ``folder`` so that no
    other run has temporaries in flight there.
    """
    removed = 0
    for dirpath, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            path = Path(dirpath) / name
            if is_temporary(name) and not path.is_symlink() and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed
