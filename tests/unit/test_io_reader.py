"""Dispatch and errors of :func:`fracseg.io.read_xray`, metadata helpers, and atomic writes."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset

from fracseg.errors import FracsegError, ImageReadError
from fracseg.io import (
    SUPPORTED_SUFFIXES,
    ImageFormat,
    XrayMeta,
    atomic_path,
    is_supported_file,
    read_xray,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    return (np.arange(35, dtype=np.uint8).reshape(5, 7) * 5 + 1).astype(np.uint8)


def write_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array, mode="L").save(path, format="PNG")
    return path


def write_dicom(array: np.ndarray, path: Path) -> Path:
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=file_meta, preamble=b"\0" * 128)
    ds.SOPClassUID = file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = array.tobytes()
    ds.save_as(path, write_like_original=False)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------


def test_png_with_dcm_suffix_is_read_by_content(tmp_path: Path, grey: np.ndarray) -> None:
    path = write_png(grey, tmp_path / "image.dcm")
    img = read_xray(path)
    assert img.meta.format is ImageFormat.PNG
    assert np.array_equal(img.array, grey.astype(np.float32))


def test_png_with_nifti_suffix_is_read_by_content(tmp_path: Path, grey: np.ndarray) -> None:
    path = write_png(grey, tmp_path / "image.nii.gz")
    img = read_xray(path)
    assert img.meta.format is ImageFormat.PNG


def test_jpeg_without_suffix_is_read(tmp_path: Path, grey: np.ndarray) -> None:
    path = tmp_path / "image"
    Image.fromarray(grey, mode="L").save(path, format="JPEG", quality=95)
    img = read_xray(path)
    assert img.meta.format is ImageFormat.JPEG
    assert img.array.shape == (5, 7)


def test_dicom_without_suffix_is_read(tmp_path: Path, grey: np.ndarray) -> None:
    path = write_dicom(grey, tmp_path / "IM000001")
    img = read_xray(path)
    assert img.meta.format is ImageFormat.DICOM
    assert np.array_equal(img.array, grey.astype(np.float32))
    assert img.meta.dicom["SOPInstanceUID"] == "1.2.826.0.1.3680043.8.498.7"


def test_nifti_dispatched_by_name(tmp_path: Path, grey: np.ndarray) -> None:
    path = tmp_path / "IMAGE.NII.GZ"  # upper-case name
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "image.nii.gz"))
    (tmp_path / "image.nii.gz").rename(path)
    img = read_xray(path)
    assert img.meta.format is ImageFormat.NIFTI
    assert np.array_equal(img.array, grey.astype(np.float32))


def test_same_pixels_same_array_across_formats(tmp_path: Path, grey: np.ndarray) -> None:
    png = read_xray(write_png(grey, tmp_path / "a.png")).array
    dcm = read_xray(write_dicom(grey, tmp_path / "a.dcm")).array
    nrrd_path = tmp_path / "a.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(nrrd_path))
    nrrd = read_xray(nrrd_path).array
    assert np.array_equal(png, dcm)
    assert np.array_equal(png, nrrd)
    assert png.dtype == dcm.dtype == nrrd.dtype == np.float32


def test_string_and_path_arguments_agree(tmp_path: Path, grey: np.ndarray) -> None:
    path = write_png(grey, tmp_path / "a.png")
    assert read_xray(path).meta == read_xray(str(path)).meta


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.png"
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert info.value.path == str(path)
    assert str(info.value) == f"{path}: file does not exist"


def test_folder(tmp_path: Path) -> None:
    folder = tmp_path / "scan.dcm"
    folder.mkdir()
    with pytest.raises(ImageReadError) as info:
        read_xray(folder)
    assert str(folder) in str(info.value)
    assert "folder" in info.value.reason


@pytest.mark.parametrize("name", ["empty.jpg", "empty.png", "empty.dcm", "empty.nii", "empty"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert str(info.value).startswith(str(path))
    assert "empty" in info.value.reason


@pytest.mark.parametrize("name", ["notes.txt", "scan.jpg", "scan.png", "scan.tif"])
def test_unrecognised_content(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("Lorem ipsum dolor sit amet\n" * 10)
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert "not a recognised image file" in info.value.reason
    assert str(info.value).startswith(str(path))


def test_image_read_error_is_a_fracseg_error_and_pickles() -> None:
    error = ImageReadError(Path("/data/x.dcm"), "DICOM file has no pixel data")
    assert isinstance(error, FracsegError)
    assert error.path == "/data/x.dcm"
    assert str(error) == "/data/x.dcm: DICOM file has no pixel data"
    clone = pickle.loads(pickle.dumps(error))  # DataLoader workers send errors across processes
    assert type(clone) is ImageReadError
    assert (clone.path, clone.reason, str(clone)) == (error.path, error.reason, str(error))


# ---------------------------------------------------------------------------------------------------
# Metadata and folder-scan helpers
# ---------------------------------------------------------------------------------------------------


def test_meta_to_dict_is_json_serialisable(tmp_path: Path, grey: np.ndarray) -> None:
    path = write_dicom(grey, tmp_path / "a.dcm")
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.save_as(path, write_like_original=False)

    meta = read_xray(path).meta
    as_dict = json.loads(json.dumps(meta.to_dict()))

    assert as_dict["format"] == "dicom"
    assert as_dict["original_size"] == [5, 7]
    assert as_dict["pixel_spacing"] == [0.5, 0.25]
    assert as_dict["source"] == str(path)
    assert as_dict["dicom"]["SOPInstanceUID"] == "1.2.826.0.1.3680043.8.498.7"
    assert set(as_dict) == {f.name for f in XrayMeta.__dataclass_fields__.values()}


def test_meta_to_dict_without_spacing() -> None:
    meta = XrayMeta(source="a.png", format=ImageFormat.PNG, original_size=(2, 3))
    out = meta.to_dict()
    assert out["pixel_spacing"] is None
    assert out["format"] == "png" and isinstance(out["format"], str) and type(out["format"]) is str


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("A.JPEG", True),
        ("a.png", True),
        ("a.tif", True),
        ("a.dcm", True),
        ("a.DICOM", True),
        ("a.nii", True),
        ("a.nii.gz", True),
        ("a.nrrd", True),
        ("a.nhdr", True),
        ("IM000001", True),  # DICOM files often have no suffix
        ("notes.txt", False),
        ("a.gz", False),
        ("a.json", False),
        ("folder.d/IM000001", True),
    ],
)
def test_is_supported_file(name: str, expected: bool) -> None:
    assert is_supported_file(name) is expected
    assert is_supported_file(Path("/data") / name) is expected


def test_supported_suffixes_are_lower_case() -> None:
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)


# ---------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------


def test_atomic_path_target_appears_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out" / "result.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent  # same folder: the final rename is atomic
        assert tmp != target
        tmp.write_text('{"partial": ')
        assert not target.exists()  # nothing visible under the final name while writing
        with tmp.open("a") as fh:
            fh.write("true}")
        assert not target.exists()
        written_inode = tmp.stat().st_ino
    assert json.loads(target.read_text()) == {"partial": True}
    # The complete file was renamed into place (same inode), not copied over the target piece by piece.
    assert target.stat().st_ino == written_inode
    assert listing(target.parent) == ["result.json"]


def test_atomic_path_replaces_existing_only_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["result.txt"]


def test_atomic_path_exception_leaves_no_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "result.png"
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(target) as tmp:
        tmp.write_bytes(b"\x89PNG half")
        raise RuntimeError("writer failed")
    assert not target.exists()
    assert listing(tmp_path) == []


def test_atomic_path_exception_keeps_existing_content(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_bytes(b"previous result\n")
    before = target.stat().st_mtime_ns
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"previous result\n"
    assert target.stat().st_mtime_ns == before
    assert listing(tmp_path) == ["result.txt"]


def test_atomic_path_writer_that_removes_its_file(tmp_path: Path) -> None:
    target = tmp_path / "result.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError), atomic_path(target) as tmp:
        tmp.unlink()  # nothing to rename: the failure surfaces, the old file stays
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["result.bin"]


def test_atomic_path_rename_failure_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("x")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("data")
    assert listing(tmp_path) == ["taken"]
    assert listing(target) == ["inside"]


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.png", "mask.nrrd"])
def test_atomic_path_keeps_suffix_for_format_sniffing_writers(
    tmp_path: Path, grey: np.ndarray, name: str
) -> None:
    target = tmp_path / name
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(name.split(".", 1)[1])
        if name.endswith(".png"):
            Image.fromarray(grey, mode="L").save(tmp)  # Pillow picks the format from the suffix
        else:
            sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp))  # so does SimpleITK
    assert listing(tmp_path) == [name]
    assert np.array_equal(read_xray(target).array, grey.astype(np.float32))


def test_write_bytes_and_text_atomic(tmp_path: Path) -> None:
    write_bytes_atomic(tmp_path / "a" / "b.bin", b"\x00\x01\xff")
    write_text_atomic(tmp_path / "c.txt", "Fraktur ✓\n")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01\xff"
    assert (tmp_path / "c.txt").read_bytes() == "Fraktur ✓\n".encode()
    assert listing(tmp_path) == ["a", "c.txt"]


def test_write_json_atomic_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    write_json_atomic(first, {"b": [1, 2], "a": {"z": 1.5, "y": None}})
    write_json_atomic(second, {"a": {"y": None, "z": 1.5}, "b": [1, 2]})  # same content, other order
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert text.endswith("}\n")
    assert text.index('"a"') < text.index('"b"') and text.index('"y"') < text.index('"z"')
    assert json.loads(text) == {"a": {"y": None, "z": 1.5}, "b": [1, 2]}


def test_write_json_atomic_unserialisable_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_json_atomic(target, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert listing(tmp_path) == ["report.json"]


def test_atomic_write_leaves_no_temp_files_after_many_writes(tmp_path: Path) -> None:
    target = tmp_path / "counter.txt"
    for i in range(20):
        write_text_atomic(target, str(i))
    assert target.read_text() == "19"
    assert os.listdir(tmp_path) == ["counter.txt"]


def test_dangling_symlink_is_named_as_such(tmp_path: Path) -> None:
    link = tmp_path / "scan.png"
    link.symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageReadError) as info:
        read_xray(link)
    assert str(info.value).startswith(str(link)) and "broken symbolic link" in info.value.reason
    assert "gone.png" in info.value.reason


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` (no pixel data: readers must refuse before decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 30_000])  # above our limit; above Pillow's own bomb limit
def test_huge_png_is_refused_in_our_words(tmp_path: Path, side: int) -> None:
    path = _png_header_only(tmp_path / "huge.png", side, side)
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert f"{side * side:,} pixels, above the limit of 50,000,000" in info.value.reason, info.value.reason
    assert "could be decompression bomb DOS attack" not in info.value.reason  # not Pillow's message
