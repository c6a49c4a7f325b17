"""Render data/figures/prepare_example.png for the README: sample X-rays with the FracAtlas polygons as
rasterised by ``fracseg prepare`` (outline + fill), the EXIF-rotated case and the MONOCHROME1 DICOM included.

    python scripts/make_readme_figure.py PREPARED_DIR   # PREPARED_DIR from `fracseg prepare fracatlas`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fracseg.inference.outputs import overlay_rgb
from fracseg.io import read_xray

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
PANELS = [
    ("IMG0004068.jpg", "IMG0004068"),
    ("IMG0002628.jpg", "IMG0002628"),
    ("IMG0003766_CR.dcm", "IMG0003766"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--out", type=Path, default=SAMPLES.parent / "figures" / "prepare_example.png")
    args = parser.parse_args()
    height = 360
    tiles = []
    for file_name, image_id in PANELS:
        image = read_xray(SAMPLES / file_name).array
        mask = np.asarray(Image.open(args.prepared / "masks" / f"{image_id}.png"))
        tile = Image.fromarray(overlay_rgb(image, mask))
        tiles.append(
            tile.resize((round(tile.width * height / tile.height), height), Image.Resampling.LANCZOS)
        )
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + 8
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
