"""The app's datastore on a DICOMweb server (a PACS such as Orthanc): CR/DX in, corrected masks out as SEG.

MONAI Label's own ``DICOMWebDatastore`` downloads dcmqi from the internet at start-up, searches CT by
default, and stores labels through dcmqi, which fails on projection radiographs (no plane geometry).
This one keeps everything of :class:`~lib.datastore.FracsegDatastore` (checked ids, atomic writes, the
fracseg reader) and adds the server:

- **Images.** Every instance of a series of modality CR or DX (QIDO-RS) is one image whose id is its
  SOPInstanceUID. Instances are downloaded once (WADO-RS) into ``<cache>/.dicomweb/<study>/<series>/
  <sop>.dcm`` and stored like an uploaded DICOM (the fracseg reader's output as ``<sop>.nii.gz``), so
  inference sees exactly what ``fracseg infer`` sees in the same file. The server is searched again at
  most every ``sync_interval`` seconds when the image list is asked for; images found since are fetched
  then.
- **Labels.** A ``final`` label is stored locally first (as in the local datastore), then written as a
  DICOM SEG with fracseg's writer (``<cache>/.dicomweb-seg/<sop>.dcm``, referencing the source, patient
  and study identifiers kept) and stored on the server (STOW-RS). A STOW that fails keeps the label and
  the SEG, answers 502 naming the server and the reason, and is retried at the next search.
- **The server down or slow.** Every request is bounded (``timeout``, tried twice 0.5 s apart). A
  failed search is logged and the cached images stay listed (``GET /datastore/`` shows the last error
  under ``dicomweb``); a failed search or STOW makes the next search due after ``retry_interval``
  seconds, so the app recovers by itself when the server is back.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import DefaultLabelTag

from fracseg.errors import FracsegError
from fracseg.inference import dicomweb
from fracseg.io import read_xray
from fracseg.io.dicom_seg import write_dicom_seg
from lib.datastore import FracsegDatastore
from lib.errors import RequestRejected

logger = logging.getLogger(__name__)

BAD_GATEWAY = 502
SERVICE_UNAVAILABLE = 503
#: Hidden folders of the cache (hidden names are never listed as images or labels).
INSTANCE_DIR = ".dicomweb"
SEG_DIR = ".dicomweb-seg"


class DicomwebDatastore(FracsegDatastore):
    """A :class:`FracsegDatastore` cache in ``cache_dir`` of the CR/DX images on a DICOMweb server.

    Args:
        url: the server's DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        cache_dir: local folder of the downloaded images, their labels and SEGs.
        modalities: series modalities that are images of this app.
        studies: StudyInstanceUIDs to search (empty: every study on the server).
        timeout: seconds to connect and to wait for each read of every request.
        sync_interval: seconds between two searches of the server.
        retry_interval: seconds before a failed search is tried again.
        auto_reload: MONAI Label's setting (watch the cache folder).
    """

    def __init__(
        self,
        url: str,
        cache_dir: str,
        modalities: tuple[str, ...] = dicomweb.DEFAULT_MODALITIES,
        studies: tuple[str, ...] = (),
        timeout: float | tuple[float, float] = dicomweb.DEFAULT_TIMEOUT,
        sync_interval: float = 30.0,
        retry_interval: float = 5.0,
        auto_reload: bool = True,
    ) -> None:
        super().__init__(cache_dir, auto_reload=auto_reload)
        self.url = url.rstrip("/")
        self.query = dicomweb.DicomwebQuery(self.url, modalities=modalities, studies=studies)
        self.client = dicomweb.connect(self.url, timeout=timeout, attempts=2)
        self.sync_interval = sync_interval
        self.retry_interval = retry_interval
        self.last_error: str | None = None
        self.last_sync: float | None = None
        self._next_sync = 0.0
        self._sync_lock = threading.Lock()
        self._rejected: dict[str, str] = {}

    @property
    def _cache(self) -> Path:
        return Path(self._datastore_path)

    def name(self) -> str:
        return self.url

    # ----- the server ----------------------------------------------------------------------------------

    def sync(self, force: bool = False) -> list[str]:
        """Search the server (when due, or ``force``), fetch new instances, retry pending STOWs.

        Returns the ids added. Never raises for the server: the error is logged and kept in
        ``last_error`` (shown by ``GET /datastore/``).
        """
        if not force and time.monotonic() < self._next_sync:
            return []
        with self._sync_lock:
            if not force and time.monotonic() < self._next_sync:
                return []
            try:
                remote = dicomweb.find_instances(self.client, self.query)
            except dicomweb.DicomwebError as exc:
                self.last_error = str(exc)
                self._next_sync = time.monotonic() + self.retry_interval
                logger.error("%s", exc)
                return []
            added = [image_id for image_id in map(self._fetch, remote) if image_id]
            self._retry_pending_stow()
            self.last_error = None
            self.last_sync = time.time()
            self._next_sync = time.monotonic() + self.sync_interval
        if added:
            logger.info("fetched %d image(s) from %s", len(added), self.url)
        return added

    def _fetch(self, found: tuple[str, str, str, str]) -> str | None:
        study, series, sop, modality = found
        if sop in self._datastore.objects or sop in self._rejected:
            return None
        path = self._cache / INSTANCE_DIR / study / series / f"{sop}.dcm"
        try:
            dicomweb.fetch_instance(self.client, self.url, study, series, sop, path)
            info = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "Modality": modality}
            info["dicom"] = str(path.relative_to(self._cache))
            return self.add_image(sop, str(path), info)
        except dicomweb.DicomwebError as exc:  # retried at the next search
            logger.error("%s", exc)
        except RequestRejected as exc:  # unreadable: not retried until the server is restarted
            self._rejected[sop] = exc.detail
            logger.error("%s: instance %s not added: %s", self.url, sop, exc.detail)
        return None

    def _source_dicom(self, image_id: str) -> Path | None:
        relative = self._datastore.objects[image_id].image.info.get("dicom")
        return self._cache / relative if relative else None

    def _store_seg(self, image_id: str) -> dict[str, Any]:
        """STOW the SEG of ``image_id``'s final label; returns what to record in the label's info."""
        seg_path = self._cache / SEG_DIR / f"{image_id}.dcm"
        import pydicom

        dataset = pydicom.dcmread(seg_path)
        try:
            dicomweb.store_dataset(self.client, self.url, dataset)
        except dicomweb.DicomwebError as exc:
            logger.error("%s (the label is kept; retried at the next search)", exc)
            self.last_error = str(exc)
            self._next_sync = min(self._next_sync, time.monotonic() + self.retry_interval)
            return {"stow": "failed", "stow_error": str(exc)}
        logger.info("stored the SEG of %s on %s: %s", image_id, self.url, dataset.SOPInstanceUID)
        return {
            "stow": "stored",
            "stow_error": "",
            "SegSeriesInstanceUID": str(dataset.SeriesInstanceUID),
            "SegSOPInstanceUID": str(dataset.SOPInstanceUID),
        }

    def _retry_pending_stow(self) -> None:
        for image_id, obj in list(self._datastore.objects.items()):
            label = obj.labels.get(DefaultLabelTag.FINAL)
            if label is not None and label.info.get("stow") == "failed":
                result = self._store_seg(image_id)
                if result["stow"] == "stored":
                    super().update_label_info(image_id, DefaultLabelTag.FINAL, result)

    # ----- MONAI Label's datastore interface -----------------------------------------------------------

    def list_images(self) -> list[str]:
        self.sync()
        return super().list_images()

    def get_unlabeled_images(
        self, label_tag: str | None = None, labels: list[str] | None = None
    ) -> list[str]:
        self.sync()
        return super().get_unlabeled_images(label_tag, labels)

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        self.sync()
        return super().datalist(full_path)

    def json(self) -> dict[str, Any]:
        self.sync()
        result = super().json()
        result["dicomweb"] = {"url": self.url, "last_sync": self.last_sync, "error": self.last_error}
        return result

    def image_path(self, image_id: str) -> Path:
        """The cached file of an image; an id not cached yet triggers a search of the server first.

        Raises:
            RequestRejected: 404 not on the server, 503 the server could not be searched.
        """
        if image_id not in self._datastore.objects:
            self.sync(force=True)
            if image_id not in self._datastore.objects and self.last_error:
                raise RequestRejected(
                    SERVICE_UNAVAILABLE, f"image {image_id!r} is not cached and {self.last_error}"
                )
        return super().image_path(image_id)

    def get_image_uri(self, image_id: str) -> str:
        if image_id not in self._datastore.objects:
            try:
                self.image_path(image_id)
            except RequestRejected:
                return ""
        return super().get_image_uri(image_id)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]
    ) -> str:
        """Store the label locally (:class:`FracsegDatastore`); a ``final`` label also goes to the server
        as a DICOM SEG.

        Raises:
            RequestRejected: as :meth:`FracsegDatastore.save_label`; 502 when the label was kept but its
                SEG could not be stored on the server (retried at the next search).
        """
        label_id = super().save_label(image_id, label_filename, label_tag, label_info)
        source = self._source_dicom(image_id)
        if label_tag != DefaultLabelTag.FINAL or source is None:
            return label_id
        mask = read_xray(self.get_label_uri(image_id, label_tag)).array > 0
        try:
            write_dicom_seg(source, mask, self._cache / SEG_DIR / f"{image_id}.dcm", corrected=True)
        except FracsegError as exc:
            super().update_label_info(image_id, label_tag, {"stow": "not written", "stow_error": str(exc)})
            raise RequestRejected(
                BAD_GATEWAY, f"label of {image_id!r} saved locally; no DICOM SEG could be written: {exc}"
            ) from None
        result = self._store_seg(image_id)
        super().update_label_info(image_id, label_tag, result)
        if result["stow"] != "stored":
            raise RequestRejected(
                BAD_GATEWAY,
                f"label of {image_id!r} saved locally; its DICOM SEG was not stored on the server "
                f"(retried at the next search): {result['stow_error']}",
            )
        return label_id


__all__ = ["DicomwebDatastore"]
