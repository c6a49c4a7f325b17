"""Run inside a fresh network namespace (``unshare --net``): the loop a radiologist closes, seen in OHIF.

1. Orthanc gets two generated CRs with a pixel spacing (OHIF draws a SEG only over such an image): study
   "loop" (the CR alone) and study "report" (a CR with fracseg's SEG and SR of two regions, written by
   ``fracseg.io.dicom_seg`` / ``fracseg.io.dicom_sr`` as ``fracseg infer --dicom-seg`` writes them);
2. the MONAI Label app starts against it (``--studies http://127.0.0.1:8042/dicom-web``); the 2D
   correction page (``/fracseg/``) in Debian's Chromium opens the loop CR, paints a correction with the
   brush and saves it; the app stores it as a DICOM SEG on Orthanc (STOW-RS); the app is stopped;
3. OHIF (``scripts/ohif_server.py``) opens the loop study, loads "fracseg fracture mask, corrected" and is
   screenshot; then it opens the report study, searches the SR series "fracseg fracture findings" in its
   Tag Browser, double-clicks the SR (OHIF draws its regions over the CR), and opens the study again.

Usage: ``unshare --net python ohif_loop_scenario.py WORKDIR OHIF_DIST``. Writes ``WORKDIR/result.json``,
the sources, the SEG and SR written (``report_seg.dcm``, ``report_sr.dcm``), the SEG found on the
server (``loop_seg_on_server.dcm``), the page's mask (``page_mask.png``) and screenshots
(``page_*.png``, ``ohif_*.png``) and the console lines OHIF logged. Everything started here is stopped
however the scenario ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from fracseg.inference.decision import DecisionRule, decide  # noqa: E402
from fracseg.io.dicom_seg import write_dicom_seg  # noqa: E402
from fracseg.io.dicom_sr import ModelInfo, write_dicom_sr  # noqa: E402
from tests.helpers.dicom_factory import make_dataset, save  # noqa: E402
from tests.helpers.monailabel_server import running_server  # noqa: E402
from tests.helpers.ohif_scenario import _free_port  # noqa: E402
from tests.helpers.orthanc_scenario import PORT, _http, running_orthanc  # noqa: E402

URL = f"http://127.0.0.1:{PORT}/dicom-web"
ROOT_UID = "1.2.826.0.1.3680043.8.498.2727"
SHAPE = (480, 600)  # rows, columns
SPACING = [0.15, 0.15]
#: the painted correction, in fractions of the image: rows 0.30..0.50, columns 0.30..0.60
PAINT_ROWS, PAINT_COLS = (0.30, 0.50), (0.30, 0.60)
STEP_MS = 60_000


def _cr(name: str, index: int, work: Path) -> Path:
    """A 12-bit CR with a pixel spacing: a smooth gradient with a brighter band (a bone-like shape)."""
    rows, cols = SHAPE
    y, x = np.mgrid[0:rows, 0:cols]
    pixels = 800 + 1200 * (x / cols) + 600 * np.exp(-(((y - rows / 2) / (rows / 6)) ** 2))
    pixels += np.random.default_rng(index).normal(0, 20, SHAPE)
    ds = make_dataset(np.clip(pixels, 0, 4095).astype(np.uint16), bits_stored=12)
    ds.StudyInstanceUID = f"{ROOT_UID}.{index}"
    ds.SeriesInstanceUID = f"{ROOT_UID}.{index}.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT_UID}.{index}.1.1"
    ds.PatientID = f"FRACSEG-{name.upper()}"
    ds.PatientName = f"Loop^{name.capitalize()}"
    ds.StudyDescription = f"fracseg {name} study"
    ds.SeriesDescription = "CR wrist"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.StudyDate, ds.StudyTime = "20261204", "120000"
    ds.PixelSpacing = SPACING
    ds.WindowCenter, ds.WindowWidth = 1600, 2400
    return save(ds, work / f"{name}_cr.dcm")


def _report_objects(source: Path, work: Path) -> tuple[Path, Path]:
    """fracseg's SEG and SR of two regions on ``source``, as ``fracseg infer --dicom-seg`` writes them."""
    prob = np.zeros(SHAPE, np.float32)
    prob[150:230, 200:320] = 0.9
    prob[330:380, 420:470] = 0.7
    decision = decide(prob, DecisionRule())
    model = ModelInfo(
        name="fracseg fracture segmentation (2D X-ray)",
        version="test",
        image_threshold=0.5,
        pixel_threshold=0.5,
    )
    seg = write_dicom_seg(source, decision.mask, work / "report_seg.dcm")
    sr = write_dicom_sr(source, seg, decision, model, work / "report_sr.dcm")
    return seg, sr


