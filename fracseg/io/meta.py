"""The metadata contract shared by every reader.

Every reader returns an :class:`XrayImage`: a 2D ``float32`` array of shape ``(H, W)`` (rows, columns,
in the frame a viewer displays: EXIF orientation applied, DICOM pixel grid) where larger values are
brighter (MONOCHROME2 sense), plus an :class:`XrayMeta` describing where it came from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class ImageFormat(StrEnum):
    """Container formats fracseg reads."""

    JPEG = "jpeg"
    PNG = "png"
    DICOM = "dicom"
    NIFTI = "nifti"
    NRRD = "nrrd"
    OTHER_RASTER = "raster"


@dataclass(frozen=True)
class XrayMeta:
    """What is known about an image besides its pixels.

    Attributes:
        source: path of the file read.
        format: container format.
        original_size: ``(height, width)`` of the returned array, i.e. as displayed.
        photometric: photometric interpretation of the stored pixels (``MONOCHROME1``, ``MONOCHROME2``,
            ``RGB``, ...); raster greyscale images report ``MONOCHROME2``.
        inverted: the stored values were inverted to make bright mean dense (MONOCHROME1).
        transposed: a geometric transform (EXIF rotation/flip, axis reorder) was applied to reach the
            displayed frame.
        exif_orientation: EXIF orientation tag (1-8) when the file had one.
        pixel_spacing: ``(row, column)`` spacing in mm when the file states it.
        bits_stored: significant bits per sample of the stored pixels (8, 10, 12, 16, ...).
        channels_folded: number of colour channels folded to one grey channel (1 when none).
        modality: DICOM modality when known.
        voi_applied: a DICOM VOI LUT or window was applied.
        dicom: DICOM identifiers kept for writing results back (``SOPInstanceUID``, ``StudyInstanceUID``,
            ``SeriesInstanceUID``, ``PatientID``, ``SOPClassUID``, ``FrameOfReferenceUID``).
    """

    source: str
    format: ImageFormat
    original_size: tuple[int, int]
    photometric: str = "MONOCHROME2"
    inverted: bool = False
    transposed: bool = False
    exif_orientation: int | None = None
    pixel_spacing: tuple[float, float] | None = None
    bits_stored: int = 8
    channels_folded: int = 1
    modality: str | None = None
    voi_applied: bool = False
    dicom: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dictionary (JSON-serialisable, safe to collate in a MONAI ``MetaTensor``)."""
        out = dataclasses.asdict(self)
        out["format"] = str(self.format)
        out["original_size"] = list(self.original_size)
        if self.pixel_spacing is not None:
            out["pixel_spacing"] = list(self.pixel_spacing)
        return out

    def to_collatable_dict(self) -> dict[str, Any]:
        """Like :meth:`to_dict` but with the same keys and no ``None`` for every image, so that PyTorch's
        ``default_collate`` can batch metadata of JPEG and DICOM inputs together: unknown spacing is
        ``[nan, nan]``, no EXIF orientation is ``1``, unknown modality is ``""`` and the DICOM
        identifiers are one JSON string (``dicom_json``)."""
        out = self.to_dict()
        out["pixel_spacing"] = list(self.pixel_spacing) if self.pixel_spacing else [float("nan")] * 2
        out["exif_orientation"] = self.exif_orientation or 1
        out["modality"] = self.modality or ""
        out["dicom_json"] = json.dumps(out.pop("dicom"), sort_keys=True)
        return out


@dataclass(frozen=True)
class XrayImage:
    """A decoded X-ray: ``array`` is ``float32`` with shape ``(H, W)``; see module docstring."""

    array: np.ndarray
    meta: XrayMeta
