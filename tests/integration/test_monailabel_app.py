"""The fracseg MONAI Label app over HTTP, driven like 3D Slicer drives it (``MONAILabelClient``).

One server for the module (started as ``make serve`` starts it, on a free loopback port), seeded with
``data/samples``: info, automatic inference pixel-equal to ``fracseg infer`` (JPEG and the DICOM stored
as NIfTI), a foreground click that recovers a missed fracture, labels saved the way Slicer saves them
(``.nii.gz``) and the way the page does (``.png``), next sample, and the hardening of every input.
"""

from __future__ import annotations

import csv
import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from scipy import ndimage

from fracseg.data.fracatlas import read_coco_polygons
from fracseg.data.rasterize import rasterize_polygons
from fracseg.inference.predictor import Predictor
from fracseg.io import read_xray
from tests.helpers.monailabel_server import REPO, running_server

pytestmark = pytest.mark.integration

SAMPLES = REPO / "data" / "samples"
#: A valid-split image whose fracture the shipped model misses entirely (empty mask, image judged
#: fracture-free), so the one-click test starts from a clear false negative.
MISSED = "IMG0003770"
#: A non-fractured FracAtlas valid image on which the shipped model (0.7.0) draws one false region.
FALSE_ALARM = "IMG0003608"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("monailabel")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("client")))


def _mask(path: str | Path, work: Path) -> np.ndarray:
    """A result or label file as an ``(H, W)`` bool mask (the client saves results without a suffix)."""
    data = Path(path).read_bytes()
    target = work / ("result.nii.gz" if data[:2] == b"\x1f\x8b" else "result.png")
    target.write_bytes(data)
    return read_xray(target).array > 0


def _ground_truth(shared: Path, image_id: str) -> np.ndarray:
    polygons, _ = read_coco_polygons(shared / "fracatlas")
    height, width = read_xray(shared / "fracatlas" / "images" / "Fractured" / f"{image_id}.jpg").array.shape
    return rasterize_polygons([p for _, p in polygons[image_id]], height, width)


