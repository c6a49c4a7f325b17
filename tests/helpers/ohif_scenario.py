"""Run inside a fresh network namespace (``unshare --net``): Orthanc with a CR and a fracseg DICOM SEG of
it, OHIF (``scripts/ohif_server.py``) in front of it on loopback, and Debian's Chromium (Playwright,
``executable_path``; no browser download) opening the study. Writes ``WORKDIR/result.json`` and
screenshots ``WORKDIR/ohif_*.png``.

Usage: ``unshare --net python ohif_scenario.py WORKDIR OHIF_DIST SOURCE_DICOM``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from fracseg.io.dicom_seg import write_dicom_seg  # noqa: E402
from tests.helpers.orthanc_scenario import PORT, _http, running_orthanc  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(work: Path, dist: Path, source_path: Path) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result: dict = {}
    source = pydicom.dcmread(source_path)
    rows, cols = int(source.Rows), int(source.Columns)
    mask = np.zeros((rows, cols), dtype=bool)
    mask[rows // 3 : rows // 2, cols // 3 : cols // 2] = True
    seg_path = write_dicom_seg(source_path, mask, work / "seg.dcm")
    result["study"] = str(source.StudyInstanceUID)
    with running_orthanc(work):
        for path in (source_path, seg_path):
            _http("POST", "/instances", path.read_bytes())
        port = _free_port()
        log = (work / "ohif_server.log").open("w")
        command = [sys.executable, str(REPO / "scripts" / "ohif_server.py"), str(dist), "--port", str(port)]
        command += ["--orthanc", f"http://127.0.0.1:{PORT}"]
        server = subprocess.Popen(
            command,
            stdout=log,
            stderr=log,
        )
        try:
            from playwright.sync_api import sync_playwright

            console: list[str] = []
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=shutil.which("chromium"),
                    args=["--enable-unsafe-swiftshader", "--use-gl=angle", "--use-angle=swiftshader"],
                )
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:500]))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"[:500]))

                def wait_console(text: str, seconds: float) -> bool:
                    """Poll the console for ``text`` (OHIF logs its rendering milestones)."""
                    deadline = time.monotonic() + seconds
                    while time.monotonic() < deadline:
                        if any(text in line for line in console):
                            return True
                        page.wait_for_timeout(200)
                    return False

                viewer = f"http://127.0.0.1:{port}/viewer?StudyInstanceUIDs={source.StudyInstanceUID}"
                for _ in range(50):
                    try:
                        page.goto(viewer, timeout=5000)
                        break
                    except Exception:
                        time.sleep(0.2)
                # OHIF logs "studyToFirstImage" once the CR is drawn; headless, that sometimes waits for the
                # first user interaction, so it is waited for again (and required) after the SEG is loaded
                wait_console("studyToFirstImage", 20)
                page.wait_for_timeout(2000)
                page.screenshot(path=str(work / "ohif_viewer.png"))
                result["viewer_text"] = page.inner_text("body")[:3000]
                if page.get_by_text("Skip all").count():
                    page.get_by_text("Skip all").first.click()
                console.append("---- SEG double-clicked ----")
                page.get_by_text("fracseg fracture mask").first.dblclick()
                accept = page.get_by_role("button", name="Yes")
                try:
                    accept.first.wait_for(timeout=30000)
                except Exception:
                    console.append("---- no prompt to open the SEG ----")
                result["seg_text"] = page.inner_text("body")[:3000]
                if accept.count():
                    console.append("---- Yes clicked ----")
                    accept.first.click()
                    result["labelmap"] = wait_console("segmentation representation", 30)
                result["first_image"] = wait_console("studyToFirstImage", 60)
                page.wait_for_timeout(3000)  # the labelmap is drawn after its representation is added
                page.screenshot(path=str(work / "ohif_seg.png"))
                result["seg_loaded_text"] = page.inner_text("body")[:3000]
                browser.close()
            result["console"] = console[-80:]
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
