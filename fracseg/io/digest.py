"""Content digests of files: which weights produced an answer, whether a copy was changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (read whole: the files hashed here are weights of a few MB)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
