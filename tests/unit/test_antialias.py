"""The scipy anti-aliasing pre-filter + plain Resized reproduce MONAI's anti-aliased Resized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Resized

from fracseg.transforms import preprocessing
from fracseg.transforms.antialias import AntiAliasd, longest_side_size
from fracseg.transforms.io import LoadXrayd


def _monai(spatial_size: int) -> Resized:
    return Resized(
        keys=["image"], spatial_size=spatial_size, size_mode="longest", mode="bilinear", anti_aliasing=True
    )


def _ours(spatial_size: int) -> Compose:
    return Compose(
        [
            AntiAliasd(keys=["image"], spatial_size=spatial_size),
            Resized(
                keys=["image"],
                spatial_size=spatial_size,
                size_mode="longest",
                mode="bilinear",
                anti_aliasing=False,
            ),
        ]
    )


@pytest.mark.parametrize(
    ("shape", "spatial_size"),
    [((1976, 1576), 512), ((373, 454), 512), ((900, 90), 128), ((512, 300), 512), ((1001, 999), 64)],
)
def test_matches_monai_anti_aliased_resize(shape: tuple[int, int], spatial_size: int) -> None:
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(sum(shape)))
    expected = _monai(spatial_size)({"image": image})["image"]
    got = _ours(spatial_size)({"image": image})["image"]
    assert tuple(got.shape[1:]) == longest_side_size(shape, spatial_size) == tuple(expected.shape[1:])
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected), atol=1e-6, rtol=1e-6)


def test_keeps_metadata_and_the_letterbox_still_inverts(shared_data: Path) -> None:
    path = shared_data / "dicom" / "CR-ModalitySequenceLUT.dcm"
    pre = preprocessing(label_key=None, spatial_size=256)
    out = pre({"image": str(path)})
    assert isinstance(out["image"], MetaTensor) and tuple(out["image"].shape) == (1, 256, 256)
    assert out["image"].meta["filename_or_obj"] == str(path)
    original = LoadXrayd(keys="image")({"image": str(path)})["image"]
    restored = pre.inverse(out)["image"]
    assert tuple(restored.shape) == tuple(original.shape) and max(original.shape) == 1976


def test_real_masks_binarise_identically(shared_data: Path) -> None:
    """A large FracAtlas image and its mask through both letterboxes: the image agrees to float rounding
    and the re-binarised label pixel for pixel."""
    from fracseg.data.fracatlas import read_coco_polygons
    from fracseg.data.rasterize import rasterize_polygons

    root = shared_data / "fracatlas"
    image = LoadXrayd(keys="image")({"image": str(root / "images" / "Fractured" / "IMG0000059.jpg")})["image"]
    height, width = image.shape[-2:]
    assert max(height, width) > 512  # downsampled by the letterbox
    polygons, _ = read_coco_polygons(root)
    mask = rasterize_polygons([flat for _, flat in polygons["IMG0000059"]], height, width)
    assert mask.sum() > 0
    data = {"image": image, "label": torch.from_numpy(mask[None].astype(np.float32))}
    keys = ["image", "label"]
    ref = Resized(keys=keys, spatial_size=512, size_mode="longest", mode="bilinear", anti_aliasing=True)(
        dict(data)
    )
    ours = Resized(keys=keys, spatial_size=512, size_mode="longest", mode="bilinear", anti_aliasing=False)(
        AntiAliasd(keys=keys, spatial_size=512)(dict(data))
    )
    torch.testing.assert_close(
        torch.as_tensor(ours["image"]), torch.as_tensor(ref["image"]), atol=1e-6, rtol=1e-6
    )
    assert torch.equal(torch.as_tensor(ours["label"]) >= 0.5, torch.as_tensor(ref["label"]) >= 0.5)
