"""``make pacs-demo`` (``scripts/pacs_demo.py``): Orthanc, the app and OHIF in a private network namespace,
the app and OHIF brought out on 127.0.0.1, the sample CR's SEG and SR in Orthanc; SIGTERM stops everything
it started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import requests

from tests.helpers.monailabel_server import REPO, free_port

OHIF_DIST = Path(os.environ.get("OHIF_DIST", REPO / "outputs" / "ohif" / "3.12.0" / "dist"))

pytestmark = [pytest.mark.integration, pytest.mark.orthanc]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def test_pacs_demo_serves_the_samples_from_orthanc_and_stops_everything(tmp_path) -> None:
    for tool in ("Orthanc", "unshare", "ip"):
        assert shutil.which(tool), f"{tool} is missing: run `make system-tools`"
    assert (OHIF_DIST / "index.html").is_file(), f"{OHIF_DIST}: no OHIF; run `make ohif`"
    port, ohif_port, work = free_port(), free_port(), tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(REPO / "scripts" / "pacs_demo.py"),
        "--port",
        str(port),
        "--work",
        str(work),
        "--ohif",
        str(OHIF_DIST),
        "--ohif-port",
        str(ohif_port),
    ]
    demo = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert demo.poll() is None, demo.stdout.read().decode(errors="replace")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the demo did not answer in 300 s"
            time.sleep(1)
        listing = requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=60).json()
        samples = sorted((REPO / "data" / "samples").glob("*.dcm"))
        wanted = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in samples}
        assert wanted and set(listing["objects"]) == wanted
        ohif = f"http://127.0.0.1:{ohif_port}"
        assert "fracseg Orthanc" in requests.get(f"{ohif}/app-config.js", timeout=30).text
        studies = requests.get(f"{ohif}/dicom-web/studies", timeout=30).json()  # forwarded to Orthanc
        assert len(studies) == len(samples)
        # the sample CR's study holds fracseg's SEG and the SR of its findings, for OHIF to show
        log = (work / "infer" / "infer.log").read_text()
        assert f"stored {len(samples)} of {len(samples)} DICOM SEG object(s) and their SRs" in log, log
        for path in samples:
            study = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
            series = requests.get(f"{ohif}/dicom-web/studies/{study}/series", timeout=30).json()
            assert sorted(s["00080060"]["Value"][0] for s in series) == ["CR", "SEG", "SR"]
        assert listing["dicomweb"] == {
            **listing["dicomweb"],
            "url": "http://127.0.0.1:8042/dicom-web",
            "error": None,
        }
    finally:
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=60)[0].decode(errors="replace")
    assert demo.returncode == 0, output
    assert "stopped" in output
    assert _processes_mentioning(str(work)) == []  # Orthanc, the app and the relays are gone
