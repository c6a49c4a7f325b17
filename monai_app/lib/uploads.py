"""What the app accepts from clients, and the file formats it stores.

Conventions (the page and 3D Slicer rely on them):

- **Ids and tags.** An image id is 1-128 characters of ``A-Z a-z 0-9 _ . -``, starting with a letter or
  digit and without ``..``; a label tag is 1-32 characters of ``A-Z a-z 0-9 _ -``. Anything else
  (``../``, absolute paths, ``/``, ``\\``, spaces, NUL, ...) is refused with 400 before any path is built.
- **Images** (``PUT /datastore/image``, the sample seeding): ``.png .jpg .jpeg .dcm .dicom .nii .nii.gz
  .nrrd`` up to :data:`MAX_IMAGE_BYTES`, read by :func:`fracseg.io.read_xray`; an unreadable file is
  refused with 422 naming it and the reason. A PNG/JPEG that is already in its displayed frame (no EXIF
  rotation) is stored byte for byte. Any other image (DICOM, an EXIF-rotated JPEG, NIfTI, NRRD) is
  stored as the reader's output: ``<id>.nii.gz``, float32, ITK size ``(W, H, 1)`` (voxel ``i`` =
  column, ``j`` = row), pixel spacing kept. The reader reads that file back to the same array, so the
  model sees exactly what it would see in the original, and 3D Slicer opens it as a one-slice volume.
- **Labels** (``PUT /datastore/label``, inference results): a 2D mask at the image's displayed size,
  ``(H, W)`` rows x columns; any value > 0 is fracture. Accepted as ``.png`` (8/16-bit grey, pixel
  ``(row, col)``; what the page sends) or ``.nii.gz``/``.nii``/``.nrrd`` of ITK size ``(W, H)`` or
  ``(W, H, 1)`` (voxel ``(i, j, 0)`` = ``(col, row)``; what 3D Slicer's module saves), up to
  :data:`MAX_LABEL_BYTES`. Stored with label value **1** in the image's own container: ``<id>.png``
  (uint8) for PNG/JPEG images, ``<id>.nii.gz`` (uint8, the image's spacing/origin/direction) for
  NIfTI-stored images, so a viewer overlays it on the image without resampling.
- **Points** (``fracture_interactive``): ``[x, y]`` or ``[x, y, z]`` with ``x`` = column and ``y`` = row
  of the displayed image (0-based; Slicer's IJK of the one-slice volume, ``z`` = 0).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fracseg.errors import ImageReadError
from fracseg.io import ImageFormat, XrayImage, atomic_path, read_xray
from lib.errors import (
    BAD_REQUEST,
    PAYLOAD_TOO_LARGE,
    UNPROCESSABLE,
    UNSUPPORTED_MEDIA_TYPE,
    RequestRejected,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii.gz", ".nii", ".nrrd")
LABEL_SUFFIXES = (".png", ".nii.gz", ".nii", ".nrrd")
#: Largest image upload: a 50-megapixel 16-bit DICOM with headroom.
MAX_IMAGE_BYTES = 128 * 1024 * 1024
#: Largest label upload: an uncompressed 50-megapixel 8-bit mask with headroom.
MAX_LABEL_BYTES = 64 * 1024 * 1024
#: Suffix of images stored as the reader's output (see the module docstring).
VOLUME_SUFFIX = ".nii.gz"
#: Value of fracture pixels in stored labels and inference results.
FRACTURE_VALUE = 1

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_TAG = re.compile(r"[A-Za-z0-9_-]{1,32}")


def check_image_id(value: object, field: str = "image") -> str:
    """``value`` if it is a valid image id, else :class:`RequestRejected` 400 naming ``field``."""
    if not isinstance(value, str) or not _ID.fullmatch(value) or ".." in value:
        raise RequestRejected(
            BAD_REQUEST,
            f"{field}: invalid image id {str(value)[:80]!r} (1-128 characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit, no '..')",
        )
    return value


def check_tag(value: object) -> str:
    """``value`` if it is a valid label tag, else :class:`RequestRejected` 400."""
    if not isinstance(value, str) or not _TAG.fullmatch(value):
        raise RequestRejected(
            BAD_REQUEST, f"tag: invalid label tag {str(value)[:40]!r} (1-32 characters of A-Z a-z 0-9 _ -)"
        )
    return value


def suffix_of(name: str, allowed: Sequence[str]) -> str | None:
    """The entry of ``allowed`` that ``name`` ends with (case-insensitive), or ``None``."""
    lower = name.lower()
    return next((s for s in allowed if lower.endswith(s)), None)


def check_upload(path: str | os.PathLike[str], what: str, allowed: Sequence[str], max_bytes: int) -> str:
    """Type and size checks of an uploaded file; returns its (lower-case) suffix from ``allowed``.

    Raises:
        RequestRejected: 415 for a suffix not in ``allowed``, 413 above ``max_bytes``, 422 when empty.
    """
    suffix = suffix_of(os.fspath(path), allowed)
    if suffix is None:
        raise RequestRejected(
            UNSUPPORTED_MEDIA_TYPE,
            f"{what}: unsupported file type {Path(path).name[-40:]!r}; expected one of {', '.join(allowed)}",
        )
    size = os.path.getsize(path)
    if size > max_bytes:
        raise RequestRejected(
            PAYLOAD_TOO_LARGE, f"{what}: file is {size:,} bytes, above the limit of {max_bytes:,}"
        )
    if size == 0:
        raise RequestRejected(UNPROCESSABLE, f"{what}: file is empty")
    return suffix


def read_image(path: str | os.PathLike[str], what: str) -> XrayImage:
    """Read an image with the fracseg reader; unreadable input is :class:`RequestRejected` 422."""
    try:
        return read_xray(path)
    except ImageReadError as exc:
        raise RequestRejected(UNPROCESSABLE, f"{what}: {exc.reason}") from None


def keeps_original_bytes(xray: XrayImage) -> bool:
    """Whether an image can be stored unchanged: a PNG/JPEG already in its displayed frame."""
    return xray.meta.format in (ImageFormat.JPEG, ImageFormat.PNG) and not xray.meta.transposed


def write_volume(path: str | os.PathLike[str], array: np.ndarray, spacing: Sequence[float] | None) -> None:
    """Write an ``(H, W)`` array atomically as NIfTI/NRRD of ITK size ``(W, H, 1)``.

    Args:
        path: destination (``.nii.gz``, ``.nii`` or ``.nrrd``).
        array: the pixels, rows x columns; the dtype is kept.
        spacing: ``(row, column)`` spacing in mm, or ``None`` for 1 mm.
    """
    import SimpleITK as sitk  # noqa: N813 (the conventional alias)

    image = sitk.GetImageFromArray(np.ascontiguousarray(array)[None])
    if spacing is not None:
        image.SetSpacing((float(spacing[1]), float(spacing[0]), 1.0))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)


def store_image(source: str | os.PathLike[str], xray: XrayImage, dest_stem: Path) -> Path:
    """Store an uploaded image as ``dest_stem`` + its stored suffix (module docstring); returns the path."""
    if keeps_original_bytes(xray):
        suffix = ".png" if xray.meta.format is ImageFormat.PNG else ".jpg"
        dest = dest_stem.with_name(dest_stem.name + suffix)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(Path(source).read_bytes())
        return dest
    dest = dest_stem.with_name(dest_stem.name + VOLUME_SUFFIX)
    write_volume(dest, xray.array.astype(np.float32), xray.meta.pixel_spacing)
    return dest


def read_mask(path: str | os.PathLike[str], what: str, shape: tuple[int, int]) -> np.ndarray:
    """Read a label file (module docstring) as an ``(H, W)`` bool mask of the given image shape.

    Raises:
        RequestRejected: 422 for an unreadable file, a size other than the image's, or non-finite values.
    """
    array = read_image(path, what).array
    if tuple(array.shape) != tuple(shape):
        raise RequestRejected(
            UNPROCESSABLE,
            f"{what}: label is {array.shape[1]}x{array.shape[0]} (width x height), the image is "
            f"{shape[1]}x{shape[0]}",
        )
    if not np.isfinite(array).all():
        raise RequestRejected(UNPROCESSABLE, f"{what}: label has non-finite values")
    return array > 0


def label_suffix_for(image_path: str | os.PathLike[str]) -> str:
    """The container of labels of an image: NIfTI for NIfTI/NRRD-stored images, PNG otherwise."""
    return VOLUME_SUFFIX if suffix_of(os.fspath(image_path), (".nii.gz", ".nii", ".nrrd")) else ".png"


def write_mask(mask: np.ndarray, image_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Write an ``(H, W)`` mask atomically to ``dest`` with label value :data:`FRACTURE_VALUE` (uint8).

    ``.png`` writes a grey PNG; ``.nii.gz``/``.nii``/``.nrrd`` a volume of ITK size ``(W, H, 1)`` that
    takes spacing, origin and direction from ``image_path`` when that is a volume of the same size.
    """
    values = (np.asarray(mask) > 0).astype(np.uint8) * FRACTURE_VALUE
    if suffix_of(os.fspath(dest), (".png",)):
        with atomic_path(dest) as tmp:
            Image.fromarray(values, mode="L").save(tmp, format="PNG")
        return
    import SimpleITK as sitk  # noqa: N813 (the conventional alias)

    label = sitk.GetImageFromArray(values[None])
    if suffix_of(os.fspath(image_path), (".nii.gz", ".nii", ".nrrd")):
        reader = sitk.ImageFileReader()
        reader.SetFileName(os.fspath(image_path))
        reader.ReadImageInformation()
        size = list(reader.GetSize()) + [1] * (3 - reader.GetDimension())
        if size[:3] == list(label.GetSize()) and reader.GetDimension() == 3:
            label.SetSpacing(reader.GetSpacing())
            label.SetOrigin(reader.GetOrigin())
            label.SetDirection(reader.GetDirection())
    with atomic_path(dest) as tmp:
        sitk.WriteImage(label, str(tmp), True)
