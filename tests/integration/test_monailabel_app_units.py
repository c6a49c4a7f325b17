"""App pieces without a server: click geometry, and labels that survive a process killed mid-save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fracseg.transforms import letterbox_transforms
from tests.helpers.monailabel_server import REPO

pytestmark = pytest.mark.integration

APP = REPO / "monai_app"


@pytest.fixture(scope="module")
def clicks():
    sys.path.insert(0, str(APP))
    try:
        import lib.clicks

        yield lib.clicks
    finally:
        sys.path.remove(str(APP))


@pytest.mark.parametrize("shape", [(454, 373), (373, 454), (1976, 1576), (100, 100), (9, 300)])
def test_letterbox_point_lands_where_the_letterbox_moves_that_pixel(clicks, shape) -> None:
    from monai.data import MetaTensor
    from monai.transforms import Compose

    letterbox = Compose(letterbox_transforms(spatial_size=64))
    height, width = shape
    for row, col in [(0, 0), (height - 1, width - 1), (height // 2, width // 3), (height // 5, width - 1)]:
        image = np.zeros(shape, dtype=np.float32)
        image[max(0, row - 1) : row + 2, max(0, col - 1) : col + 2] = 1.0  # a blob survives downsampling
        boxed = letterbox({"image": MetaTensor(torch.from_numpy(image)[None])})["image"][0].numpy()
        peak = np.unravel_index(int(np.argmax(boxed)), boxed.shape)
        mapped = clicks.letterbox_point(row, col, shape, 64)
        assert abs(mapped[0] - peak[0]) <= 1 and abs(mapped[1] - peak[1]) <= 1, (
            shape,
            (row, col),
            mapped,
            peak,
        )


def test_points_accept_slicer_and_page_forms_and_refuse_the_rest(clicks) -> None:
    assert clicks.parse_points([[3, 5, 0], [7.0, 1]], "foreground", (10, 8)) == [(5, 3), (1, 7)]
    assert clicks.parse_points(None, "background", (10, 8)) == []
    for bad in ([[8, 0]], [[0, 10]], [[1, 1, 2]], [[True, 1]], [[float("nan"), 1]], {"x": 1}, [[1, 2, 3, 4]]):
        with pytest.raises(clicks.RequestRejected) as caught:
            clicks.parse_points(bad, "foreground", (10, 8))
        assert caught.value.status_code == 422 and "foreground" in caught.value.detail
    guidance = clicks.guidance([(5, 3)], [], (10, 8), 32)
    assert (
        guidance.shape == (2, 32, 32) and float(guidance[0].max()) == 1.0 and float(guidance[1].max()) == 0.0
    )


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from PIL import Image
    sys.path.insert(0, sys.argv[1])
    from lib.datastore import FracsegDatastore

    store = FracsegDatastore(sys.argv[2], auto_reload=False)
    if "IMG0000288" not in store.list_images():
        store.add_image("IMG0000288", sys.argv[3], {})
    count = 0
    while True:
        store.save_label("IMG0000288", sys.argv[4 + count % 2], "final", {"n": count})
        count += 1
        print(count, flush=True)
    """
)


def test_a_server_killed_mid_save_loses_no_earlier_label(tmp_path) -> None:
    """Save labels in a loop in a child process and SIGKILL it at different moments: the stored label is
    always one complete version, and the index stays readable and lists it."""
    masks = []
    for index in range(2):
        mask = np.zeros((454, 373), dtype=np.uint8)
        mask[10 + 100 * index : 60 + 100 * index, 20:300] = 255
        Image.fromarray(mask).save(tmp_path / f"label{index}.png")
        masks.append(mask > 0)
    datastore = tmp_path / "datastore"
    sample = REPO / "data" / "samples" / "IMG0000288.jpg"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for delay in (0.0, 0.1):
        command = [sys.executable, "-c", CHILD, str(APP), str(datastore), str(sample)]
        command += [str(tmp_path / "label0.png"), str(tmp_path / "label1.png")]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(3):  # let a few saves complete, then kill at some point within the next one
            assert child.stdout.readline(), "the child stopped saving"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        stored = np.asarray(Image.open(datastore / "labels" / "final" / "IMG0000288.png")) > 0
        assert any(np.array_equal(stored, m) for m in masks)
        index = json.loads((datastore / "datastore_v2.json").read_text())
        assert index["objects"]["IMG0000288"]["labels"]["final"]["info"]["name"] == "IMG0000288.png"


