"""Synthetic DICOM datasets for tests (pydicom 2.4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.2"
SOP_UID = "1.2.826.0.1.3680043.8.498.1.2.3"
FOR_UID = "1.2.826.0.1.3680043.8.498.1.9"


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    modality: str | None = "CR",
    sop_class: str = CR_IMAGE_STORAGE,
    bits_stored: int | None = None,
) -> FileDataset:
    """A minimal, valid single-frame image dataset holding ``pixels`` (uint8/uint16, (H, W) or (H, W, 3))."""
    pixels = np.ascontiguousarray(pixels)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = SOP_UID
    file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("synthetic.dcm", {}, file_meta=file_meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = FOR_UID
    ds.PatientID = "FRACSEG-TEST"
    ds.PatientName = "Test^Patient"
    if modality is not None:
        ds.Modality = modality
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    bits_allocated = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if pixels.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = "RGB"
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
    ds.PixelData = pixels.tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, write_like_original=False)
    return path


JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.91"


def make_lossy_cr(pixels: np.ndarray, transfer_syntax: str, *, method: str | None = None) -> FileDataset:
    """A CR whose 8-bit ``pixels`` are lossy compressed (Pillow's baseline JPEG or irreversible JPEG 2000)
    and encapsulated, marked ``LossyImageCompression`` ``01`` with (``method``) or, as many archives
    write it, without ``LossyImageCompressionMethod`` and ratio."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L")
    if transfer_syntax == JPEG_BASELINE:
        image.save(buffer, format="JPEG", quality=80)
    elif transfer_syntax == JPEG_2000:
        image.save(buffer, format="JPEG2000", no_jp2=True, irreversible=True, quality_layers=[20])
    else:
        raise ValueError(f"unsupported transfer syntax {transfer_syntax}")
    ds = make_dataset(np.asarray(pixels, dtype=np.uint8))
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "01"
    if method is not None:
        ds.LossyImageCompressionMethod = method
    return ds


def save_with_raw_value(ds: Dataset, path: Path, keyword: str, raw: bytes) -> Path:
    """Save ``ds`` with ``keyword``'s value replaced by ``raw`` bytes (no longer than the value pydicom
    writes for ``ds``'s own value; padded with spaces), e.g. text that is no number in a DS element, which
    pydicom refuses to set but exported files contain."""
    written = save(ds, path).read_bytes()
    value = ds[keyword].value
    encoded = "\\".join(str(v) for v in value) if not isinstance(value, str) else value
    encoded_bytes = encoded.encode("ascii")
    if len(encoded_bytes) % 2:
        encoded_bytes += b" "
    raw = raw.ljust(len(encoded_bytes))
    assert len(raw) == len(encoded_bytes) and written.count(encoded_bytes) == 1, (raw, encoded_bytes)
    path.write_bytes(written.replace(encoded_bytes, raw))
    return path
