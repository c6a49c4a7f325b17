"""Build a tiny FracAtlas-layout folder with every quirk prepare must handle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HEADER = (
    "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique"
)


def _jpeg(path: Path, width: int, height: int, seed: int, orientation: int | None = None) -> None:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 255, size=(height, width), dtype=np.uint8)
    im = Image.fromarray(np.stack([grey] * 3, axis=2))
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=95, **kwargs)


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def make_layout(root: Path, with_test: bool = True) -> Path:
    """Images (displayed sizes in brackets):

    Fractured: F1 train 64x48, F2 train EXIF 6 (raw 40 wide x 60 high -> displayed 60x40),
    F3 train polygon partly outside, F4 valid, F5 test (only when ``with_test``), F6 valid but
    dataset.csv says not fractured (label conflict, like IMG0003298).
    Non_fractured: N1, N2 fine, N3 truncated.
    """
    frac = root / "images" / "Fractured"
    neg = root / "images" / "Non_fractured"
    _jpeg(frac / "F1.jpg", 64, 48, 1)
    _jpeg(frac / "F2.jpg", 40, 60, 2, orientation=6)
    _jpeg(frac / "F3.jpg", 50, 50, 3)
    _jpeg(frac / "F4.jpg", 30, 20, 4)
    if with_test:
        _jpeg(frac / "F5.jpg", 30, 30, 5)
    _jpeg(frac / "F6.jpg", 30, 30, 6)
    _jpeg(neg / "N1.jpg", 32, 32, 7)
    _jpeg(neg / "N2.jpg", 20, 40, 8)
    _jpeg(neg / "N3.jpg", 200, 200, 9)
    data = (neg / "N3.jpg").read_bytes()
    (neg / "N3.jpg").write_bytes(data[: len(data) // 2])

    images = [("F1", 64, 48), ("F2", 60, 40), ("F3", 50, 50), ("F4", 30, 20), ("F6", 30, 30)]
    if with_test:
        images.append(("F5", 30, 30))
    anns = {
        "F1": [_rect(10, 5, 20, 15), _rect(30, 30, 40, 40)],
        "F2": [_rect(10, 5, 20, 15)],  # displayed frame of the EXIF-rotated image
        "F3": [_rect(-5, -5, 8, 8)],
        "F4": [_rect(2, 2, 6, 6)],
        "F5": [_rect(1, 1, 4, 4)],
        "F6": [_rect(3, 3, 9, 9)],
    }
    coco_images, coco_anns = [], []
    for i, (name, w, h) in enumerate(images, start=1):
        coco_images.append({"id": i, "width": w, "height": h, "file_name": f"{name}.jpg"})
        for poly in anns[name]:
            coco_anns.append(
                {"id": len(coco_anns), "image_id": i, "category_id": 0, "iscrowd": 0, "segmentation": [poly]}
            )
    coco_dir = root / "Annotations" / "COCO JSON"
    coco_dir.mkdir(parents=True)
    (coco_dir / "COCO_fracture_masks.json").write_text(
        json.dumps(
            {"images": coco_images, "annotations": coco_anns, "categories": [{"id": 0, "name": "fractured"}]}
        )
    )

    split = root / "Utilities" / "Fracture Split"
    split.mkdir(parents=True)
    (split / "train.csv").write_text("image_id\nF1.jpg\nF2.jpg\nF3.jpg\n")
    (split / "valid.csv").write_text("image_id\nF4.jpg\nF6.jpg\n")
    if with_test:
        (split / "test.csv").write_text("image_id\nF5.jpg\n")
    rows = [
        "F1.jpg,1,0,0,0,0,0,0,1,2,1,0,0",
        "F2.jpg,0,1,0,0,0,1,0,1,1,0,1,0",
        "F3.jpg,0,0,1,0,0,0,0,1,1,1,0,0",
        "F4.jpg,0,0,0,1,0,0,0,1,1,1,0,0",
        "F5.jpg,1,1,0,0,0,0,0,1,1,1,0,0",
        "F6.jpg,1,0,0,0,0,0,0,0,0,1,0,0",
        "N1.jpg,1,0,0,0,0,0,0,0,0,1,0,0",
        "N2.jpg,0,1,0,0,0,0,0,0,0,1,0,0",
        "N3.jpg,0,1,0,0,0,0,0,0,0,1,0,0",
    ]
    (root / "dataset.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return root