def test_cors_only_for_configured_origins(monkeypatch) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from monailabel.config import settings
    from starlette.middleware.cors import CORSMiddleware

    from monai_app import asgi

    def build(origins: list[str]) -> TestClient:
        app = FastAPI()
        app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_credentials=True)  # MONAI Label's
        app.get("/info/")(lambda: {"ok": True})
        monkeypatch.setattr(settings, "MONAI_LABEL_CORS_ORIGINS", origins)
        asgi._configure(app)
        return TestClient(app)

    open_app = build([])
    reply = open_app.get("/info/", headers={"Origin": "https://viewer.example.org"})
    assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers
    configured = build(["https://viewer.example.org"])
    allowed = configured.get("/info/", headers={"Origin": "https://viewer.example.org"})
    assert allowed.headers["access-control-allow-origin"] == "https://viewer.example.org"
    other = configured.get("/info/", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    too_big = configured.put("/info/", headers={"Content-Length": str(asgi.MAX_BODY_BYTES + 1)}, content=b"")
    assert too_big.status_code == 413


@pytest.fixture(scope="module")
def bundle_copy():
    sys.path.insert(0, str(APP))
    try:
        import lib.bundle_copy

        yield lib.bundle_copy
    finally:
        sys.path.remove(str(APP))


def _fake_bundle(path, version: str, weights: bytes):
    (path / "configs").mkdir(parents=True)
    (path / "models").mkdir()
    (path / "configs" / "metadata.json").write_text(json.dumps({"version": version}))
    (path / "configs" / "inference.json").write_text(json.dumps({"version_seen": version}))
    (path / "models" / "model.pt").write_bytes(weights)
    return path


def test_bundle_copy_follows_a_new_release_unless_it_holds_fine_tuned_weights(bundle_copy, tmp_path, caplog):
    old = _fake_bundle(tmp_path / "old", "0.5.0", b"weights-0.5")
    new = _fake_bundle(tmp_path / "new", "0.6.0", b"weights-0.6")
    target = tmp_path / "app" / "model"
    target.parent.mkdir()

    bundle_copy.copy_bundle(old, target)
    assert (target / "models" / "model.pt").read_bytes() == b"weights-0.5"
    assert json.loads((target / bundle_copy.MARKER).read_text())["version"] == "0.5.0"
    # Same release: the copy is left alone (a fine-tuned model stays).
    (target / "models" / "model.pt").write_bytes(b"tuned")
    bundle_copy.copy_bundle(_fake_bundle(tmp_path / "again", "0.5.0", b"weights-0.5"), target)
    assert (target / "models" / "model.pt").read_bytes() == b"tuned"
    # A newer release does not overwrite fine-tuned weights; it says so.
    with caplog.at_level("WARNING"):
        bundle_copy.copy_bundle(new, target)
    assert (target / "models" / "model.pt").read_bytes() == b"tuned"
    assert "fine-tuned" in caplog.text and "0.6.0" in caplog.text
    # Untouched weights: the copy becomes the new release, configs included.
    (target / "models" / "model.pt").write_bytes(b"weights-0.5")
    bundle_copy.copy_bundle(new, target)
    assert (target / "models" / "model.pt").read_bytes() == b"weights-0.6"
    assert json.loads((target / "configs" / "inference.json").read_text())["version_seen"] == "0.6.0"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temporary folders left


def test_bundle_copy_without_record_upgrades_when_its_weights_are_the_shipped_ones(bundle_copy, tmp_path):
    """Copies made before the record existed (0.5.0 -> 0.6.0 kept the weights file and changed the rule)."""
    target = _fake_bundle(tmp_path / "model", "0.5.0", b"same-weights")
    (target / "configs" / "inference.json").write_text(json.dumps({"mirror": False}))
    new = _fake_bundle(tmp_path / "new", "0.6.0", b"same-weights")
    bundle_copy.copy_bundle(new, target)
    assert json.loads((target / "configs" / "inference.json").read_text()) == {"version_seen": "0.6.0"}
    other = _fake_bundle(tmp_path / "other", "0.6.0", b"different-weights")
    kept = _fake_bundle(tmp_path / "kept", "0.4.0", b"unknown-weights")
    bundle_copy.copy_bundle(other, kept)
    assert (kept / "models" / "model.pt").read_bytes() == b"unknown-weights"


@pytest.fixture(scope="module")
def scoring():
    sys.path.insert(0, str(APP))
    try:
        import lib.scoring.fracture_uncertainty

        yield lib.scoring.fracture_uncertainty
    finally:
        sys.path.remove(str(APP))


def test_scoring_key_follows_the_weights_and_the_rule(scoring, tmp_path) -> None:
    """The cached least-sure scores are keyed on the weights and on the rule's file: either changing gives
    a new key; any other file of the bundle copy does not."""
    bundle = _fake_bundle(tmp_path / "model", "0.9.0", b"weights")
    shipped = json.loads((REPO / "bundle" / "configs" / "inference.json").read_text())
    config = bundle / "configs" / "inference.json"
    config.write_text(json.dumps(shipped))
    assert set(scoring.scored_files(bundle)) == {"weights", "rule"}
    first = scoring.scoring_key(bundle)
    (bundle / "models" / "image_head.pt").write_bytes(b"not a file the answer depends on")
    assert scoring.scoring_key(bundle) == first
    moved = {**shipped["decision_rule"], "threshold": 0.9}
    config.write_text(json.dumps({**shipped, "decision_rule": moved}))
    second = scoring.scoring_key(bundle)
    assert second != first
    # A digest the caller already has gives the same key as hashing the weights again.
    from fracseg.io import file_sha256

    assert scoring.scoring_key(bundle, weights_sha256=file_sha256(bundle / "models" / "model.pt")) == second
    (bundle / "models" / "model.pt").write_bytes(b"fine-tuned weights")
    assert scoring.scoring_key(bundle) not in (first, second)
