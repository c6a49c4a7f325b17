"""PNG/JPEG (and other Pillow-readable raster) reader.

Policy for damaged files: a JPEG/PNG whose data ends early (a *truncated* file; FracAtlas has 59 such
negatives) is refused with :class:`ImageReadError`. Pillow could fill the missing rows with grey, but a
model trained or evaluated on that grey block learns or reports an artefact, and a silent partial
result is worse for a reader of the output than a clear error row.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fracseg.errors import ImageReadError
from fracseg.io.colour import channels_agree, rgb_to_grey
from fracseg.io.limits import DEFAULT_MAX_PIXELS, check_pixel_limit, pixel_limit_reason
from fracseg.io.meta import ImageFormat, XrayImage, XrayMeta

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_AXES_SWAPPED = {5, 6, 7, 8}


def _format_of(pil_format: str | None) -> ImageFormat:
    return {"JPEG": ImageFormat.JPEG, "PNG": ImageFormat.PNG}.get(pil_format or "", ImageFormat.OTHER_RASTER)


def _to_grey(im: Image.Image, path: str) -> tuple[np.ndarray, int, int]:
    """Return ``(float32 array (H, W), bits_stored, channels_folded)`` for a Pillow image."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im, dtype=np.float32), 8, 1
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.float32), 16, 1
    if mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float32)
        return arr, 32 if mode == "F" else (16 if arr.size and arr.max() < 65536 else 32), 1
    if mode == "LA":
        return np.asarray(im.getchannel("L"), dtype=np.float32), 8, 1
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        rgb = np.asarray(im.convert("RGB"))  # uint8: converted to float32 block by block below
        if not channels_agree(rgb, atol=16):
            logger.warning("%s: colour content folded to grey (luma); X-rays are expected to be grey", path)
        return rgb_to_grey(rgb), 8, 3
    raise ImageReadError(path, f"unsupported Pillow image mode {mode!r}")


def read_raster(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XrayImage:
    """Read a PNG/JPEG into the displayed frame (EXIF orientation applied), one grey channel.

    Args:
        path: image file.
        max_pixels: refuse images above this many pixels before decoding them.

    Raises:
        ImageReadError: unreadable, truncated, oversize or unsupported file.
    """
    path = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        # Pillow refuses far above our limit before we see the size; say it in our words.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        reason = pixel_limit_reason(int(found.group(1)), max_pixels) if found else f"image too large ({exc})"
        raise ImageReadError(path, reason) from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image file (unreadable content)") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc})") from None
    with im:
        width, height = im.size
        check_pixel_limit(path, height, width, max_pixels)
        pil_format = im.format
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as exc:
            msg = str(exc)
            if "truncated" in msg or "broken data stream" in msg:
                raise ImageReadError(path, f"truncated image data ({msg})") from None
            raise ImageReadError(path, f"corrupt image data ({msg})") from None
        # EXIF after the pixels: for PNG, reading EXIF decodes the image, so errors surface as above.
        try:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        except Exception:  # malformed EXIF blocks must not cost the image
            logger.warning("%s: unreadable EXIF block ignored", path)
            orientation = 1
        if orientation in range(2, 9):
            im = ImageOps.exif_transpose(im)
        array, bits, folded = _to_grey(im, path)
    meta = XrayMeta(
        source=path,
        format=_format_of(pil_format),
        original_size=(int(array.shape[0]), int(array.shape[1])),
        photometric="RGB" if folded == 3 else "MONOCHROME2",
        transposed=orientation in range(2, 9),
        exif_orientation=orientation if orientation != 1 else None,
        bits_stored=bits,
        channels_folded=folded,
    )
    if orientation in _AXES_SWAPPED:
        logger.debug("%s: EXIF orientation %d swaps axes", path, orientation)
    return XrayImage(np.ascontiguousarray(array, dtype=np.float32), meta)
