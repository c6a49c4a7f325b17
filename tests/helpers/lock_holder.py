"""Another process that holds an output folder's lock, as a concurrent ``fracseg infer`` would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def hold_lock(folder: Path) -> subprocess.Popen[str]:
    """Another process that holds ``folder``'s lock and has a temporary file in flight there."""
    code = (
        "import sys, time; from fracseg.io import folder_lock, TEMP_PREFIX\n"
        "with folder_lock(sys.argv[1]):\n"
        "    open(sys.argv[1] + '/' + TEMP_PREFIX + 'inflight-x_mask.png', 'wb').close()\n"
        "    print('locked', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc
