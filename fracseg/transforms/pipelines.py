"""Pre-processing pipelines shared by training, evaluation and inference.

The deterministic chain is: load (EXIF/DICOM rules) -> normalise intensity (percentiles to [0, 1]) ->
letterbox (longest side to ``spatial_size``, aspect kept, symmetric zero padding to a square). Training
adds augmentation *after* this chain; inference inverts the letterbox with MONAI's ``Invertd``.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import AsDiscreted, Compose, CopyItemsd, MapTransform, Resized, SpatialPadd

from fracseg.transforms.antialias import AntiAliasd
from fracseg.transforms.dictionary import NormalizeXrayd
from fracseg.transforms.io import LoadMaskd, LoadXrayd

#: Default training/inference resolution (square side, pixels).
DEFAULT_SPATIAL_SIZE = 512


def letterbox_transforms(
    image_keys: Sequence[str] = ("image",),
    label_keys: Sequence[str] = (),
    spatial_size: int = DEFAULT_SPATIAL_SIZE,
) -> list[MapTransform]:
    """Resize the longest side to ``spatial_size`` and pad symmetrically to a square.

    Images use anti-aliased bilinear resampling; labels are resampled bilinearly and re-binarised at 0.5,
    which keeps thin fracture masks better than nearest-neighbour when downsampling.
    """
    keys = [*image_keys, *label_keys]
    transforms: list[MapTransform] = [
        # = Resized(..., anti_aliasing=True), with the Gaussian pre-filter computed by scipy (6x faster)
        AntiAliasd(keys=keys, spatial_size=spatial_size),
        Resized(
            keys=keys,
            spatial_size=spatial_size,
            size_mode="longest",
            mode="bilinear",
            align_corners=False,
            anti_aliasing=False,
        ),
        SpatialPadd(keys=keys, spatial_size=(spatial_size, spatial_size), method="symmetric", value=0),
    ]
    if label_keys:
        transforms.append(AsDiscreted(keys=list(label_keys), threshold=0.5))
    return transforms


def loading_transforms(image_key: str = "image", label_key: str | None = None) -> list[MapTransform]:
    """Load (and normalise) at the original, displayed size: the first half of the pre-processing."""
    transforms: list[MapTransform] = [LoadXrayd(keys=image_key)]
    if label_key is not None:
        transforms.append(LoadMaskd(keys=label_key))
    transforms.append(NormalizeXrayd(keys=image_key))
    return transforms


def preprocessing_transforms(
    image_key: str = "image",
    label_key: str | None = None,
    spatial_size: int = DEFAULT_SPATIAL_SIZE,
    keep_original: str | None = None,
) -> list[MapTransform]:
    """The deterministic pre-processing list (load, normalise, letterbox) for images and optional labels.

    ``keep_original``: also keep the normalised X-ray at its displayed size under this key (before the
    letterbox), the image ``fracseg infer`` draws its overlay on, so the bundle's overlay is the same.
    """
    keep = [CopyItemsd(keys=image_key, names=keep_original)] if keep_original else []
    return [
        *loading_transforms(image_key, label_key),
        *keep,
        *letterbox_transforms([image_key], [label_key] if label_key is not None else [], spatial_size),
    ]


def preprocessing(
    image_key: str = "image", label_key: str | None = None, spatial_size: int = DEFAULT_SPATIAL_SIZE
) -> Compose:
    """:func:`preprocessing_transforms` as a ``Compose``."""
    return Compose(preprocessing_transforms(image_key, label_key, spatial_size))
