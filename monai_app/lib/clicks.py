"""Client clicks -> the generator's guidance channels.

A client sends points in the displayed image (``[x, y]`` or ``[x, y, z]``: ``x`` = column, ``y`` = row,
0-based; 3D Slicer sends ``[col, row, 0]``). The network sees the image letterboxed by
:func:`fracseg.transforms.letterbox_transforms` (longest side resized to ``S``, then symmetric zero
padding), so each point is carried into that frame with the same geometry and rendered there by
:func:`fracseg.engines.clicks.render_clicks`, exactly as training renders its simulated clicks.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fracseg.engines.clicks import BACKGROUND_CHANNEL, CLICK_SIGMA, FOREGROUND_CHANNEL, render_clicks
from lib.errors import UNPROCESSABLE, RequestRejected

#: Data key of the ``(2, S, S)`` guidance built by :class:`ClickGuidanced`.
GUIDANCE_KEY = "guidance"


def parse_points(value: Any, field: str, shape: tuple[int, int]) -> list[tuple[int, int]]:
    """``[[x, y] or [x, y, z], ...]`` -> ``[(row, col), ...]`` inside an ``(H, W)`` image.

    Raises:
        RequestRejected: 422 naming ``field`` for anything that is not such a list, a non-integral or
            non-finite coordinate, a ``z`` other than 0, or a point outside the image.
    """
    if value is None or value == "":
        return []
    if not isinstance(value, list | tuple):
        raise RequestRejected(UNPROCESSABLE, f"{field}: expected a list of [x, y] points")
    height, width = shape
    points = []
    for index, point in enumerate(value):
        if (
            not isinstance(point, list | tuple)
            or len(point) not in (2, 3)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
            or not all(math.isfinite(v) for v in point)
        ):
            raise RequestRejected(
                UNPROCESSABLE, f"{field}[{index}]: expected [x, y] or [x, y, 0] numbers, got {point!r:.60}"
            )
        x, y = round(point[0]), round(point[1])
        if len(point) == 3 and round(point[2]) != 0:
            raise RequestRejected(
                UNPROCESSABLE, f"{field}[{index}]: z = {point[2]} but a 2D image has slice 0"
            )
        if not (0 <= x < width and 0 <= y < height):
            raise RequestRejected(
                UNPROCESSABLE, f"{field}[{index}]: point ({x}, {y}) is outside the {width}x{height} image"
            )
        points.append((y, x))
    return points


def letterbox_point(row: int, col: int, shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Where displayed pixel ``(row, col)`` of an ``(H, W)`` image lies after the ``size`` letterbox.

    MONAI's ``Resize(size_mode="longest")`` makes each side ``round(side * size / max(H, W))`` and
    resamples with ``align_corners=False`` (pixel centres map by ``(i + 0.5) * out / in - 0.5``);
    ``SpatialPad(method="symmetric")`` adds ``(size - side) // 2`` before.
    """
    scale = size / max(shape)
    out = []
    for index, side in zip((row, col), shape, strict=True):
        new = round(side * scale)
        mapped = (index + 0.5) * new / side - 0.5 + (size - new) // 2
        out.append(min(size - 1, max(0, round(mapped))))
    return out[0], out[1]


def guidance(
    foreground: Sequence[tuple[int, int]],
    background: Sequence[tuple[int, int]],
    shape: tuple[int, int],
    size: int,
    sigma: float = CLICK_SIGMA,
) -> torch.Tensor:
    """``(2, size, size)`` float32 guidance (foreground, background channels) for displayed points."""
    planes = np.zeros((2, size, size), dtype=np.float32)
    for channel, points in ((FOREGROUND_CHANNEL, foreground), (BACKGROUND_CHANNEL, background)):
        mapped = [letterbox_point(r, c, shape, size) for r, c in points]
        planes[channel] = render_clicks(mapped, (size, size), sigma)
    return torch.from_numpy(planes)


class ClickGuidanced:
    """Dictionary transform: the request's ``foreground``/``background`` points -> ``data["guidance"]``.

    Runs after the bundle's pre-processing; reads the displayed size from the image's ``original_size``
    metadata (set by the fracseg reader) and the letterbox size from the image.
    """

    def __init__(self, image_key: str = "image", sigma: float = CLICK_SIGMA) -> None:
        self.image_key = image_key
        self.sigma = sigma

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        height, width = (int(v) for v in image.meta["original_size"])
        size = int(image.shape[-1])
        fg = parse_points(d.get("foreground"), "foreground", (height, width))
        bg = parse_points(d.get("background"), "background", (height, width))
        d[GUIDANCE_KEY] = guidance(fg, bg, (height, width), size, self.sigma)
        d["clicks"] = {"foreground": len(fg), "background": len(bg)}
        return d