def _seg_of_study(study: str, work: Path) -> Path | None:
    """The first SEG instance Orthanc holds in ``study``, saved as ``loop_seg_on_server.dcm``."""
    for series in json.loads(_http("GET", f"/dicom-web/studies/{study}/series?Modality=SEG")):
        uid = series["0020000E"]["Value"][0]
        for inst in json.loads(_http("GET", f"/dicom-web/studies/{study}/series/{uid}/instances")):
            sop = inst["00080018"]["Value"][0]
            orthanc_id = json.loads(_http("POST", "/tools/lookup", sop.encode()))[0]["ID"]
            path = work / "loop_seg_on_server.dcm"
            path.write_bytes(_http("GET", f"/instances/{orthanc_id}/file"))
            return path
    return None


def _correct_on_page(browser, app_url: str, image: str, work: Path, result: dict) -> None:
    """Open ``image`` on the correction page, paint a filled rectangle with the brush, save it."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{app_url}/fracseg/")
    page.wait_for_selector("body[data-ready='1']", timeout=STEP_MS)
    result["page_images"] = page.eval_on_selector_all("#image-list option", "els => els.map(e => e.value)")
    page.select_option("#image-list", image)
    page.wait_for_function(f"window.fracsegPage.state.imageId === '{image}'", timeout=STEP_MS)
    page.wait_for_function("document.body.dataset.busy === '0'", timeout=STEP_MS)
    page.keyboard.press("p")
    page.eval_on_selector(
        "#brush", "el => { el.value = '12'; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    box = page.locator("#tool-layer").bounding_box()
    rows, cols = SHAPE
    # horizontal strokes 12 px apart with a 12 px radius fill the rectangle (rounded ends aside)
    for row in np.arange(PAINT_ROWS[0] * rows, PAINT_ROWS[1] * rows + 1, 12):
        y = box["y"] + (row + 0.5) / rows * box["height"]
        x0 = box["x"] + PAINT_COLS[0] * box["width"]
        x1 = box["x"] + PAINT_COLS[1] * box["width"]
        page.mouse.move(x0, y)
        page.mouse.down()
        page.mouse.move(x1, y, steps=8)
        page.mouse.up()
    page.screenshot(path=str(work / "page_painted.png"))
    ones = page.evaluate(
        "() => { const m = window.fracsegPage.labels.mask, out = [];"
        " for (let i = 0; i < m.length; i++) if (m[i]) out.push(i); return out; }"
    )
    mask = np.zeros(rows * cols, dtype=np.uint8)
    mask[np.asarray(ones, dtype=np.int64)] = 255
    Image.fromarray(mask.reshape(SHAPE)).save(work / "page_mask.png")
    start = time.monotonic()
    page.keyboard.press("s")
    page.wait_for_function("document.getElementById('state-dirty').textContent === 'none'", timeout=STEP_MS)
    page.wait_for_function("document.body.dataset.busy === '0'", timeout=STEP_MS)
    result["save_seconds"] = time.monotonic() - start
    result["page_status"] = page.text_content("#status")
    result["page_errors"] = errors
    page.screenshot(path=str(work / "page_saved.png"))
    page.close()


class _Ohif:
    """One OHIF page with its console, for opening studies and loading series."""

    def __init__(self, browser, url: str) -> None:
        self.url = url
        self.console: list[str] = []
        self.page = browser.new_page(viewport={"width": 1366, "height": 768})
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"[:500]))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"[:500]))

    def wait_console(self, text: str, seconds: float, since: int = 0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(text in line for line in self.console[since:]):
                return True
            self.page.wait_for_timeout(200)
        return False

    def open_study(self, study: str) -> int:
        """Open ``study``; returns the console position where it began."""
        mark = len(self.console)
        self.console.append(f"---- open {study} ----")
        for _ in range(50):
            try:
                self.page.goto(f"{self.url}/viewer?StudyInstanceUIDs={study}", timeout=5000)
                break
            except Exception:
                time.sleep(0.2)
        self.wait_console("studyToFirstImage", 20, mark)
        self.page.wait_for_timeout(2000)
        if self.page.get_by_text("Skip all").count():
            self.page.get_by_text("Skip all").first.click()
        return mark

    def load_series(self, description: str, result: dict, key: str) -> None:
        """Double-click the series ``description`` in the study panel and accept OHIF's prompt if any."""
        mark = len(self.console)
        self.console.append(f"---- {description} double-clicked ----")
        self.page.get_by_text(description, exact=True).first.dblclick()
        accept = self.page.get_by_role("button", name="Yes")
        try:
            accept.first.wait_for(timeout=15000)
        except Exception:
            self.console.append("---- no prompt ----")
        result[f"{key}_prompt_text"] = self.page.inner_text("body")[:3000]
        if accept.count():
            self.console.append("---- Yes clicked ----")
            accept.first.click()
            result[f"{key}_representation"] = self.wait_console("segmentation representation", 30, mark)
        result[f"{key}_first_image"] = self.wait_console("studyToFirstImage", 30)


