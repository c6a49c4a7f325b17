"""The 2D correction page: static files under ``/fracseg/`` and the one helper endpoint it needs.

The page (``monai_app/www/``) is a MONAI Label client like 3D Slicer: it lists images, asks for the next
sample, runs inference and saves labels through MONAI Label's own REST endpoints. The only thing it
cannot do with those is *show* a datastore image a browser cannot decode (DICOM, NIfTI, 16-bit PNG) in
exactly the frame the model's masks are returned in. ``GET /fracseg/api/image.png?image=ID`` renders any
datastore image through :func:`fracseg.io.read_xray` (EXIF orientation applied, MONOCHROME1 inverted) and
the shared :func:`fracseg.transforms.intensity.normalize_intensity` into an 8-bit greyscale PNG of the
displayed size, so pixel ``(row, col)`` of that PNG is pixel ``(row, col)`` of every mask the app returns.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from fracseg.errors import ImageReadError
from fracseg.io import read_xray
from fracseg.transforms.intensity import normalize_intensity

logger = logging.getLogger(__name__)

#: Folder of the page's static files (``index.html``, ES modules, stylesheet).
WWW_DIR = Path(__file__).resolve().parents[1] / "www"
#: URL prefix of the page; its helper endpoints live below ``<prefix>/api/``.
PAGE_PREFIX = "/fracseg"


def render_display_png(path: str | Path) -> bytes:
    """An 8-bit greyscale PNG of the image at ``path`` in its displayed frame, as the model sees it.

    Raises:
        ImageReadError: the file cannot be read (the message names the file and the reason).
    """
    xray = read_xray(path)
    grey = np.asarray(normalize_intensity(xray.array), dtype=np.float32)
    pixels = np.round(grey * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _image_path(ml_app: Any, image_id: str) -> Path:
    """The datastore file of ``image_id``; 404 for ids the datastore does not list (no path is built from
    the id itself, so ``../`` or absolute ids cannot reach files outside the datastore)."""
    datastore = ml_app.datastore()
    if image_id not in set(datastore.list_images()):
        raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
    uri = datastore.get_image_uri(image_id)
    if not uri or not Path(uri).is_file():
        raise HTTPException(status_code=404, detail=f"image {image_id!r} has no file in the datastore")
    return Path(uri)


def install_web_routes(fastapi_app: FastAPI, ml_app: Any) -> None:
    """Serve the correction page at ``/fracseg/`` and its helper endpoint at ``/fracseg/api/``.

    Args:
        fastapi_app: the MONAI Label FastAPI application (``monailabel.app.app``).
        ml_app: the running ``MONAILabelApp`` (anything with a ``datastore()`` method).
    """
    router = APIRouter(prefix=f"{PAGE_PREFIX}/api", tags=["fracseg page"])

    @router.get("/image.png", summary="Datastore image as an 8-bit PNG in the displayed frame")
    def image_png(image: str = Query(..., min_length=1, max_length=256)) -> Response:
        path = _image_path(ml_app, image)
        try:
            data = render_display_png(path)
        except ImageReadError as exc:
            logger.warning("cannot render %s: %s", image, exc.reason)
            raise HTTPException(status_code=422, detail=f"image {image!r}: {exc.reason}") from None
        return Response(content=data, media_type="image/png", headers={"Cache-Control": "no-store"})

    # The API router goes first: the static mount below matches every path under the prefix.
    fastapi_app.include_router(router)
    fastapi_app.mount(PAGE_PREFIX, StaticFiles(directory=WWW_DIR, html=True), name="fracseg-page")
    logger.info("2D correction page at %s/ (static files from %s)", PAGE_PREFIX, WWW_DIR)
