"""DICOM reader for planar X-rays: CR, DX (for presentation and for processing), RG and secondary capture.

Pixel pipeline, in the order PS3.3 C.11 / C.7.6.3 define it: decode (compressed transfer syntaxes via
pylibjpeg), Modality LUT (rescale slope/intercept or LUT sequence), VOI LUT (LUT sequence or the first
window) when present, then MONOCHROME1 inversion so that bright always means dense.
"""

from __future__ import annotations

import logging
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut, convert_color_space
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from fracseg.errors import ImageReadError
from fracseg.io.colour import rgb_to_grey
from fracseg.io.limits import DEFAULT_MAX_PIXELS, check_pixel_limit
from fracseg.io.meta import ImageFormat, XrayImage, XrayMeta

logger = logging.getLogger(__name__)

#: Modalities of planar radiographs we segment.
SUPPORTED_MODALITIES = frozenset({"CR", "DX", "RG"})
#: Secondary capture storage SOP classes (single-frame and the multi-frame family, refused later if >1 frame).
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
_KEPT_UIDS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "PatientID",
    "PatientName",
    "StudyID",
    "AccessionNumber",
)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _has_dicm_preamble(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_dicom(path: str | Path) -> bool:
    """Cheap test: ``DICM`` preamble, or a raw (no file meta) dataset that starts with a group-0008 tag."""
    path = str(path)
    if _has_dicm_preamble(path):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    # Raw ACR-NEMA style files start with the lowest tag, normally (0008,xxxx), little endian.
    return len(head) == 8 and head[0:2] in (b"\x08\x00", b"\x00\x08")


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a dataset read without file meta a transfer syntax so its pixels can be decoded."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        return
    if file_meta is None:
        ds.file_meta = FileMetaDataset()
    if ds.is_little_endian in (None, True) and ds.is_implicit_VR in (None, True):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif ds.is_little_endian in (None, True):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    logger.info(
        "%s: no DICOM file meta; decoding as %s",
        getattr(ds, "filename", "?"),
        ds.file_meta.TransferSyntaxUID.name,
    )


def _check_modality(path: str, ds: Dataset) -> str | None:
    modality = str(ds.get("Modality", "") or "").upper() or None
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class in SECONDARY_CAPTURE_SOP_CLASSES:
        return modality
    if modality is None:
        logger.warning("%s: no Modality attribute; treating it as a radiograph", path)
        return None
    if modality not in SUPPORTED_MODALITIES:
        raise ImageReadError(
            path,
            f"unsupported modality {modality} (expected one of {', '.join(sorted(SUPPORTED_MODALITIES))} "
            "or a secondary capture)",
        )
    return modality


def valid_spacing(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    """``(row, column)`` spacing in mm from ``ds``'s ``keyword`` when it is two positive finite numbers,
    else ``None`` (absent, zero, negative, one value, text that is no number: all seen in exported CRs).
    Reads the raw value too, so a malformed element never raises."""
    try:
        value = ds.get(keyword)
        if value is None:
            return None
        values = [value] if isinstance(value, str | bytes | float | int) else list(value)
        if len(values) == 1 and isinstance(values[0], str | bytes):
            text = values[0].decode("ascii", "replace") if isinstance(values[0], bytes) else values[0]
            values = text.split("\\")
        numbers = [float(v) for v in values]
    except Exception:  # an undecodable value is no spacing
        return None
    if len(numbers) != 2 or not all(np.isfinite(v) and v > 0 for v in numbers):
        return None
    return numbers[0], numbers[1]


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = valid_spacing(ds, keyword)
        if spacing is not None:
            return spacing
    return None


def _mask_unused_bits(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    """Keep only the ``BitsStored`` low bits of each stored value (sign-extended when signed).

    PS3.5 8.1.1: bits above the high bit are not part of the value and may hold anything (overlays,
    junk); treating them as value bits turns a 12-bit image into nonsense.
    """
    stored = int(ds.get("BitsStored", 0) or 0)
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    if not 0 < stored < allocated or pixels.dtype.kind not in "iu":
        return pixels
    low = np.asarray(pixels).astype(np.int64) & ((1 << stored) - 1)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        sign = 1 << (stored - 1)
        low = (low ^ sign) - sign
    return (
        low.astype(np.int32) if int(ds.get("PixelRepresentation", 0) or 0) == 1 else low.astype(pixels.dtype)
    )


def _check_pixel_data_length(path: str, ds: Dataset) -> None:
    """Name a truncated file as such: native pixel data shorter than Rows x Columns x samples needs."""
    if ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
        return
    bits = int(ds.get("BitsAllocated", 0) or 0)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected = (rows * cols * samples * bits + 7) // 8
    got = len(ds.PixelData or b"")
    if expected > 0 and got < expected:
        raise ImageReadError(
            path, f"truncated DICOM file: its pixel data holds {got:,} of the {expected:,} bytes it needs"
        )


#: How pydicom words a data element cut short (it warns and returns what it read so far).
_EARLY_END = ("Unexpected end of file", "End of file reached before")


def read_dicom_dataset(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """``dcmread`` with ``force=True`` (files without a preamble/file meta are common), errors mapped.

    Raises:
        ImageReadError: unreadable, or truncated (a data element ends past the end of the file).
    """
    path = str(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError, struct.error) as exc:
        if _has_dicm_preamble(path) and isinstance(exc, EOFError | struct.error | ValueError | OSError):
            # A proper DICOM file whose data elements end early: the usual result of an interrupted copy.
            raise ImageReadError(
                path, f"truncated or corrupt DICOM file (data ends early: {type(exc).__name__}: {exc})"
            ) from None
        raise ImageReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    for warning in caught:
        text = str(warning.message)
        if text.startswith(_EARLY_END) and (len(ds) > 0 or _has_dicm_preamble(path)):
            raise ImageReadError(path, f"truncated DICOM file ({text.split(' in file ')[0]})")
    return ds


def read_dicom(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XrayImage:
    """Read a single-frame planar X-ray DICOM file.

    Raises:
        ImageReadError: not DICOM, no pixel data, multi-frame, unsupported modality, oversize, or
            pixel data that cannot be decoded.
    """
    with warnings.catch_warnings():
        # pydicom warns about every non-conformant value (UIDs, VRs) of real-world files; we keep the
        # file and log only what changes the pixels.
        warnings.simplefilter("ignore")
        return _read_dicom(str(path), max_pixels)


def _read_dicom(path: str, max_pixels: int) -> XrayImage:
    ds = read_dicom_dataset(path)
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if len(ds) == 0 and _has_dicm_preamble(path):
            raise ImageReadError(
                path, "truncated DICOM file: it ends within or right after its file meta header"
            )
        if len(ds) == 0 or ("SOPClassUID" not in ds and "Rows" not in ds and not _has_dicm_preamble(path)):
            raise ImageReadError(path, "not a recognised image file (neither raster nor DICOM content)")
        raise ImageReadError(path, "DICOM file has no pixel data (absent, or the file is truncated)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            path, f"multi-frame DICOM ({frames} frames) is not supported; export single frames"
        )
    modality = _check_modality(path, ds)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_pixel_limit(path, rows, cols, max_pixels)
    _ensure_transfer_syntax(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    tsyntax = ds.file_meta.TransferSyntaxUID
    _check_pixel_data_length(path, ds)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/ValueError/NotImplementedError/AttributeError here
        raise ImageReadError(
            path, f"cannot decode pixel data ({tsyntax.name}): {type(exc).__name__}: {exc}"
        ) from None
    pixels = _mask_unused_bits(pixels, ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    folded = 1
    if samples == 3:
        if photometric.startswith("YBR") and not tsyntax.is_compressed:
            pixels = convert_color_space(pixels, photometric, "RGB")
        pixels = rgb_to_grey(pixels)
        folded = 3
    elif samples != 1:
        raise ImageReadError(path, f"unsupported SamplesPerPixel {samples}")
    if pixels.ndim != 2:
        raise ImageReadError(path, f"expected a 2D frame, decoded shape {tuple(pixels.shape)}")
    voi_applied = False
    if folded == 1:
        pixels = apply_modality_lut(pixels, ds)
        if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
            try:
                pixels = apply_voi_lut(pixels, ds, index=0)
                voi_applied = True
            except Exception as exc:  # a broken VOI LUT should not cost the image: fall back to raw values
                logger.warning("%s: VOI LUT/window not applied (%s)", path, exc)
    image = np.asarray(pixels, dtype=np.float32)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        # Reflect within the observed range: monotonic, keeps the value range, and the percentile
        # normalisation downstream makes the exact reflection point irrelevant.
        image = (float(image.max()) + float(image.min())) - image
    uids = {k: str(ds.get(k)) for k in _KEPT_UIDS if ds.get(k) not in (None, "")}
    meta = XrayMeta(
        source=path,
        format=ImageFormat.DICOM,
        original_size=(int(image.shape[0]), int(image.shape[1])),
        photometric=photometric,
        inverted=inverted,
        pixel_spacing=_pixel_spacing(ds),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        channels_folded=folded,
        modality=modality,
        voi_applied=voi_applied,
        dicom=uids,
    )
    return XrayImage(np.ascontiguousarray(image), meta)