def _tag_browser(ohif: _Ohif, description: str, work: Path, result: dict) -> None:
    """The series' "..." menu, "Tag Browser": search the SR's content for its groups' identifiers."""
    page = ohif.page
    item = page.locator("[data-cy='study-browser-thumbnail-no-image']", has_text=description)
    item.hover()
    item.locator("[data-cy='undefined-btn']").first.click(timeout=10000)
    page.get_by_text("Tag Browser", exact=True).first.click(timeout=10000)
    search = page.get_by_placeholder("Search metadata")
    search.wait_for(timeout=10000)
    result["tags"] = {}
    for query in ("fracture present", "Fracture region"):
        search.fill(query)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(work / f"ohif_sr_tags_{query.split()[-1]}.png"))
        body = page.inner_text("body")
        result["tags"][query] = body[body.find("DICOM Tag Browser") :][:3000]
    page.get_by_text("Close", exact=True).last.click()
    page.wait_for_timeout(500)


def main(work: Path, dist: Path) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result: dict = {"timings": {}}
    start = time.monotonic()
    loop_cr, report_cr = _cr("loop", 1, work), _cr("report", 2, work)
    report_seg, report_sr = _report_objects(report_cr, work)
    loop = pydicom.dcmread(loop_cr, stop_before_pixels=True)
    report = pydicom.dcmread(report_cr, stop_before_pixels=True)
    result.update(loop_study=loop.StudyInstanceUID, loop_sop=loop.SOPInstanceUID)
    result.update(report_study=report.StudyInstanceUID)
    try:
        with running_orthanc(work):
            for path in (loop_cr, report_cr, report_seg, report_sr):
                _http("POST", "/instances", path.read_bytes())
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=shutil.which("chromium"),
                    args=[
                        "--no-sandbox",
                        "--enable-unsafe-swiftshader",
                        "--use-gl=angle",
                        "--use-angle=swiftshader",
                    ],
                )
                conf = {"dicomweb_cache": str(work / "cache"), "dicomweb_timeout": "10"}
                with running_server(work / "app", seed_dir=None, studies=URL, conf=conf) as app:
                    result["timings"]["app_started"] = time.monotonic() - start
                    _correct_on_page(browser, app.url, loop.SOPInstanceUID, work, result)
                    listing = requests.get(f"{app.url}/datastore/", params={"output": "all"}, timeout=60)
                    info = listing.json()["objects"][loop.SOPInstanceUID]["labels"]["final"]["info"]
                    result["label_info"] = {k: v for k, v in info.items() if isinstance(v, str | int | float)}
                shutil.copy(work / "app" / "server.log", work / "server.log")
                result["timings"]["saved"] = time.monotonic() - start
                seg = _seg_of_study(loop.StudyInstanceUID, work)
                result["loop_seg_on_server"] = seg is not None
                result["report_series"] = [
                    (s.get("00080060", {}).get("Value", [""])[0], s.get("0008103E", {}).get("Value", [""])[0])
                    for s in json.loads(_http("GET", f"/dicom-web/studies/{report.StudyInstanceUID}/series"))
                ]

                port = _free_port()
                log = (work / "ohif_server.log").open("w")
                command = [sys.executable, str(REPO / "scripts" / "ohif_server.py"), str(dist)]
                command += ["--port", str(port), "--orthanc", f"http://127.0.0.1:{PORT}"]
                server = subprocess.Popen(command, stdout=log, stderr=log)
                try:
                    ohif = _Ohif(browser, f"http://127.0.0.1:{port}")
                    ohif.open_study(loop.StudyInstanceUID)
                    ohif.page.screenshot(path=str(work / "ohif_loop_before.png"))
                    result["loop_viewer_text"] = ohif.page.inner_text("body")[:3000]
                    ohif.load_series("fracseg fracture mask, corrected", result, "loop")
                    ohif.page.wait_for_timeout(3000)  # the labelmap is drawn after its representation
                    ohif.page.screenshot(path=str(work / "ohif_loop_seg.png"))
                    result["timings"]["loop_shown"] = time.monotonic() - start

                    mark = ohif.open_study(report.StudyInstanceUID)
                    ohif.page.screenshot(path=str(work / "ohif_report_before.png"))
                    result["report_viewer_text"] = ohif.page.inner_text("body")[:3000]
                    _tag_browser(ohif, "fracseg fracture findings", work, result)
                    # the SR opens in the SR viewport: its groups are drawn over the CR (preview annotations)
                    ohif.console.append("---- fracseg fracture findings double-clicked ----")
                    ohif.page.get_by_text("fracseg fracture findings", exact=True).first.dblclick()
                    result["report_read"] = ohif.wait_console("Measurement is preview", 30, mark)
                    ohif.page.wait_for_timeout(3000)
                    ohif.page.screenshot(path=str(work / "ohif_report_sr.png"))
                    result["report_sr_text"] = ohif.page.inner_text("body")[:4000]
                    # OHIF offers to track the measurements: accepted, they are listed in its panel
                    accept = ohif.page.get_by_role("button", name="Yes")
                    if accept.count():
                        ohif.console.append("---- Yes clicked ----")
                        accept.first.click()
                        ohif.page.wait_for_timeout(3000)
                        ohif.page.screenshot(path=str(work / "ohif_report_tracked.png"))
                        result["report_tracked_text"] = ohif.page.inner_text("body")[:4000]
                    result["report_console"] = ohif.console[mark:][-60:]
                    ohif.open_study(report.StudyInstanceUID)  # a reload brings the CR back
                    ohif.page.screenshot(path=str(work / "ohif_report_reopened.png"))
                    result["console"] = ohif.console[:mark][-80:]
                    result["timings"]["report_shown"] = time.monotonic() - start
                finally:
                    server.terminate()
                    server.wait(timeout=20)
                    log.close()
                browser.close()
    finally:
        (work / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
