"""Optional cache of pre-processed arrays at a training resolution.

The cache folder is keyed by a hash of everything that changes the arrays (resolution, normalisation
percentiles, pipeline version), so a change of settings never reads stale arrays. Arrays are produced
by :func:`fracseg.transforms.preprocessing` itself: training from the cache is identical to training
from the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from fracseg.errors import FracsegError
from fracseg.io import atomic_path, write_json_atomic
from fracseg.transforms.intensity import LOWER_PERCENTILE, UPPER_PERCENTILE
from fracseg.transforms.pipelines import preprocessing

logger = logging.getLogger(__name__)

#: Bump when the pre-processing chain changes in a way the settings below do not capture.
PIPELINE_VERSION = 1


def cache_settings(spatial_size: int) -> dict[str, Any]:
    """The settings that determine cached arrays."""
    return {
        "pipeline_version": PIPELINE_VERSION,
        "spatial_size": int(spatial_size),
        "lower_percentile": LOWER_PERCENTILE,
        "upper_percentile": UPPER_PERCENTILE,
        "letterbox": "longest-side bilinear anti-aliased, symmetric zero pad; label re-binarised at 0.5",
    }


def cache_key(settings: Mapping[str, Any]) -> str:
    """12-hex-digit hash of ``settings`` (canonical JSON)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def build_cache(
    items: Sequence[Mapping[str, Any]],
    cache_root: str | Path,
    spatial_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``<cache_root>/<key>/<image_id>.npz`` (``image`` float16 ``(1,S,S)``, ``label`` uint8) for items.

    Existing files are kept (the key guarantees they were made with the same settings), so an
    interrupted build resumes. Returns the cache folder.
    """
    settings = cache_settings(spatial_size)
    folder = Path(cache_root) / cache_key(settings)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "settings.json", settings)
    pipeline = preprocessing(label_key="label", spatial_size=spatial_size)
    for i, item in enumerate(items, 1):
        target = folder / f"{item['image_id']}.npz"
        if not target.exists():
            data = pipeline({"image": item["image"], "label": item["label"]})
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    image=np.asarray(data["image"], dtype=np.float16),
                    label=np.asarray(data["label"], dtype=np.uint8),
                )
        if progress:
            progress(i, len(items))
    return folder


class LoadCachedd(MapTransform):
    """Load ``image``/``label`` arrays from a cache folder by ``image_id`` (float32 ``MetaTensor``s).

    Args:
        keys: array names to load (``"image"``, ``"label"``).
        cache_dir: the folder returned by :func:`build_cache`.
        id_key: item key holding the image id.
    """

    def __init__(self, keys: KeysCollection, cache_dir: str | Path, id_key: str = "image_id") -> None:
        super().__init__(keys)
        self.cache_dir = Path(cache_dir)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        path = self.cache_dir / f"{d[self.id_key]}.npz"
        try:
            arrays = np.load(path)
        except OSError as exc:
            raise FracsegError(f"{path}: cached array missing or unreadable ({exc})") from None
        with arrays:
            for key in self.key_iterator(d):
                d[key] = MetaTensor(
                    torch.from_numpy(arrays[key].astype(np.float32)), meta={"filename_or_obj": str(d[key])}
                )
        return d
