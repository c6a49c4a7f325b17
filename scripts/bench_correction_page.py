"""Click-to-mask time of the 2D correction page, against the bare ``/infer`` round trip of the same request.

For each image, the page (Debian's ``chromium`` driven by Playwright, 1366x768) gets ``--clicks``
clicks at seeded random positions, one at a time, alternating foreground and background, with the click
list cleared every third click (so requests carry 1-3 points, as in real use). The page's own
measurement is read back: from the pointer-down event to the new mask drawn on screen (request,
server-side inference, NIfTI/PNG decoding in the browser, canvas update). The baseline, measured in
the same run against the same server, is the same ``POST /infer/fracture_interactive`` request (same
points) sent from Python without a browser.

Usage::

    taskset -c 1 python scripts/bench_correction_page.py [--url http://127.0.0.1:8000] [--clicks 15]

Without ``--url`` the app is started on a free loopback port over a temporary datastore seeded with
``data/samples`` and the 1576x1976 CR DICOM of ``../shared/data/dicom`` (as the tests start it) and
stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

logger = logging.getLogger("bench_correction_page")

#: Images measured: a 373x454 FracAtlas JPEG, the CR DICOM of the samples (373x454) and a 1576x1976 CR
#: DICOM from ../shared/data/dicom (as the datastore holds them: DICOM converted to NIfTI on the way in).
DEFAULT_IMAGES = ("IMG0000288", "IMG0003766_CR", "CR-ModalitySequenceLUT")
LARGE_DICOM = REPO.parent / "shared" / "data" / "dicom" / "CR-ModalitySequenceLUT.dcm"


@contextlib.contextmanager
def server_url(url: str | None) -> Iterator[str]:
    """``url``, or a fresh app on a free loopback port for the duration of the block."""
    if url:
        yield url.rstrip("/")
        return
    from tests.helpers.monailabel_server import running_server

    with tempfile.TemporaryDirectory(prefix="bench-page-") as work:
        seed = Path(work) / "seed"
        shutil.copytree(REPO / "data" / "samples", seed)
        if LARGE_DICOM.is_file():
            shutil.copy2(LARGE_DICOM, seed / LARGE_DICOM.name)
        with running_server(Path(work) / "app", seed_dir=seed) as server:
            yield server.url


def direct_infer(url: str, image: str, foreground: list, background: list) -> float:
    """Seconds for one ``POST /infer/fracture_interactive`` round trip with these points."""
    boundary = uuid.uuid4().hex
    params = json.dumps({"foreground": foreground, "background": background})
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{params}\r\n--{boundary}--\r\n'
    ).encode()
    request = urllib.request.Request(
        f"{url}/infer/fracture_interactive?image={urllib.parse.quote(image)}&output=image",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return time.perf_counter() - start


def measure_image(page, url: str, image: str, clicks: int, rng: np.random.Generator) -> dict:
    """Page click-to-mask times and direct round trips (seconds) for one image."""
    page.select_option("#image-list", image)
    page.wait_for_function("document.body.dataset.busy === '0'", timeout=60_000)
    if page.evaluate("window.fracsegPage.state.imageId") != image:  # unsaved clicks: the second pick discards
        page.select_option("#image-list", image)
    try:
        page.wait_for_function(f"window.fracsegPage.state.imageId === {json.dumps(image)}", timeout=60_000)
    except Exception:
        raise RuntimeError(f"the page did not open {image}: {page.text_content('#status')}") from None
    page.wait_for_function("document.body.dataset.busy === '0'", timeout=60_000)
    height, width = page.evaluate("[window.fracsegPage.state.height, window.fracsegPage.state.width]")
    box = page.locator("#tool-layer").bounding_box()
    page_times, direct_times = [], []
    for i in range(clicks):
        if i % 3 == 0:
            page.keyboard.press("c")  # clear clicks: requests carry 1, 2, 3 points
        page.keyboard.press("f" if i % 2 == 0 else "b")
        fx, fy = rng.uniform(0.1, 0.9, size=2)
        before = page.evaluate("window.fracsegPage.state.timings.length")
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function(f"window.fracsegPage.state.timings.length > {before}", timeout=120_000)
        page.wait_for_function("document.body.dataset.busy === '0'", timeout=60_000)
        timing = page.evaluate("window.fracsegPage.state.timings.at(-1)")
        page_times.append(timing["ms"] / 1000.0)
        state = page.evaluate("window.fracsegPage.state.clicks")
        points = {
            k: [[c["x"], c["y"], 0] for c in state if c["kind"] == k] for k in ("foreground", "background")
        }
        direct_times.append(direct_infer(url, image, points["foreground"], points["background"]))
    return {"image": image, "size": f"{width}x{height}", "page": page_times, "direct": direct_times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app (default: start one on a free loopback port)")
    parser.add_argument("--clicks", type=int, default=15, help="clicks per image")
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        logger.error("Debian's chromium is not installed (apt-get install chromium)")
        return 2
    rng = np.random.default_rng(args.seed)
    with server_url(args.url) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{url}/fracseg/")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        results = []
        for image in args.images:
            measure_image(page, url, image, 1, rng)  # warm-up click, not counted
            results.append(measure_image(page, url, image, args.clicks, rng))
        browser.close()

    print(f"Correction page, click to mask ({args.clicks} clicks per image, 1-3 points per request)")
    print(
        "| image | size | page click-to-mask p50 | p95 | /infer round trip p50 (baseline) | p95 | ratio p50 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        page_p50, direct_p50 = statistics.median(r["page"]), statistics.median(r["direct"])
        print(
            f"| {r['image']} | {r['size']} | {page_p50:.3f} s | {np.percentile(r['page'], 95):.3f} s | "
            f"{direct_p50:.3f} s | {np.percentile(r['direct'], 95):.3f} s | {page_p50 / direct_p50:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
