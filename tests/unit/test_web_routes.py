"""monai_app/lib/web.py: the correction page's static files and its image-rendering endpoint, in process."""

from __future__ import annotations

import importlib.util
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from fracseg.io import read_xray
from fracseg.transforms.intensity import normalize_intensity

REPO = Path(__file__).resolve().parents[2]


def _web_module():
    spec = importlib.util.spec_from_file_location("fracseg_app_web", REPO / "monai_app" / "lib" / "web.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Datastore:
    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def list_images(self) -> list[str]:
        return list(self.files)

    def get_image_uri(self, image_id: str) -> str:
        return str(self.files.get(image_id, ""))


class _App:
    def __init__(self, files: dict[str, Path]) -> None:
        self._datastore = _Datastore(files)

    def datastore(self) -> _Datastore:
        return self._datastore


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    jpeg = tmp_path / "hand.jpg"
    shutil.copy2(REPO / "data" / "samples" / "IMG0002628.jpg", jpeg)  # carries an EXIF rotation
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    dicom = REPO / "data" / "samples" / "IMG0003766_CR.dcm"
    app = FastAPI()
    _web_module().install_web_routes(app, _App({"hand": jpeg, "cut": truncated, "cr": dicom}))
    return TestClient(app)


@pytest.mark.parametrize("image_id, source", [("hand", "IMG0002628.jpg"), ("cr", "IMG0003766_CR.dcm")])
def test_image_is_the_normalised_reader_output(client: TestClient, image_id: str, source: str) -> None:
    response = client.get("/fracseg/api/image.png", params={"image": image_id})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = read_xray(REPO / "data" / "samples" / source).array  # EXIF applied, MONOCHROME1 inverted
    assert shown.dtype == np.uint8 and shown.shape == expected.shape
    np.testing.assert_array_equal(shown, np.round(normalize_intensity(expected) * 255).astype(np.uint8))


def test_unreadable_and_unknown_images_are_4xx_naming_them(client: TestClient) -> None:
    response = client.get("/fracseg/api/image.png", params={"image": "cut"})
    assert response.status_code == 422
    assert "'cut'" in response.json()["detail"] and "truncated" in response.json()["detail"]
    for bad in ("nope", "../../etc/passwd", "/etc/passwd"):
        assert client.get("/fracseg/api/image.png", params={"image": bad}).status_code == 404
    assert client.get("/fracseg/api/image.png").status_code == 422  # no image id


def test_page_files_are_served(client: TestClient) -> None:
    page = client.get("/fracseg/")
    assert page.status_code == 200 and 'src="js/app.js"' in page.text
    script = client.get("/fracseg/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
