"""A corpus of awkward DICOM sources through one ``--dicom-seg`` batch (issue 27): every SEG and SR written
is dciodvfy-clean, or the input is refused with one clear line in ``predictions.csv``; the other inputs
of the batch are unaffected.

Small synthetic images (a few dozen pixels), one batch run with the shipped model (about a minute on two
CPU cores).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset

from fracseg.inference import Predictor
from fracseg.inference.batch import run_batch
from tests.helpers.dciodvfy import dciodvfy_errors
from tests.helpers.dicom_factory import JPEG_2000, make_dataset, make_lossy_cr, save, save_with_raw_value

pytestmark = pytest.mark.integration


def _pixels(rows: int, cols: int, seed: int, dtype=np.uint8, top: int = 250) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(rows), np.arange(cols)) * (top // (rows + cols))
    return (ramp + rng.integers(0, top // 5, (rows, cols))).astype(dtype)


def _cr(**attributes) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        ds = make_dataset(_pixels(48, 64, seed=len(path.name)))
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        return save(ds, path)

    return build


def _garbage_spacing(path: Path) -> Path:
    ds = make_dataset(_pixels(48, 64, seed=4))
    ds.PixelSpacing = [0.125, 0.125]
    return save_with_raw_value(ds, path, "PixelSpacing", b"abc\\de.f.g")


def _monochrome1(path: Path) -> Path:
    return save(make_dataset(_pixels(48, 64, seed=5), photometric="MONOCHROME1"), path)


def _j2k(method: str | None) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        ds = make_lossy_cr(_pixels(48, 64, seed=6), JPEG_2000, method=method)
        ds.PixelSpacing = [0, 0]  # the held-out case of the issue: lossy JPEG 2000 with a zero spacing
        return save(ds, path)

    return build


def _no_file_meta(path: Path) -> Path:
    ds = make_dataset(_pixels(48, 64, seed=7))
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    ds.is_implicit_VR, ds.is_little_endian = True, True
    ds.save_as(path, write_like_original=True)  # no preamble, no file meta: a bare data set
    assert path.read_bytes()[128:132] != b"DICM"
    return path


def _odd_size(path: Path) -> Path:
    return save(make_dataset(_pixels(37, 53, seed=8)), path)


def _sixteen_bit(path: Path) -> Path:
    ds = make_dataset(_pixels(48, 64, seed=9, dtype=np.uint16, top=4000), bits_stored=12)
    ds.ImagerPixelSpacing = [0.143, 0.143]
    return save(ds, path)


def _multi_frame(path: Path) -> Path:
    frames = np.stack([_pixels(48, 64, seed=10), _pixels(48, 64, seed=11)])
    ds = make_dataset(frames[0])
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    return save(ds, path)


#: name -> builder; ``multi_frame`` must be refused, everything else must give a valid SEG and SR.
CORPUS: dict[str, Callable[[Path], Path]] = {
    "spacing_zero": _cr(PixelSpacing=[0, 0]),
    "spacing_missing": _cr(),
    "spacing_negative": _cr(PixelSpacing=[-0.1, -0.1]),
    "spacing_one_value": _cr(PixelSpacing="0.1"),
    "spacing_garbage": _garbage_spacing,
    "imager_spacing_only": _cr(ImagerPixelSpacing=[0.15, 0.15]),
    "aspect_ratio": _cr(PixelAspectRatio=[1, 2]),
    "monochrome1": _monochrome1,
    "j2k_lossy_no_method": _j2k(None),
    "j2k_lossy_with_method": _j2k("ISO_15444_1"),
    "no_file_meta": _no_file_meta,
    "odd_size": _odd_size,
    "sixteen_bit": _sixteen_bit,
    "valid_spacing": _cr(PixelSpacing=[0.139, 0.139]),
    "multi_frame": _multi_frame,
}
REFUSED = {"multi_frame"}


def test_every_variant_gives_a_valid_seg_and_sr_or_a_one_line_refusal(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = {name: build(folder / f"{name}.dcm") for name, build in CORPUS.items()}
    Image.fromarray(_pixels(40, 56, seed=12)).save(folder / "plain.png")  # not DICOM: no SEG, unaffected
    out = tmp_path / "out"

    failed = run_batch([folder], out, Predictor(), quiet=True, batch_size=4, dicom_seg=True)

    with (out / "predictions.csv").open(newline="") as fh:
        rows = {Path(r["image"]).stem: r for r in csv.DictReader(fh)}
    assert set(rows) == {*CORPUS, "plain"}
    assert failed == len(REFUSED), {n: r["error"] for n, r in rows.items() if r["error"]}
    for name in REFUSED:
        error = rows[name]["error"]
        assert "\n" not in error and error.startswith(str(inputs[name])) and "frame" in error.lower(), error
        assert not list(out.glob(f"{name}*"))
    assert rows["plain"]["error"] == "" and (out / rows["plain"]["mask"]).exists()
    assert not list(out.glob("plain*.dcm"))
    problems = {}
    for name in set(CORPUS) - REFUSED:
        row = rows[name]
        assert row["error"] == "", row["error"]
        stem = row["mask"].removesuffix("_mask.png")
        seg, sr = out / f"{stem}_seg.dcm", out / f"{stem}_sr.dcm"
        mask = np.asarray(Image.open(out / row["mask"])) > 0
        np.testing.assert_array_equal(pydicom.dcmread(seg).pixel_array.astype(bool), mask)
        report = hd.sr.srread(sr)
        assert len(report.content.get_planar_roi_measurement_groups()) == int(row["regions"])
        for path in (seg, sr):
            if errors := dciodvfy_errors(path):
                problems[path.name] = errors
    assert problems == {}
    # spacing: only a valid one reaches the SEG
    shared = pydicom.dcmread(out / "spacing_zero_seg.dcm").SharedFunctionalGroupsSequence[0]
    assert "PixelMeasuresSequence" not in shared
    shared = pydicom.dcmread(out / "valid_spacing_seg.dcm").SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.139, 0.139]
