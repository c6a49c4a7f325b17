"""Per-image completion records: what makes a batch resumable, and safe to resume.

A record (``<output>/.fracseg-records/<stem>.json``) is written after every output of its image, so its
presence means they are complete. It holds the result row, the settings that produced it (model weights
hash, decision rule, letterbox size, SEG on/off) and the identity of the input it was computed from:
resolved path, size in bytes and modification time in nanoseconds. A rerun reuses a result only when all
three still match, so a replaced image, or a different folder with the same file names written into the
same output, is processed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fracseg.inference.inputs import InputFile
from fracseg.io import write_json_atomic

#: Hidden folder of per-image completion records.
RECORDS_DIR = ".fracseg-records"


def input_identity(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"path", "size", "mtime_ns"}`` of an input file, or None when it cannot be stat'ed."""
    try:
        stat = os.stat(path)
        return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except (OSError, RuntimeError):
        return None


def record_path(output: Path, item: InputFile) -> Path:
    """Where the completion record of ``item`` lives."""
    return output / RECORDS_DIR / item.out_stem.parent / f"{item.out_stem.name}.json"


def read_record(output: Path, item: InputFile) -> dict[str, Any] | None:
    """The record stored for ``item``'s output stem (whatever input wrote it), or None."""
    try:
        content = json.loads(record_path(output, item).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def write_record(
    output: Path,
    item: InputFile,
    row: dict[str, Any],
    settings: dict[str, Any],
    identity: dict[str, Any] | None,
    dicom_seg: bool,
) -> None:
    """Store ``item``'s completed result (atomic; call it after every output file is written)."""
    write_json_atomic(
        record_path(output, item),
        {"row": row, "settings": settings, "input": identity, "dicom_seg": dicom_seg},
    )


def matches(record: dict[str, Any] | None, identity: dict[str, Any] | None, settings: dict[str, Any]) -> bool:
    """Whether ``record`` was computed from this very input (path, size, mtime) with these settings."""
    return (
        record is not None
        and identity is not None
        and record.get("input") == identity
        and record.get("settings") == settings
        and isinstance(record.get("row"), dict)
    )
