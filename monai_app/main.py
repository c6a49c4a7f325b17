"""fracseg MONAI Label app: serves the fracture generator to 3D Slicer and to the 2D correction page.

Start it with ``make serve`` (127.0.0.1:8000), or::

    monailabel start_server --app monai_app --studies DATASTORE --host 127.0.0.1 \
        --uvicorn_app monai_app.asgi:app [--conf model_dir DIR] [--conf seed_dir DIR]

``--conf`` settings (all optional):

- ``bundle``: the shipped bundle to start from (default: ``bundle/`` of this repository); never written.
- ``model_dir``: the app's own copy of it, which training updates (default: ``monai_app/model/fracseg``);
  copied from ``bundle`` when absent, kept otherwise.
- ``seed_dir``: folder of X-rays added to the datastore at start-up when their ids are new (default:
  ``data/samples``; empty to seed nothing). DICOM is converted on the way in (:mod:`lib.uploads`).
  Not used with a DICOMweb server.
- ``dicomweb_cache``: with ``--studies http://.../dicom-web``, the local cache of the server's images,
  labels and SEGs (default: ``outputs/monailabel/dicomweb/<md5 of the URL>`` of this repository).
- ``dicomweb_modalities``: series modalities searched on the server (default ``CR,DX``).
- ``dicomweb_studies``: comma-separated StudyInstanceUIDs to serve (default: every study on the server;
  every matching instance is downloaded into the cache at start-up).
- ``dicomweb_timeout``: seconds allowed for each request to the server (default 60; 5 to connect).

``--studies`` is a datastore folder, or a DICOMweb server (``http://127.0.0.1:8042/dicom-web``; see
:mod:`lib.dicomweb_datastore`: CR/DX only, cached locally, final labels stored back as DICOM SEG, nothing
downloaded from the internet: MONAI Label's dcmqi download is not used).

Models: ``fracture`` (automatic; the same masks as ``fracseg infer``) and ``fracture_interactive``
(clicks as guidance). Strategies: ``least_sure`` and ``random``. Nothing is downloaded at start-up.
FracAtlas (CC BY 4.0; Abedeen et al., Scientific Data 10, 521 (2023)) trained the shipped weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import lib.configs
from lib.bundle_copy import copy_bundle
from lib.datastore import FracsegDatastore
from lib.dicomweb_datastore import DicomwebDatastore
from lib.errors import BAD_REQUEST, NOT_FOUND, UNPROCESSABLE, RequestRejected
from lib.uploads import check_image_id
from lib.web import install_web_routes
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from fracseg.errors import find_fracseg_error

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent
REPO_DIR = APP_DIR.parent
#: Name of the temporary file MONAI Label's ``/infer`` endpoint writes an uploaded image to.
_UPLOAD_NAME = re.compile(r"tmp[a-z0-9_]{8}(\.[A-Za-z0-9]+){0,2}")


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` exception in the cause/context chain of ``exc`` (MONAI wraps transform errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class FracsegApp(MONAILabelApp):
    """The MONAI Label app (see the module docstring for its ``--conf`` settings)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.source_bundle = Path(conf.get("bundle") or REPO_DIR / "bundle")
        self.bundle = copy_bundle(self.source_bundle, conf.get("model_dir") or APP_DIR / "model" / "fracseg")
        metadata = json.loads((self.bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
        self.models = {"fracture": lib.configs.Fracture()}
        for name, config in self.models.items():
            config.init(name, str(self.bundle / "models"), conf, None, bundle=self.bundle)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="fracseg",
            description=f"{metadata['name']}. {metadata['intended_use']} Weights: {metadata['copyright']}.",
            version=metadata["version"],
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return self._init_dicomweb_datastore()
        datastore = FracsegDatastore(
            self.studies,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )
        seed_dir = self.conf.get("seed_dir", str(REPO_DIR / "data" / "samples"))
        if seed_dir and not settings.MONAI_LABEL_DATASTORE_READ_ONLY:
            added = datastore.seed(seed_dir)
            if added:
                logger.info("datastore seeded from %s: %s", seed_dir, ", ".join(added))
        return datastore

    def _init_dicomweb_datastore(self) -> DicomwebDatastore:
        """The DICOMweb datastore (never MONAI Label's: that one downloads dcmqi at start-up)."""
        url = self.studies.strip().rstrip("/")
        digest = hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()
        cache = self.conf.get("dicomweb_cache") or str(
            REPO_DIR / "outputs" / "monailabel" / "dicomweb" / digest
        )
        modalities = tuple(m.strip() for m in self.conf.get("dicomweb_modalities", "CR,DX").split(",") if m)
        studies = tuple(u.strip() for u in self.conf.get("dicomweb_studies", "").split(",") if u.strip())
        try:
            read_timeout = float(self.conf.get("dicomweb_timeout", "60"))
        except ValueError as exc:
            raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"dicomweb_timeout: {exc}") from exc
        datastore = DicomwebDatastore(
            url,
            cache,
            modalities=modalities,
            studies=studies,
            timeout=(min(5.0, read_timeout), read_timeout),
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
        )
        added = datastore.sync(force=True)
        logger.info(
            "DICOMweb datastore %s (%s), cache %s: %d image(s) fetched%s",
            url,
            "/".join(modalities),
            cache,
            len(added),
            f"; server error: {datastore.last_error}" if datastore.last_error else "",
        )
        return datastore

    def init_infers(self) -> dict[str, Any]:
        infers: dict[str, Any] = {}
        for config in self.models.values():
            infers.update(config.infer())
        return infers

    def init_trainers(self) -> dict[str, Any]:
        return {name: config.trainer() for name, config in self.models.items()}

    def init_strategies(self) -> dict[str, Any]:
        strategies: dict[str, Any] = {}
        for config in self.models.values():
            strategies.update(config.strategy())
        return strategies

    def init_scoring_methods(self) -> dict[str, Any]:
        methods: dict[str, Any] = {}
        for config in self.models.values():
            methods.update(config.scoring_method())
        return methods

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's inference, with the image checked first and input errors answered with 4xx.

        ``image`` must be a datastore id, or the temporary file MONAI Label's ``/infer`` endpoint made of
        an uploaded ``file`` (``tempfile.NamedTemporaryFile`` name directly in the temporary folder): no
        other server path is read. An unreadable image is 422 naming it.
        """
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise RequestRejected(BAD_REQUEST, "image: an image id (or an uploaded file) is required")
        store = datastore or self.datastore()
        upload = Path(image)
        is_upload = (
            upload.is_absolute()
            and upload.parent == Path(tempfile.gettempdir())
            and _UPLOAD_NAME.fullmatch(upload.name) is not None
            and upload.is_file()
        )
        name = upload.name if is_upload else image
        if not is_upload:
            check_image_id(image)
            if isinstance(store, FracsegDatastore):
                store.image_path(image)
            elif not store.get_image_uri(image):
                raise RequestRejected(NOT_FOUND, f"image {image!r} is not in the datastore")
        try:
            return super().infer(copy.deepcopy(request), datastore)
        except RequestRejected:
            raise
        except Exception as exc:
            rejected = _cause(exc, RequestRejected)
            if rejected is not None:
                raise rejected from None
            unreadable = find_fracseg_error(exc)
            if unreadable is not None:
                reason = getattr(unreadable, "reason", str(unreadable))
                raise RequestRejected(UNPROCESSABLE, f"image {name!r}: {reason}") from None
            raise

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's next sample, without starting a scoring process per request (``least_sure``
        scores what it needs itself)."""
        strategy = request.get("strategy") or "random"
        task = self._strategies.get(strategy)
        if task is None:
            raise RequestRejected(NOT_FOUND, f"strategy {strategy!r} does not exist")
        result = task(request, self.datastore())
        if not result or not result.get("id"):
            return {}
        result["path"] = self.datastore().get_image_uri(result["id"])
        return result

    def on_init_complete(self) -> None:
        super().on_init_complete()
        import monailabel.app

        install_web_routes(monailabel.app.app, self)
        logger.info("fracseg app ready: bundle copy %s, datastore %s", self.bundle, self.studies)


__all__ = ["FracsegApp"]
