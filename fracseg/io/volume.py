"""NIfTI / NRRD reader for 2D images, including single-slice volumes.

MONAI Label's DICOMweb datastore converts a single-frame X-ray to a volume of ITK size ``(W, H, 1)``;
SimpleITK returns its voxels as a numpy array ``(1, H, W)`` in stored order, which is the DICOM pixel
grid. Singleton axes are dropped; a volume with more than one slice is refused.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from fracseg.errors import ImageReadError
from fracseg.io.colour import rgb_to_grey
from fracseg.io.limits import DEFAULT_MAX_PIXELS, check_pixel_limit
from fracseg.io.meta import ImageFormat, XrayImage, XrayMeta

VOLUME_SUFFIXES = {
    ".nii": ImageFormat.NIFTI,
    ".nii.gz": ImageFormat.NIFTI,
    ".nrrd": ImageFormat.NRRD,
    ".nhdr": ImageFormat.NRRD,
}


def volume_format(path: str | Path) -> ImageFormat | None:
    """The volume format implied by the file name, or ``None``."""
    name = str(path).lower()
    for suffix, fmt in VOLUME_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def _nifti_truncation(path: str) -> str | None:
    """A reason when a NIfTI file holds fewer bytes than its header declares, else ``None``.

    ITK's NIfTI reader zero-fills the missing voxels of a truncated ``.nii``/``.nii.gz`` without an
    error; a silent partial image is refused here as it is for truncated JPEG/PNG files.
    """
    compressed = path.lower().endswith(".gz")
    try:
        with (gzip.open if compressed else open)(path, "rb") as fh:
            head = fh.read(544)
            available = len(head)
            if compressed:  # the uncompressed length is only known by decompressing the stream
                while chunk := fh.read(1 << 20):
                    available += len(chunk)
            else:
                available = os.path.getsize(path)
    except (OSError, EOFError, zlib.error) as exc:
        return f"truncated or corrupt file ({exc})"
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:  # NIfTI-1
            ndim, *dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = struct.unpack(endian + "f", head[108:112])[0]
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:  # NIfTI-2
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            ndim, *dims = struct.unpack(endian + "8q", head[16:80])
            offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        return None  # not a single-file NIfTI header: leave the verdict to ITK
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    expected = int(offset) + int(np.prod([max(int(d), 1) for d in dims[:ndim]], dtype=np.int64)) * bitpix // 8
    if available < expected:
        return f"truncated NIfTI data ({available:,} of {expected:,} bytes present)"
    return None


def read_volume(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XrayImage:
    """Read a 2D NIfTI/NRRD image (or a 3D one with a single slice) as ``(H, W)`` float32."""
    # Imported here, not at module level: training and DICOM/JPEG inference never need ITK, and the
    # GPU machine that trains the release model runs fracseg without it.
    import SimpleITK as sitk  # noqa: N813 (the conventional alias)

    path = str(path)
    fmt = volume_format(path) or ImageFormat.NIFTI
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(
            path, f"not a readable {fmt.value} file ({str(exc).strip().splitlines()[-1]})"
        ) from None
    size = list(reader.GetSize())  # ITK order: x (columns), y (rows), z...
    spacing = list(reader.GetSpacing())
    non_singleton = [i for i, s in enumerate(size) if s > 1]
    if len(non_singleton) > 2:
        raise ImageReadError(path, f"{len(size)}D volume of size {tuple(size)} is not a single 2D image")
    if len(size) > 2 and any(size[i] > 1 for i in range(2, len(size))):
        raise ImageReadError(path, f"volume of size {tuple(size)} has its image outside the first two axes")
    check_pixel_limit(path, size[1], size[0], max_pixels)
    if fmt is ImageFormat.NIFTI and (truncation := _nifti_truncation(path)) is not None:
        raise ImageReadError(path, truncation)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(
            path, f"cannot decode {fmt.value} data ({str(exc).strip().splitlines()[-1]})"
        ) from None
    array = sitk.GetArrayFromImage(image)  # (..., y, x[, components])
    folded = 1
    if image.GetNumberOfComponentsPerPixel() > 1:
        folded = image.GetNumberOfComponentsPerPixel()
        array = rgb_to_grey(array) if folded >= 3 else array[..., 0]
    squeezed = array.reshape(array.shape[-2:]) if array.ndim > 2 else array
    meta = XrayMeta(
        source=path,
        format=fmt,
        original_size=(int(squeezed.shape[0]), int(squeezed.shape[1])),
        transposed=False,
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        bits_stored=int(np.dtype(array.dtype).itemsize * 8),
        channels_folded=folded,
    )
    return XrayImage(np.ascontiguousarray(squeezed, dtype=np.float32), meta)
