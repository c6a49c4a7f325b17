"""Make the demo DICOM in data/samples from a FracAtlas JPEG (CC BY 4.0).

Writes a CR image the way many CR plates store it: MONOCHROME1 (high value = dark), 12 bits stored in
16, explicit VR little endian, with deterministic UIDs so re-running gives identical bytes::

    python scripts/make_sample_dicom.py ../shared/data/fracatlas/images/Fractured/IMG0003766.jpg \
        data/samples/IMG0003766_CR.dcm
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from fracseg.io import read_xray

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def make_cr(source: Path, target: Path) -> None:
    image = read_xray(source)
    grey = image.array
    scaled = (grey - grey.min()) / max(float(grey.max() - grey.min()), 1e-6)
    pixels = np.round((1.0 - scaled) * 4095).astype(np.uint16)  # MONOCHROME1: invert
    stem = source.stem
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[stem, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(target), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[stem, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[stem, "series"])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[stem, "for"])
    ds.Modality = "CR"
    ds.PatientName = "FRACATLAS^SAMPLE"
    ds.PatientID = f"FA-{stem}"
    ds.StudyDate = ds.SeriesDate = datetime.date(2023, 8, 8).strftime("%Y%m%d")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyTime = ds.SeriesTime = "000000"
    ds.ImageComments = (
        f"Made from FracAtlas {source.name} (Abedeen et al., Sci Data 10:521, 2023; "
        "CC BY 4.0) by fracseg scripts/make_sample_dicom.py"
    )
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = pixels.tobytes()
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, write_like_original=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    make_cr(args.source, args.target)


if __name__ == "__main__":
    main()
