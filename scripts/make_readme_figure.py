"""Render the README figures from the sample X-rays in data/samples.

    python scripts/make_readme_figure.py PREPARED_DIR                     # data/figures/prepare_example.png
    python scripts/make_readme_figure.py PREPARED_DIR --demo outputs/demo # data/figures/demo_predictions.png

``PREPARED_DIR`` comes from ``fracseg prepare fracatlas``. The first figure shows the FracAtlas polygons as
``fracseg prepare`` rasterises them (the EXIF-rotated case and the MONOCHROME1 DICOM included). With
``--demo`` (the output folder of ``make demo``), the second shows the shipped model's demo overlays (red fill,
yellow outline: what ``fracseg infer`` writes) with the ground truth outlined in green on top.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fracseg.inference.outputs import mask_outline, overlay_rgb
from fracseg.io import read_xray

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
FIGURES = SAMPLES.parent / "figures"
PANELS = [
    ("IMG0004068.jpg", "IMG0004068"),
    ("IMG0002628.jpg", "IMG0002628"),
    ("IMG0003766_CR.dcm", "IMG0003766"),
]
DEMO_PANELS = [
    ("IMG0004068.jpg", "IMG0004068"),
    ("IMG0004151.jpg", "IMG0004151"),
    ("IMG0003766_CR.dcm", "IMG0003766"),
    ("IMG0000288.jpg", "IMG0000288"),
]
TRUTH_RGB = np.array([0, 220, 0], dtype=np.uint8)


def _row(tiles: list[Image.Image], height: int = 360) -> Image.Image:
    tiles = [t.resize((round(t.width * height / t.height), height), Image.Resampling.LANCZOS) for t in tiles]
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + 8
    return canvas


def _with_truth(overlay: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Outline the ground-truth mask in green on an overlay of the same size."""
    out = overlay.copy()
    out[mask_outline(truth, per_pixels=300)] = TRUTH_RGB
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--demo", type=Path, default=None, help="make demo's output folder")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tiles = []
    if args.demo is None:
        out = args.out or FIGURES / "prepare_example.png"
        for file_name, image_id in PANELS:
            image = read_xray(SAMPLES / file_name).array
            mask = np.asarray(Image.open(args.prepared / "masks" / f"{image_id}.png"))
            tiles.append(Image.fromarray(overlay_rgb(image, mask)))
    else:
        out = args.out or FIGURES / "demo_predictions.png"
        for file_name, image_id in DEMO_PANELS:
            overlay = np.asarray(Image.open(args.demo / f"{Path(file_name).stem}_overlay.png").convert("RGB"))
            truth_file = args.prepared / "masks" / f"{image_id}.png"
            truth = np.asarray(Image.open(truth_file)) if truth_file.exists() else np.zeros(overlay.shape[:2])
            if truth.shape != overlay.shape[:2]:
                raise SystemExit(f"{truth_file}: mask {truth.shape} does not match {overlay.shape[:2]}")
            tiles.append(Image.fromarray(_with_truth(overlay, truth)))
    out.parent.mkdir(parents=True, exist_ok=True)
    _row(tiles).save(out, optimize=True)


if __name__ == "__main__":
    main()
