"""End to end: the MONAI Label app on loopback, the 2D correction page in Debian's Chromium.

The app runs as ``make serve`` runs it (:mod:`tests.helpers.monailabel_server`: 127.0.0.1, a free port, a
temporary datastore seeded with a JPEG and a CR DICOM from ``data/samples``, its own model copy) and is
stopped at the end.
Playwright drives the system ``chromium`` through ``executable_path`` (no browser download): open the
page at 1366x768, next sample, pick the DICOM-derived image, auto-segment, a foreground and a background
click, undo, brush and eraser, opacity, save; then the saved label is read from the datastore's label
folder. Screenshots of every step stay in the test's ``tmp_path`` (``screenshots/``).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from fracseg.inference import Predictor
from fracseg.io import read_xray
from tests.helpers.monailabel_server import Server, running_server

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
JPEG_ID = "IMG0000288"
DICOM_ID = "IMG0003766_CR"
VIEWPORT = {"width": 1366, "height": 768}
STEP_TIMEOUT_MS = 60_000


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app on 127.0.0.1 (a free port) over a temporary datastore seeded with a JPEG and a CR DICOM."""
    root = tmp_path_factory.mktemp("app")
    seed = root / "seed"
    seed.mkdir()
    for name in (f"{JPEG_ID}.jpg", f"{DICOM_ID}.dcm"):
        shutil.copy2(SAMPLES / name, seed / name)
    with running_server(root / "app", seed_dir=seed) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api  # the test extra; drives the system Chromium, never downloads one

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed (make system-tools installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_image_endpoint_renders_through_the_readers_and_refuses_unknown_ids(server: Server) -> None:
    status, body = _get(f"{server.url}/fracseg/api/image.png?image={DICOM_ID}")
    assert status == 200 and body.startswith(b"\x89PNG")
    stored = next((server.datastore).glob(f"{DICOM_ID}.*"))
    shown = Image.open(io.BytesIO(body))
    assert shown.mode == "L" and shown.size[::-1] == read_xray(stored).array.shape
    for bad in ("../../etc/passwd", "%2Fetc%2Fpasswd", "nope"):
        status, body = _get(f"{server.url}/fracseg/api/image.png?image={bad}")
        assert status == 404, (bad, status, body)
    status, body = _get(f"{server.url}/fracseg/")
    assert status == 200 and b'src="js/app.js"' in body


def _page_mask(page, shape: tuple[int, int]) -> np.ndarray:
    ones = page.evaluate(
        "() => { const m = window.fracsegPage.labels.mask, out = [];"
        " for (let i = 0; i < m.length; i++) if (m[i]) out.push(i); return out; }"
    )
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    mask[np.asarray(ones, dtype=np.int64)] = True
    return mask.reshape(shape)


def _idle(page) -> None:
    page.wait_for_function("document.body.dataset.busy === '0'", timeout=STEP_TIMEOUT_MS)


def _pixel(box: dict, shape: tuple[int, int], fx: float, fy: float) -> tuple[float, float, int, int]:
    """Screen position of the fraction ``(fx, fy)`` of the image and the pixel (col, row) under it."""
    x, y = box["x"] + fx * box["width"], box["y"] + fy * box["height"]
    col = int((x - box["x"]) / box["width"] * shape[1])
    row = int((y - box["y"]) / box["height"] * shape[0])
    return x, y, col, row


def test_correct_and_save_in_the_browser(server: Server, browser, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sent: list[dict] = []
    page.on(
        "request",
        lambda r: sent.append({"url": r.url, "body": r.post_data or ""}) if "/infer/" in r.url else None,
    )

    page.goto(f"{server.url}/fracseg/")
    page.wait_for_selector("body[data-ready='1']")
    _idle(page)
    options = page.eval_on_selector_all("#image-list option", "els => els.map(e => e.value)")
    assert sorted(options) == [JPEG_ID, DICOM_ID]
    page.screenshot(path=shots / "01_opened.png")

    page.keyboard.press("n")  # next sample (active learning)
    page.wait_for_function("window.fracsegPage.state.imageId !== null", timeout=STEP_TIMEOUT_MS)
    _idle(page)
    assert page.evaluate("window.fracsegPage.state.imageId") in options

    page.select_option("#image-list", DICOM_ID)
    page.wait_for_function(f"window.fracsegPage.state.imageId === '{DICOM_ID}'", timeout=STEP_TIMEOUT_MS)
    _idle(page)
    stored = next(server.datastore.glob(f"{DICOM_ID}.*"))
    shape = read_xray(stored).array.shape
    assert page.evaluate("[window.fracsegPage.state.height, window.fracsegPage.state.width]") == list(shape)
    # The whole image is visible at 1366x768.
    box = page.locator("#tool-layer").bounding_box()
    assert box["x"] >= 0 and box["y"] >= 0
    assert (
        box["x"] + box["width"] <= VIEWPORT["width"] + 1
        and box["y"] + box["height"] <= VIEWPORT["height"] + 1
    )

    # Auto-segment: the page shows exactly the mask fracseg's predictor makes of the stored image, so the
    # label's decoding and orientation are right (the image is not square: a transpose would not fit).
    page.keyboard.press("a")
    page.wait_for_function("window.fracsegPage.state.timings.length >= 1", timeout=STEP_TIMEOUT_MS)
    _idle(page)
    automatic = _page_mask(page, shape)
    prediction = Predictor().predict(stored)
    np.testing.assert_array_equal(automatic, prediction.mask)
    # the status line carries the answer's score from the reply's params (output=all)
    assert f"fracture score {prediction.fracture_score:.2f}" in page.text_content("#status")
    page.screenshot(path=shots / "02_auto.png")

    # A foreground click: the request carries [col, row, 0] of the pixel under the pointer.
    x, y, col, row = _pixel(box, shape, 0.5, 0.5)
    page.keyboard.press("f")
    page.mouse.click(x, y)
    page.wait_for_function("window.fracsegPage.state.timings.length >= 2", timeout=STEP_TIMEOUT_MS)
    _idle(page)
    params = json.loads(sent[-1]["body"].split('name="params"')[1].split("\r\n\r\n", 1)[1].split("\r\n--")[0])
    assert "/infer/fracture_interactive" in sent[-1]["url"]
    assert params == {"foreground": [[col, row, 0]], "background": []}
    after_click = _page_mask(page, shape)
    assert not np.array_equal(after_click, automatic), "the click did not change the mask"
    assert page.evaluate("window.fracsegPage.state.timings.at(-1).kind") == "click"
    page.screenshot(path=shots / "03_foreground_click.png")

    # A background click (right button) sends both clicks; undo restores the mask before it, exactly.
    x2, y2, col2, row2 = _pixel(box, shape, 0.3, 0.7)
    page.mouse.click(x2, y2, button="right")
    page.wait_for_function("window.fracsegPage.state.timings.length >= 3", timeout=STEP_TIMEOUT_MS)
    _idle(page)
    params = json.loads(sent[-1]["body"].split('name="params"')[1].split("\r\n\r\n", 1)[1].split("\r\n--")[0])
    assert params == {"foreground": [[col, row, 0]], "background": [[col2, row2, 0]]}
    page.keyboard.press("z")
    np.testing.assert_array_equal(_page_mask(page, shape), after_click)
    assert page.evaluate("window.fracsegPage.state.clicks.length") == 1

    # Paint a stroke, then erase across its middle.
    page.keyboard.press("p")
    radius = page.evaluate("window.fracsegPage.state.brush")
    painted = []
    x0, y0, _, _ = _pixel(box, shape, 0.15, 0.15)
    x1, y1, _, _ = _pixel(box, shape, 0.35, 0.25)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=10)
    page.mouse.up()
    for t in np.linspace(0.0, 1.0, 9):
        painted.append(_pixel(box, shape, 0.15 + 0.2 * t, 0.15 + 0.1 * t)[2:])
    page.keyboard.press("e")
    ex0, ey0, _, _ = _pixel(box, shape, 0.25, 0.12)
    ex1, ey1, _, _ = _pixel(box, shape, 0.25, 0.28)
    page.mouse.move(ex0, ey0)
    page.mouse.down()
    page.mouse.move(ex1, ey1, steps=6)
    page.mouse.up()
    erased = [_pixel(box, shape, 0.25, 0.12 + 0.16 * t)[2:] for t in np.linspace(0.0, 1.0, 7)]
    mask = _page_mask(page, shape)
    erased_col = erased[0][0]
    kept = [(c, r) for c, r in painted if abs(c - erased_col) > 2 * radius + 2]
    assert len(kept) >= 4
    assert all(mask[r, c] for c, r in kept), "painted pixels are not set"
    assert not any(mask[r, c] for c, r in erased), "erased pixels are still set"

    # Opacity shortcut, then save with the keyboard.
    assert page.evaluate("getComputedStyle(document.getElementById('label-layer')).opacity") == "0.45"
    page.keyboard.press("-")
    assert page.evaluate("getComputedStyle(document.getElementById('label-layer')).opacity") == "0.35"
    page.screenshot(path=shots / "04_brushed.png")
    assert page.text_content("#state-dirty") == "unsaved"
    # Switching image with unsaved changes is held back (a second switch would discard them).
    page.select_option("#image-list", JPEG_ID)
    _idle(page)
    assert page.evaluate("window.fracsegPage.state.imageId") == DICOM_ID
    assert "Unsaved changes" in page.text_content("#status")
    page.keyboard.press("s")
    page.wait_for_function(
        "document.getElementById('state-dirty').textContent === 'none'", timeout=STEP_TIMEOUT_MS
    )
    _idle(page)
    page.screenshot(path=shots / "05_saved.png")
    assert "Saved the final label" in page.text_content("#status")
    assert not errors, errors

    # The label on disk: in the datastore's final-label folder, the page's mask pixel for pixel.
    saved = list((server.datastore / "labels" / "final").glob(f"{DICOM_ID}.*"))
    assert len(saved) == 1, saved
    on_disk = read_xray(saved[0]).array > 0
    np.testing.assert_array_equal(on_disk, mask)
    assert all(on_disk[r, c] for c, r in kept) and not any(on_disk[r, c] for c, r in erased)
    status, body = _get(f"{server.url}/datastore/?output=all")
    assert status == 200 and "final" in json.loads(body)["objects"][DICOM_ID]["labels"]

    # The JPEG: its labels come back as PNG; the page shows the predictor's mask of the stored file.
    page.select_option("#image-list", JPEG_ID)
    page.wait_for_function(f"window.fracsegPage.state.imageId === '{JPEG_ID}'", timeout=STEP_TIMEOUT_MS)
    _idle(page)
    count = page.evaluate("window.fracsegPage.state.timings.length")
    page.click("#auto")
    page.wait_for_function(f"window.fracsegPage.state.timings.length > {count}", timeout=STEP_TIMEOUT_MS)
    _idle(page)
    jpeg = next(server.datastore.glob(f"{JPEG_ID}.*"))
    jpeg_shape = read_xray(jpeg).array.shape
    np.testing.assert_array_equal(_page_mask(page, jpeg_shape), Predictor().predict(jpeg).mask)
    page.screenshot(path=shots / "06_jpeg_auto.png")
    assert not errors, errors
    for name in ("01_opened", "02_auto", "03_foreground_click", "04_brushed", "05_saved", "06_jpeg_auto"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
    page.close()


def _nifti(array: np.ndarray, endianness: str = "<", gzipped: bool = True) -> bytes:
    header = nib.Nifti1Header(endianness=endianness)
    data = nib.Nifti1Image(array, np.eye(4), header=header).to_bytes()
    return gzip.compress(data) if gzipped else data


def test_label_codecs_in_the_browser(server: Server, browser) -> None:
    """The page's decoder against labels written by nibabel and Pillow, and its PNG encoder read by Pillow."""
    rng = np.random.default_rng(0)
    height, width = 23, 37
    mask = rng.random((height, width)) > 0.6
    png = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(png, format="PNG")
    plain = _nifti(mask.T.astype(np.uint8), gzipped=False)
    cases = {
        "float32 (W, H), gzipped": (_nifti(mask.T.astype(np.float32)), width, height),
        "uint8 (H, W) stored rows first": (_nifti(mask.astype(np.uint8)), width, height),
        "big-endian int16": (_nifti(mask.T.astype(">i2"), endianness=">"), width, height),
        "uint8, not gzipped": (plain, width, height),
        "png": (png.getvalue(), width, height),
        "truncated": (plain[:-40], width, height),
        "other size": (_nifti(mask.T.astype(np.uint8)), width + 1, height),
    }
    page = browser.new_page()
    page.goto(f"{server.url}/fracseg/")
    decoded = page.evaluate(
        """async ({cases, mask, width, height}) => {
            const codec = await import("/fracseg/js/codec.js");
            const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const out = {};
            for (const [name, [data, w, h]] of Object.entries(cases)) {
                try { out[name] = Array.from(await codec.decodeLabel(bytes(data).buffer, w, h)); }
                catch (err) { out[name] = "error: " + err.message; }
            }
            const blob = await codec.encodeMaskPng(Uint8Array.from(mask), width, height);
            const png = new Uint8Array(await blob.arrayBuffer());
            out.encoded = btoa(Array.from(png, (b) => String.fromCharCode(b)).join(""));
            return out;
        }""",
        {
            "cases": {k: [base64.b64encode(v[0]).decode(), v[1], v[2]] for k, v in cases.items()},
            "mask": mask.ravel().astype(int).tolist(),
            "width": width,
            "height": height,
        },
    )
    page.close()
    expected = mask.ravel().astype(int).tolist()
    for name in ("float32 (W, H), gzipped", "uint8 (H, W) stored rows first", "big-endian int16"):
        assert decoded[name] == expected, name
    assert decoded["uint8, not gzipped"] == expected and decoded["png"] == expected
    assert decoded["truncated"] == "error: NIfTI label is truncated"
    assert decoded["other size"] == f"error: label is {width}x{height}, the image is {width + 1}x{height}"
    encoded = Image.open(io.BytesIO(base64.b64decode(decoded["encoded"])))
    assert encoded.mode == "L" and encoded.size == (width, height)
    np.testing.assert_array_equal(np.asarray(encoded), mask.astype(np.uint8) * 255)


def test_answer_status_says_what_the_model_said(server: Server, browser) -> None:
    """A yes without a region (the image head decides, bundle 0.9.0) is said in words, not "0 pixels"."""
    page = browser.new_page()
    page.goto(f"{server.url}/fracseg/")
    lines = page.evaluate(
        """async () => {
            const { answerStatus } = await import("/fracseg/js/status.js");
            return [
                answerStatus("fracture", "A", 0, { fracture_present: true, fracture_score: 0.389 }),
                answerStatus("fracture", "B", 0, { fracture_present: false, fracture_score: 0.2415 }),
                answerStatus("fracture", "C", 1522, { fracture_present: true, fracture_score: 0.797 }),
                answerStatus("fracture", "D", 12),
            ];
        }"""
    )
    assert lines[0].startswith("fracture: fracture suspected (fracture score 0.39) but not localised on A")
    assert lines[1] == "fracture: no fracture found (fracture score 0.24) on B."
    assert lines[2] == "fracture: 1522 fracture pixels (fracture score 0.80) on C."
    assert lines[3] == "fracture: 12 fracture pixels on D."
