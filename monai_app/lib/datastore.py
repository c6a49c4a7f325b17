"""The app's local datastore: MONAI Label's ``LocalDatastore`` with checked input and atomic writes.

Layout (MONAI Label's): images in the datastore folder, labels in ``labels/<tag>/``, the index in
``datastore_v2.json``. What differs from ``LocalDatastore`` (file formats: :mod:`lib.uploads`):

- ids and tags are checked before a path is built from them, so nothing is read or written outside the
  folder; uploads are type/size checked and read by the fracseg reader (unreadable: 422 naming it);
- an image id that exists is not overwritten by an upload (409), so stored labels keep their image;
- label files and the index are written atomically (temporary file + rename, under the datastore's
  file lock): a server killed mid-save leaves every earlier label and a readable index;
- hidden files (the temporaries of atomic writes) are never listed as images or labels;
- the index is re-read when another process (the scoring or training task) replaced it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel
from monailabel.interfaces.datastore import DefaultLabelTag

from fracseg.io import SUPPORTED_SUFFIXES, write_text_atomic
from lib.errors import NOT_FOUND, RequestRejected
from lib.uploads import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    MAX_IMAGE_BYTES,
    MAX_LABEL_BYTES,
    check_image_id,
    check_tag,
    check_upload,
    label_suffix_for,
    read_image,
    read_mask,
    store_image,
    suffix_of,
    write_mask,
)

logger = logging.getLogger(__name__)

CONFLICT = 409
#: File patterns of stored images and labels (what :mod:`lib.uploads` writes).
STORED_PATTERNS = ("*.nii.gz", "*.png", "*.jpg")


class FracsegDatastore(LocalDatastore):
    """A :class:`LocalDatastore` over ``path`` that only stores what :mod:`lib.uploads` accepts.

    Args:
        path: the datastore folder (created when missing).
        auto_reload: watch the folder for files added or removed by hand (MONAI Label's setting).
        read_only: do not reconcile the index with the folder at start-up.
    """

    def __init__(self, path: str, auto_reload: bool = True, read_only: bool = False) -> None:
        super().__init__(path, extensions=list(STORED_PATTERNS), auto_reload=auto_reload, read_only=read_only)
        handler = getattr(self, "_handler", None)
        if handler is not None:  # an atomic replace of the index arrives as a move, not a modification
            handler.on_moved = self._on_moved_event

    # ----- reading -----------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the index if another process replaced it since it was last read."""
        self._init_from_datastore_file()

    def image_path(self, image_id: str) -> Path:
        """The stored file of a listed image; :class:`RequestRejected` 400/404 otherwise."""
        check_image_id(image_id)
        uri = self.get_image_uri(image_id)
        if not uri or not os.path.isfile(uri):
            raise RequestRejected(NOT_FOUND, f"image {image_id!r} is not in the datastore")
        return Path(uri)

    def _read_index(self) -> None:
        """``_init_from_datastore_file`` for a caller that already holds the datastore's file lock."""
        path = self._datastore_config_path
        if os.path.exists(path) and os.stat(path).st_mtime != self._config_ts:
            with open(path, encoding="utf-8") as fh:
                self._datastore = LocalDatastoreModel.model_validate_json(fh.read())
            self._datastore.base_path = self._datastore_path
            self._config_ts = os.stat(path).st_mtime

    def _list_files(self, path: str, patterns: Any) -> dict[str, str]:
        return {k: v for k, v in super()._list_files(path, patterns).items() if not k.startswith(".")}

    def _on_moved_event(self, event: Any) -> None:
        if os.fspath(getattr(event, "dest_path", "")) == self._datastore_config_path:
            self._init_from_datastore_file()

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            write_text_atomic(self._datastore_config_path, text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    # ----- images ------------------------------------------------------------------------------------

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Store an uploaded image (``image_filename`` keeps the upload's suffix) under ``image_id``.

        Raises:
            RequestRejected: 400 bad id, 409 id exists, 413/415 size/type, 422 unreadable.
        """
        if not image_id:
            name = Path(image_filename).name
            suffix = suffix_of(name, IMAGE_SUFFIXES) or Path(name).suffix
            image_id = name[: len(name) - len(suffix)]
        check_image_id(image_id)
        what = f"image {image_id!r}"
        check_upload(image_filename, what, IMAGE_SUFFIXES, MAX_IMAGE_BYTES)
        xray = read_image(image_filename, what)
        with FileLock(self._lock_file):
            self._read_index()
            if image_id in self._datastore.objects:
                raise RequestRejected(CONFLICT, f"{what} already exists in the datastore")
            dest = store_image(image_filename, xray, Path(self._datastore.image_path()) / image_id)
            _, ext = self._to_id(dest.name)
            info = {**(image_info or {}), "ts": int(time.time()), "name": dest.name}
            info.update(height=int(xray.array.shape[0]), width=int(xray.array.shape[1]))
            info["source_format"] = str(xray.meta.format)
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            self._update_datastore_file(lock=False)
        logger.info("stored image %s as %s", image_id, dest.name)
        return image_id

    def remove_image(self, image_id: str) -> None:
        self.image_path(image_id)
        super().remove_image(image_id)

    def seed(self, folder: str | os.PathLike[str]) -> list[str]:
        """Add the images of ``folder`` (not recursive) whose ids are not stored yet; returns the ids added.

        DICOM and other non-displayable inputs are converted on the way in (:mod:`lib.uploads`). A file
        that cannot be added is logged and skipped.
        """
        added = []
        for path in sorted(Path(folder).iterdir()):
            suffix = suffix_of(path.name, SUPPORTED_SUFFIXES)
            if not path.is_file() or suffix is None or path.name.startswith("."):
                continue
            image_id = path.name[: len(path.name) - len(suffix)]
            if image_id in self._datastore.objects:
                continue
            try:
                added.append(self.add_image(image_id, str(path), {"source": path.name}))
            except RequestRejected as exc:
                logger.error("seed image %s not added: %s", path, exc.detail)
        return added

    # ----- labels ------------------------------------------------------------------------------------

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]
    ) -> str:
        """Store a label for ``image_id`` under ``label_tag`` (formats: :mod:`lib.uploads`); returns its id.

        Raises:
            RequestRejected: 400 bad id/tag, 404 unknown image, 413/415 size/type, 422 unreadable label or
                a size other than the image's.
        """
        check_tag(label_tag)
        image = self.image_path(image_id)
        what = f"label for image {image_id!r}"
        check_upload(label_filename, what, LABEL_SUFFIXES, MAX_LABEL_BYTES)
        shape = self._image_shape(image_id, image)
        mask = read_mask(label_filename, what, shape)
        folder = Path(self._datastore.label_path(label_tag))
        name = image_id + label_suffix_for(image)
        with FileLock(self._lock_file):
            self._read_index()
            folder.mkdir(parents=True, exist_ok=True)
            write_mask(mask, image, folder / name)
            info = {**(label_info or {}), "ts": int(time.time()), "name": name, "pixels": int(mask.sum())}
            obj = self._datastore.objects[image_id]
            obj.labels[label_tag] = DataModel(info=info, ext=label_suffix_for(image))
            self._update_datastore_file(lock=False)
        logger.info("stored %s label of %s (%d fracture pixels)", label_tag, image_id, int(mask.sum()))
        return image_id

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_tag(label_tag)
        self.image_path(label_id)
        super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self.image_path(image_id)
        with FileLock(self._lock_file):
            self._read_index()
            self._datastore.objects[image_id].image.info.update(info)
            self._update_datastore_file(lock=False)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        check_tag(label_tag)
        self.image_path(label_id)
        super().update_label_info(label_id, label_tag, info)

    def _image_shape(self, image_id: str, path: Path) -> tuple[int, int]:
        info = self._datastore.objects[image_id].image.info
        if "height" in info and "width" in info:
            return int(info["height"]), int(info["width"])
        array = read_image(path, f"image {image_id!r}").array  # an image put into the folder by hand
        return int(array.shape[0]), int(array.shape[1])


__all__ = ["CONFLICT", "DefaultLabelTag", "FracsegDatastore"]
