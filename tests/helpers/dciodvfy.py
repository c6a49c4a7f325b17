"""dciodvfy (dicom3tools) as a test helper: the error lines it prints for a DICOM file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines of dciodvfy (dicom3tools); the Makefile's test target installs it."""
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy is missing: run `make system-tools` (Debian package dicom3tools)"
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