def _centre_of_largest(region: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` farthest from the border of the largest component (the DeepEdit click)."""
    labels, count = ndimage.label(region)
    assert count > 0
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    dist = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(row), int(col)


def test_info_models_labels_and_seeded_datastore(client, server) -> None:
    info = client.info()
    assert info["labels"] == ["fracture"]
    assert info["models"]["fracture"]["type"] == "segmentation"
    assert info["models"]["fracture_interactive"]["type"] == "deepgrow"
    for model in info["models"].values():
        assert model["dimension"] == 2 and model["labels"] == {"fracture": 1}
    assert set(info["trainers"]) == {"fracture"}
    assert {"least_sure", "random"} <= set(info["strategies"])
    objects = client.datastore()["objects"]
    assert set(objects) == {p.name.split(".")[0] for p in SAMPLES.iterdir()}
    assert objects["IMG0003766_CR"]["image"]["ext"] == ".nii.gz"  # DICOM converted on the way in
    assert objects["IMG0000288"]["image"]["ext"] == ".jpg"  # displayed frame already: bytes kept
    assert (server.datastore / "IMG0000288.jpg").read_bytes() == (SAMPLES / "IMG0000288.jpg").read_bytes()
    assert (server.model_dir / "models" / "model.pt").read_bytes() == (
        REPO / "bundle" / "models" / "model.pt"
    ).read_bytes()


def test_fracture_masks_equal_fracseg_infer_on_the_samples(client, tmp_path) -> None:
    out = tmp_path / "cli"
    subprocess.run(
        [sys.executable, "-m", "fracseg", "infer", str(SAMPLES), "--output", str(out), "--quiet"],
        check=True,
        cwd=REPO,
    )
    with open(out / "predictions.csv", encoding="utf-8") as fh:
        rows = {Path(r["image"]).name.split(".")[0]: r for r in csv.DictReader(fh)}
    assert len(rows) == 5
    for image_id, row in rows.items():
        result, params = client.infer("fracture", image_id, {})
        mask = _mask(result, tmp_path)
        expected = np.asarray(Image.open(out / f"{image_id}_mask.png")) > 0
        assert mask.shape == expected.shape, image_id
        assert np.array_equal(mask, expected), f"{image_id}: {int((mask != expected).sum())} pixels differ"
        assert params["fracture_present"] == bool(int(row["fracture_present"]))
        assert params["fracture_score"] == pytest.approx(float(row["fracture_score"]), abs=1e-5)
        assert params["mask_pixels"] == int(mask.sum())


def test_infer_on_an_uploaded_file_equals_the_datastore_image(client, tmp_path) -> None:
    by_id = _mask(client.infer("fracture", "IMG0004151", {})[0], tmp_path)
    uploaded = _mask(client.infer("fracture", "", {}, file=str(SAMPLES / "IMG0004151.jpg"))[0], tmp_path)
    assert np.array_equal(by_id, uploaded)


def test_foreground_click_recovers_a_missed_fracture(client, shared_data, tmp_path) -> None:
    source = shared_data / "fracatlas" / "images" / "Fractured" / f"{MISSED}.jpg"
    assert client.upload_image(str(source), MISSED)["image"] == MISSED
    truth = _ground_truth(shared_data, MISSED)
    automatic = _mask(client.infer("fracture", MISSED, {})[0], tmp_path)
    missed = truth & ~automatic
    assert missed.sum() == truth.sum() > 0  # the automatic mask misses this fracture entirely
    row, col = _centre_of_largest(missed)
    # 3D Slicer's request: IJK points [col, row, 0], the segment name and "slice": 0 for a 2D model.
    slicer_params = {"label": "fracture", "foreground": [[col, row, 0]], "background": [], "slice": 0}
    result, params = client.infer("fracture_interactive", MISSED, slicer_params)
    clicked = _mask(result, tmp_path)
    assert clicked[row, col], "no mask under the foreground click"
    assert (clicked & missed).sum() >= 0.5 * missed.sum()
    assert params["clicks"] == {"foreground": 1, "background": 0}
    # The page's form [x, y] gives the same mask.
    page = _mask(client.infer("fracture_interactive", MISSED, {"foreground": [[col, row]]})[0], tmp_path)
    assert np.array_equal(page, clicked)


def test_background_click_removes_a_false_alarm(client, shared_data, tmp_path) -> None:
    source = shared_data / "fracatlas" / "images" / "Non_fractured" / f"{FALSE_ALARM}.jpg"
    assert client.upload_image(str(source), FALSE_ALARM)["image"] == FALSE_ALARM
    automatic = _mask(client.infer("fracture", FALSE_ALARM, {})[0], tmp_path)  # no fracture in FracAtlas
    assert automatic.any(), "the shipped model no longer draws a false region here: pick another image"
    labels, _ = ndimage.label(automatic, structure=np.ones((3, 3)))
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    row, col = _centre_of_largest(largest)
    result, params = client.infer("fracture_interactive", FALSE_ALARM, {"background": [[col, row, 0]]})
    corrected = _mask(result, tmp_path)
    assert automatic[row, col] and not corrected[row, col]
    assert (corrected & largest).sum() <= 0.75 * largest.sum()
    assert params["clicks"] == {"foreground": 0, "background": 1}


def _slicer_label(path: Path, mask: np.ndarray) -> None:
    """Write ``mask`` (H, W) as 3D Slicer's module saves a labelmap: NIfTI of ITK size (W, H, 1)."""
    import SimpleITK as sitk  # noqa: N813

    image = sitk.GetImageFromArray(mask.astype(np.uint8)[None])  # ITK (x=col, y=row, z=0)
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # Slicer's RAS <-> LPS flip
    sitk.WriteImage(image, str(path), True)


def test_labels_from_slicer_nifti_and_page_png_are_stored_in_the_image_frame(
    client, server, tmp_path
) -> None:
    height, width = 454, 373  # IMG0000288
    mask = np.zeros((height, width), dtype=bool)
    mask[10:30, 100:140] = True  # asymmetric: a transposed or flipped label would not match
    _slicer_label(tmp_path / "label.nii.gz", mask)
    reply = client.save_label("IMG0000288", str(tmp_path / "label.nii.gz"), tag="final")
    assert reply["image"] == "IMG0000288"
    stored = server.datastore / "labels" / "final" / "IMG0000288.png"
    assert np.array_equal(np.asarray(Image.open(stored)), mask.astype(np.uint8))  # label value 1

    page = np.zeros((height, width), dtype=np.uint8)
    page[200:260, 50:60] = 255
    Image.fromarray(page).save(tmp_path / "page.png")
    client.save_label("IMG0004068", str(tmp_path / "page.png"), tag="final")
    stored = np.asarray(Image.open(server.datastore / "labels" / "final" / "IMG0004068.png"))
    assert np.array_equal(stored, (page > 0).astype(np.uint8))

    # On the DICOM-derived image the label is stored on the image's own NIfTI grid.
    import SimpleITK as sitk  # noqa: N813

    dicom = read_xray(SAMPLES / "IMG0003766_CR.dcm")
    label = np.zeros(dicom.array.shape, dtype=np.uint8)
    label[5:9, 7:20] = 1
    Image.fromarray(label).save(tmp_path / "dicom_label.png")
    client.save_label("IMG0003766_CR", str(tmp_path / "dicom_label.png"), tag="final")
    stored_path = server.datastore / "labels" / "final" / "IMG0003766_CR.nii.gz"
    assert np.array_equal(read_xray(stored_path).array, label)
    image = sitk.ReadImage(str(server.datastore / "IMG0003766_CR.nii.gz"))
    assert sitk.ReadImage(str(stored_path)).GetSpacing() == image.GetSpacing()
    tags = client.datastore()["objects"]["IMG0003766_CR"]["labels"]
    assert tags["final"]["info"]["pixels"] == int(label.sum())


def test_next_sample_least_sure_is_the_unlabeled_image_closest_to_the_threshold(client, server) -> None:
    objects = client.datastore()["objects"]
    unlabeled = sorted(k for k, v in objects.items() if "final" not in v["labels"])
    assert unlabeled
    predictor = Predictor(weights=server.model_dir / "models" / "model.pt", bundle=server.model_dir)
    predictions = {
        i: predictor.predict(server.datastore / objects[i]["image"]["info"]["name"]) for i in unlabeled
    }
    distance = {i: abs(p.fracture_score - predictor.rule.score_threshold) for i, p in predictions.items()}
    answer = client.next_sample("least_sure", {})
    assert answer["id"] == min(unlabeled, key=lambda i: (distance[i], i))
    assert 0.0 <= answer["uncertainty"] <= 1.0
    assert client.next_sample("random", {})["id"] in objects


def test_least_sure_rescores_when_the_bundle_copy_changes_its_rule(client, server) -> None:
    """Cached uncertainties are keyed on the weights, the head and the rule: a new rule (as an upgraded
    bundle copy brings) rescores, where a key on the weights alone kept the old threshold's answers."""
    objects = client.datastore()["objects"]
    unlabeled = sorted(k for k, v in objects.items() if "final" not in v["labels"])
    client.next_sample("least_sure", {})  # cached with the shipped rule
    config = server.model_dir / "configs" / "inference.json"
    original = config.read_text(encoding="utf-8")
    try:
        changed = json.loads(original)
        changed["decision_rule"]["score_threshold"] = 0.9
        config.write_text(json.dumps(changed), encoding="utf-8")
        predictor = Predictor(weights=server.model_dir / "models" / "model.pt", bundle=server.model_dir)
        scores = {
            i: predictor.predict(server.datastore / objects[i]["image"]["info"]["name"]).fracture_score
            for i in unlabeled
        }
        answer = client.next_sample("least_sure", {})
        assert answer["id"] == min(unlabeled, key=lambda i: (abs(scores[i] - 0.9), i))
        assert answer["uncertainty"] == pytest.approx(1.0 - abs(scores[answer["id"]] - 0.9) / 0.9, abs=1e-5)
    finally:
        config.write_text(original, encoding="utf-8")
    client.next_sample("least_sure", {})  # and back


# ----- hardening -------------------------------------------------------------------------------------


def _put_label(server, image: str, path: Path, tag: str = "final") -> requests.Response:
    with open(path, "rb") as fh:
        return requests.put(
            f"{server.url}/datastore/label",
            params={"image": image, "tag": tag},
            files={"label": (path.name, fh)},
            timeout=60,
        )


def _put_image(server, image: str | None, path: Path, name: str | None = None) -> requests.Response:
    with open(path, "rb") as fh:
        return requests.put(
            f"{server.url}/datastore/image",
            params={"image": image} if image is not None else {},
            files={"file": (name or path.name, fh)},
            timeout=60,
        )


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.startswith(".lock")}


def test_ids_tags_and_names_that_leave_the_datastore_are_refused(server, tmp_path) -> None:
    parent = server.datastore.parent
    before = _tree(parent)
    label = tmp_path / "label.png"
    Image.fromarray(np.zeros((454, 373), dtype=np.uint8)).save(label)
    for image in ("../IMG0000288", "/etc/passwd", "IMG0000288/../x", "IMG 0288", "IMG\x000288", ".."):
        reply = _put_label(server, image, label)
        assert reply.status_code == 400, (image, reply.text)
        assert "invalid image id" in reply.json()["detail"]
    for tag in ("../../escaped", "final/../../x", "a\x00b", "/tmp"):
        reply = _put_label(server, "IMG0000288", label, tag=tag)
        assert reply.status_code == 400 and "invalid label tag" in reply.json()["detail"], tag
    assert _put_label(server, "NOT_THERE", label).status_code == 404
    sample = SAMPLES / "IMG0004151.jpg"
    for image in ("../escaped", "/tmp/escaped", "a\x00b", "a/b"):
        assert _put_image(server, image, sample).status_code == 400, image
    # No id given: the name's final component becomes the id, so a traversal name cannot escape either.
    assert _put_image(server, None, sample, name="../../escaped.jpg").status_code == 200
    assert (server.datastore / "escaped.jpg").is_file()
    outside = tmp_path / "tmpabcdefgh.jpg"  # a real file named like an upload, outside the temporary folder
    shutil.copyfile(SAMPLES / "IMG0000288.jpg", outside)
    for image in ("/etc/passwd", "../datastore_v2.json", "IMG0000288/../../x", str(outside)):
        reply = requests.post(f"{server.url}/infer/fracture", params={"image": image}, timeout=60)
        assert reply.status_code == 400, (image, reply.text)
    assert (
        requests.post(f"{server.url}/infer/fracture", params={"image": "NOPE"}, timeout=60).status_code == 404
    )
    after = _tree(parent)
    new = {p for p in after - before if not p.startswith("datastore/")}
    assert new == set(), new  # nothing written beside the datastore


def test_corrupt_truncated_wrong_type_and_oversized_inputs_are_4xx_naming_the_problem(
    server, shared_data, tmp_path
) -> None:
    truncated = shared_data / "fracatlas" / "images" / "Non_fractured" / "IMG0004130.jpg"
    reply = _put_image(server, "TRUNC", truncated)
    assert reply.status_code == 422 and "TRUNC" in reply.json()["detail"], reply.text
    assert "truncated" in reply.json()["detail"].lower()
    (tmp_path / "notes.txt").write_text("not an image")
    reply = _put_image(server, "NOTES", tmp_path / "notes.txt")
    assert reply.status_code == 415 and ".png" in reply.json()["detail"]
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert _put_image(server, "FAKE", tmp_path / "fake.png").status_code == 422
    assert _put_image(server, "IMG0000288", SAMPLES / "IMG0000288.jpg").status_code == 409
    # Labels: wrong size, wrong type, corrupt NIfTI.
    Image.fromarray(np.zeros((100, 80), dtype=np.uint8)).save(tmp_path / "small.png")
    reply = _put_label(server, "IMG0000288", tmp_path / "small.png")
    assert (
        reply.status_code == 422
        and "80x100" in reply.json()["detail"]
        and "373x454" in reply.json()["detail"]
    )
    assert _put_label(server, "IMG0000288", tmp_path / "notes.txt").status_code == 415
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    reply = _put_label(server, "IMG0000288", tmp_path / "broken.nii.gz")
    assert reply.status_code == 422 and "IMG0000288" in reply.json()["detail"]
    # A body above the limit is refused from its Content-Length, before it is read.
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("PUT", "/datastore/image?image=BIG")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(10**9))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and b"limit" in response.read()
    connection.close()
    # Clicks: outside the image, malformed, a slice other than 0.
    for points in ([[373, 10]], [[-1, 5]], [["a", 3]], [[1, 2, 3]], "x", [[1]]):
        reply = requests.post(
            f"{server.url}/infer/fracture_interactive",
            params={"image": "IMG0000288"},
            data={"params": json.dumps({"foreground": points})},
            timeout=60,
        )
        assert reply.status_code == 422 and "foreground" in reply.json()["detail"], (points, reply.text)
    # An unreadable file put into the datastore folder by hand: infer answers 422 naming it.
    shutil.copyfile(truncated, server.datastore / "HANDPUT.jpg")
    deadline = time.monotonic() + 30
    while "HANDPUT" not in requests.get(f"{server.url}/datastore/?output=all", timeout=30).json()["objects"]:
        assert time.monotonic() < deadline, "datastore did not pick up the file"
        time.sleep(0.5)
    reply = requests.post(f"{server.url}/infer/fracture", params={"image": "HANDPUT"}, timeout=60)
    assert reply.status_code == 422 and "HANDPUT" in reply.json()["detail"], reply.text
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200  # still serving


def test_no_cors_headers_without_configured_origins(server) -> None:
    reply = requests.get(f"{server.url}/info/", headers={"Origin": "http://evil.example"}, timeout=30)
    assert reply.status_code == 200
    assert "access-control-allow-origin" not in {k.lower() for k in reply.headers}
