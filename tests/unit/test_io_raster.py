"""PNG/JPEG reading through :func:`fracseg.io.read_xray` (and :func:`read_raster`).

Expected values are computed here independently with Pillow/numpy, never taken from the reader.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from fracseg.errors import ImageReadError
from fracseg.io import DEFAULT_MAX_PIXELS, ImageFormat, read_raster, read_xray

EXIF_ORIENTATION = 0x0112
TRUNCATED_NEGATIVES = (4130, 4143, 4169, 4228, 4263, 4279, 4286, 4291, 4297)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in float64, computed independently of the reader."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` 8-bit grey pixels but carries (almost) no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def fracatlas_images(shared_data: Path) -> Path:
    images = shared_data / "fracatlas" / "images"
    assert images.is_dir(), f"missing {images}"
    return images


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to decode pixel data with Pillow fail the test."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"pixel data of {self.filename!r} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.fixture(scope="module")
def grey_5x7() -> np.ndarray:
    # Non-square and with all-distinct values, so any transpose/flip is visible.
    return (np.arange(35, dtype=np.uint8).reshape(5, 7) * 7 + 3).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Real FracAtlas files
# ---------------------------------------------------------------------------------------------------


def test_exif_orientation_8_is_applied(fracatlas_images: Path) -> None:
    path = fracatlas_images / "Fractured" / "IMG0002628.jpg"
    with Image.open(path) as raw:
        assert raw.getexif().get(EXIF_ORIENTATION) == 8
        assert raw.size == (373, 454)  # stored: 373 wide, 454 tall
        raw_rgb = np.asarray(raw.convert("RGB"))
        displayed = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))

    img = read_xray(path)

    assert img.array.dtype == np.float32
    assert img.array.shape == (373, 454)  # displayed: height 373, width 454
    assert displayed.shape[:2] == (373, 454)
    np.testing.assert_allclose(img.array, luma(displayed), atol=1e-3)
    # Orientation 8 = stored image rotated 90 degrees counter-clockwise for display.
    np.testing.assert_allclose(img.array, np.rot90(luma(raw_rgb), k=1), atol=1e-3)
    assert img.meta.exif_orientation == 8
    assert img.meta.transposed is True
    assert img.meta.original_size == (373, 454)
    assert img.meta.format is ImageFormat.JPEG
    assert img.meta.source == str(path)


def test_exif_orientation_3_is_applied(fracatlas_images: Path) -> None:
    path = fracatlas_images / "Fractured" / "IMG0002588.jpg"
    with Image.open(path) as raw:
        assert raw.getexif().get(EXIF_ORIENTATION) == 3
        raw_rgb = np.asarray(raw.convert("RGB"))
        displayed = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))

    img = read_xray(path)

    assert img.array.shape == raw_rgb.shape[:2] == (454, 181)  # 180-degree turn keeps the axes
    np.testing.assert_allclose(img.array, luma(displayed), atol=1e-3)
    np.testing.assert_allclose(img.array, np.rot90(luma(raw_rgb), k=2), atol=1e-3)
    assert not np.allclose(img.array, luma(raw_rgb), atol=1.0)  # the rotation did change the pixels
    assert img.meta.exif_orientation == 3
    assert img.meta.transposed is True


def test_three_channel_grey_jpeg_is_folded_to_one_channel(fracatlas_images: Path) -> None:
    path = fracatlas_images / "Fractured" / "IMG0000284.jpg"
    with Image.open(path) as raw:
        assert raw.mode == "RGB"
        assert raw.getexif().get(EXIF_ORIENTATION) in (None, 1)
        rgb = np.asarray(raw.convert("RGB"))
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])

    img = read_xray(path)

    assert img.array.shape == (373, 454) == rgb.shape[:2]
    assert img.array.dtype == np.float32
    # Grey content in three channels: the folded channel equals any one of them.
    np.testing.assert_allclose(img.array, rgb[..., 0].astype(np.float64), atol=1e-3)
    assert img.meta.channels_folded == 3
    assert img.meta.bits_stored == 8
    assert img.meta.transposed is False
    assert img.meta.exif_orientation is None
    assert img.meta.inverted is False


@pytest.mark.parametrize("number", TRUNCATED_NEGATIVES)
def test_truncated_fracatlas_jpegs_are_refused(fracatlas_images: Path, number: int) -> None:
    path = fracatlas_images / "Non_fractured" / f"IMG{number:07d}.jpg"
    assert path.is_file()
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert "truncated" in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


# ---------------------------------------------------------------------------------------------------
# Synthetic PNG/JPEG files
# ---------------------------------------------------------------------------------------------------


def test_8bit_grey_png_values_preserved(tmp_path: Path, grey_5x7: np.ndarray) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(grey_5x7, mode="L").save(path)

    img = read_xray(path)

    assert img.array.dtype == np.float32
    assert img.array.shape == (5, 7)
    assert np.array_equal(img.array, grey_5x7.astype(np.float32))
    assert img.meta.format is ImageFormat.PNG
    assert img.meta.bits_stored == 8
    assert img.meta.channels_folded == 1
    assert img.meta.photometric == "MONOCHROME2"
    assert img.meta.original_size == (5, 7)
    assert img.meta.transposed is False


def test_16bit_png_values_preserved(tmp_path: Path) -> None:
    values = np.random.default_rng(16).integers(0, 65536, size=(6, 9), dtype=np.uint16)
    values[0, 0], values[-1, -1] = 0, 65535  # full range, including values above 8 and 15 bits
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:  # the file really is 16-bit
        assert np.array_equal(np.asarray(check), values)

    img = read_xray(path)

    assert img.array.shape == (6, 9)
    assert np.array_equal(img.array, values.astype(np.float32))
    assert img.array.max() == 65535.0
    assert img.meta.bits_stored == 16
    assert img.meta.channels_folded == 1


def test_rgba_png_is_folded_by_luma_ignoring_alpha(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 256, size=(5, 7, 4), dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)

    img = read_xray(path)

    assert img.array.shape == (5, 7)
    np.testing.assert_allclose(img.array, luma(rgba[..., :3]), atol=1e-3)
    assert img.meta.channels_folded == 3
    assert img.meta.photometric == "RGB"


def test_palette_png_is_expanded_then_folded(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    indices = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
    im = Image.fromarray(indices, mode="L").convert("P")  # "L" -> "P" keeps the indices
    im.putpalette(palette.tobytes())
    path = tmp_path / "palette.png"
    im.save(path)
    with Image.open(path) as check:
        assert check.mode == "P"

    img = read_xray(path)

    np.testing.assert_allclose(img.array, luma(palette[indices]), atol=1e-3)
    assert img.meta.channels_folded == 3


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    palette = np.array([[0, 0, 0], [255, 255, 255], [10, 200, 30]], dtype=np.uint8)
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    im = Image.fromarray(indices, mode="L").convert("P")
    im.putpalette(palette.tobytes())
    path = tmp_path / "palette_t.png"
    im.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info

    img = read_xray(path)

    np.testing.assert_allclose(img.array, luma(palette[indices]), atol=1e-3)


def test_grey_with_alpha_png_keeps_grey_channel(tmp_path: Path, grey_5x7: np.ndarray) -> None:
    alpha = np.full_like(grey_5x7, 17)
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([grey_5x7, alpha], axis=-1), mode="LA").save(path)

    img = read_xray(path)

    assert np.array_equal(img.array, grey_5x7.astype(np.float32))


# Expected display frame for each EXIF orientation, written with numpy independently of Pillow.
ORIENTATIONS = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_every_exif_orientation_on_png(tmp_path: Path, grey_5x7: np.ndarray, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.png"
    im = Image.fromarray(grey_5x7, mode="L")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    im.save(path, exif=exif)
    expected = ORIENTATIONS[orientation](grey_5x7)
    with Image.open(path) as check:  # the numpy table agrees with Pillow's own transpose
        assert check.getexif().get(EXIF_ORIENTATION) == orientation
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(check)), expected)

    img = read_xray(path)

    assert img.array.shape == expected.shape
    assert np.array_equal(img.array, expected.astype(np.float32))
    assert img.meta.original_size == expected.shape
    assert img.meta.transposed is (orientation != 1)
    assert img.meta.exif_orientation == (None if orientation == 1 else orientation)


def test_jpeg_from_grey_array(tmp_path: Path) -> None:
    # A smooth ramp survives JPEG compression within a few grey levels.
    ramp = np.tile(np.linspace(0, 255, 32), (24, 1)).astype(np.uint8)
    path = tmp_path / "ramp.jpg"
    Image.fromarray(ramp, mode="L").save(path, quality=95)
    with Image.open(path) as check:
        decoded = np.asarray(check)

    img = read_xray(path)

    assert img.meta.format is ImageFormat.JPEG
    assert img.meta.channels_folded == 1
    assert np.array_equal(img.array, decoded.astype(np.float32))
    assert np.abs(img.array - ramp).max() <= 8


def test_tiff_float_image_is_other_raster(tmp_path: Path) -> None:
    values = np.linspace(-1.5, 2.5, 35, dtype=np.float32).reshape(5, 7)
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)

    img = read_xray(path)

    assert img.meta.format is ImageFormat.OTHER_RASTER
    assert np.array_equal(img.array, values)
    assert img.meta.bits_stored == 32


def test_read_raster_accepts_path_objects_and_strings(tmp_path: Path, grey_5x7: np.ndarray) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(grey_5x7, mode="L").save(path)
    a = read_raster(path)
    b = read_raster(str(path))
    assert np.array_equal(a.array, b.array)
    assert a.meta == b.meta
    assert a.meta.source == str(path)


# ---------------------------------------------------------------------------------------------------
# Damaged and hostile files
# ---------------------------------------------------------------------------------------------------


def test_self_made_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, size=(64, 80), dtype=np.uint8)  # noise: entropy data fills the file
    whole = tmp_path / "whole.jpg"
    Image.fromarray(noise, mode="L").save(whole, quality=90)
    data = whole.read_bytes()
    assert read_xray(whole).array.shape == (64, 80)  # the untruncated file is fine
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])

    with pytest.raises(ImageReadError) as info:
        read_xray(cut)

    assert "truncated" in info.value.reason
    assert str(cut) in str(info.value)


def test_self_made_truncated_png_is_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(8).integers(0, 256, size=(60, 80), dtype=np.uint8)
    whole = tmp_path / "whole.png"
    Image.fromarray(noise, mode="L").save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    with pytest.raises(ImageReadError) as info:
        read_xray(cut)

    assert "truncated" in info.value.reason


def test_header_only_jpeg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stub.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 12)
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert str(path) in str(info.value)


def test_non_image_bytes_with_jpg_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file, not a radiograph\n")
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert "not a recognised image file" in info.value.reason
    assert str(info.value).startswith(str(path))


def test_random_bytes_with_jpg_suffix(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(9).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert str(path) in str(info.value)


def test_png_above_max_pixels_refused_before_decoding(
    tmp_path: Path, grey_5x7: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(np.tile(grey_5x7, (4, 4)), mode="L").save(path)  # 20 x 28 = 560 pixels
    assert read_xray(path, max_pixels=560).array.shape == (20, 28)  # at the limit: accepted

    def refuse(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(ImageReadError) as info:
        read_xray(path, max_pixels=559)

    reason = info.value.reason
    assert "limit" in reason
    assert "559" in reason
    assert "560" in reason  # the image's own pixel count
    assert str(path) in str(info.value)


@pytest.mark.usefixtures("no_decoding")
def test_decompression_bomb_header_refused_with_default_limit(tmp_path: Path) -> None:
    # 8000 x 8000 = 64 MP: above fracseg's 50 MP default, below Pillow's own bomb threshold, and the
    # file holds almost no data; it must be refused from the header alone.
    assert DEFAULT_MAX_PIXELS < 8000 * 8000
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(8000, 8000))
    assert path.stat().st_size < 200

    with pytest.raises(ImageReadError) as info:
        read_xray(path)

    assert "limit" in info.value.reason
    assert f"{DEFAULT_MAX_PIXELS:,}" in info.value.reason


def test_pillow_decompression_bomb_is_mapped(tmp_path: Path) -> None:
    # Far above Pillow's own threshold: Pillow refuses at open time; the error is still ours.
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(40000, 40000))
    with pytest.raises(ImageReadError) as info:
        read_xray(path, max_pixels=10**10)
    assert str(path) in str(info.value)
    assert "large" in info.value.reason or "limit" in info.value.reason


def _traced_peak(function, *args, **kwargs):
    """(result, peak bytes numpy/Python allocated while ``function`` ran)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = function(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_big_colour_jpeg_is_folded_to_grey_without_full_size_float_copies(tmp_path: Path) -> None:
    """A 6000x6000 JPEG used to peak near 3 GB: RGB was copied to float32 twice (432 MB each) before
    folding. Now the float32 copy is made a block of rows at a time; the values are the same."""
    side = 2000
    grey = (np.add.outer(np.arange(side), np.arange(side)) % 251).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(np.stack([grey] * 3, axis=2)).save(path, quality=90)
    image, peak = _traced_peak(read_raster, path)
    result_bytes = side * side * 4
    assert image.array.shape == (side, side) and image.meta.channels_folded == 3
    assert peak < 3 * result_bytes, f"peak {peak / 2**20:.0f} MB for a {result_bytes / 2**20:.0f} MB result"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(image.array, rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))
