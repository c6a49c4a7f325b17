"""Reading the datalists ``fracseg prepare`` writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fracseg.errors import DatasetError


def load_datalist(path: str | Path, keys: str | Sequence[str] = "training") -> list[dict[str, Any]]:
    """Return the items under one or more top-level keys of a datalist JSON, concatenated in order.

    Unlike ``monai.data.load_decathlon_datalist`` this accepts several keys (e.g. ``["training",
    "negatives_train"]`` for fractured images plus negatives) and names the file and key on errors.
    Relative ``image``/``label`` paths are resolved against the datalist's folder.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read datalist ({exc})") from None
    items: list[dict[str, Any]] = []
    for key in [keys] if isinstance(keys, str) else list(keys):
        if key not in content or not isinstance(content[key], list):
            raise DatasetError(f"{path}: no list {key!r} (has {', '.join(sorted(content))})")
        for item in content[key]:
            item = dict(item)
            for field in ("image", "label"):
                if field in item and not Path(item[field]).is_absolute():
                    item[field] = str(path.parent / item[field])
            items.append(item)
    return items


def cv_items(
    path: str | Path, fold: int, folds: int = 5, held_out: bool = False, negatives: bool = True
) -> list[dict[str, Any]]:
    """Items of cross-validation fold ``fold`` of a prepared datalist: its training folds or the held-out one.

    ``fold < 0`` trains on every fold and holds none out (the release run after cross-validation).
    ``negatives=False`` keeps the fractured items only (a stage that never draws a negative need not
    cache them).
    """
    from fracseg.data.fracatlas import cv_fold_keys

    train_keys, held_out_keys = cv_fold_keys(fold, folds)
    if held_out:
        items = load_datalist(path, held_out_keys) if held_out_keys else []
    else:
        items = load_datalist(path, train_keys)
    return items if negatives else [item for item in items if item.get("fractured")]


def negative_share_weights(items: Sequence[dict[str, Any]], negative_share: float) -> list[float]:
    """Sampling weights that draw non-fractured items with probability ``negative_share`` in all.

    For ``torch.utils.data.WeightedRandomSampler``: each epoch draws a fixed number of crops, a share
    ``negative_share`` of them from the non-fractured images (a different subset every epoch, so all
    2,000 negatives are used over a run while most crops still show a fracture). Within a class every
    item is equally likely. A class that is absent gets no weight; ``negative_share`` is in [0, 1).
    """
    if not 0.0 <= negative_share < 1.0:
        raise ValueError(f"negative_share must be in [0, 1), got {negative_share}")
    fractured = sum(1 for item in items if item.get("fractured"))
    negatives = len(items) - fractured
    if fractured == 0:
        raise ValueError("negative_share_weights: no fractured item to draw from")
    if negatives == 0:
        return [1.0 / fractured] * len(items)
    return [
        (1.0 - negative_share) / fractured if item.get("fractured") else negative_share / negatives
        for item in items
    ]
