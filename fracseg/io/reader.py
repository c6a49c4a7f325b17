"""One entry point that turns any supported file into an :class:`~fracseg.io.meta.XrayImage`.

The reader is chosen by content first (JPEG/PNG signatures, the DICOM ``DICM`` marker), then by file
name (NIfTI/NRRD, ``.dcm``), then DICOM without a preamble is tried; anything else is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from fracseg.errors import ImageReadError
from fracseg.io.dicom import looks_like_dicom, read_dicom
from fracseg.io.limits import DEFAULT_MAX_PIXELS
from fracseg.io.meta import XrayImage
from fracseg.io.raster import read_raster
from fracseg.io.volume import read_volume, volume_format

_RASTER_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
    b"BM",  # BMP
)
#: File name endings the folder scanners pick up.
SUPPORTED_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".tif",
    ".tiff",
    ".bmp",
    ".dcm",
    ".dicom",
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
)


def read_xray(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XrayImage:
    """Read PNG/JPEG, DICOM, NIfTI or NRRD into a 2D float32 image in the displayed frame.

    Args:
        path: the file to read.
        max_pixels: refuse (before decoding) images with more pixels than this.

    Returns:
        An :class:`XrayImage` whose ``array`` is ``(H, W)`` float32, bright = dense.

    Raises:
        ImageReadError: for any input that cannot be read; the message names the file and the reason.
    """
    path = os.fspath(path)
    if os.path.islink(path) and not os.path.exists(path):
        raise ImageReadError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)")
    if not os.path.exists(path):
        raise ImageReadError(path, "file does not exist")
    if os.path.isdir(path):
        raise ImageReadError(path, "is a folder, not an image file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc.strerror})") from None
    if not head:
        raise ImageReadError(path, "file is empty")
    if any(head.startswith(m) for m in _RASTER_MAGIC):
        return read_raster(path, max_pixels=max_pixels)
    if volume_format(path) is not None:
        return read_volume(path, max_pixels=max_pixels)
    if looks_like_dicom(path) or Path(path).suffix.lower() in (".dcm", ".dicom", ""):
        return read_dicom(path, max_pixels=max_pixels)
    raise ImageReadError(path, "not a recognised image file (expected PNG, JPEG, DICOM, NIfTI or NRRD)")


def is_supported_file(path: str | os.PathLike[str]) -> bool:
    """Whether a folder scan should pick up ``path`` (by name; DICOM files often have no suffix)."""
    name = os.fspath(path).lower()
    return name.endswith(SUPPORTED_SUFFIXES) or "." not in os.path.basename(name)
