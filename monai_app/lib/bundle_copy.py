"""The app's own copy of the bundle: what the infer tasks read and the train task writes.

The copy is made once and then kept, because the train task fine-tunes the weights in it. When the shipped
bundle is a newer release than the copy (``configs/metadata.json`` ``version``), the copy is replaced by
the new release only if its weights are still the ones it was copied with (nothing fine-tuned would be
lost); a copy holding fine-tuned weights is kept, with a warning that says how to take the new release.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from fracseg.io import file_sha256

logger = logging.getLogger(__name__)

#: Written into the copy: the release it was copied from and the sha256 of the weights it was copied with.
MARKER = ".fracseg_bundle_copy.json"


def _version(bundle: Path) -> str | None:
    try:
        return str(json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def _marker(target: Path) -> dict[str, Any]:
    try:
        value = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _replace_with_copy(source: Path, target: Path) -> None:
    """Copy ``source`` beside ``target`` and swap it in by renames (a killed start leaves one whole copy)."""
    tmp = target.with_name(f".{target.name}.copying")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("runs", "__pycache__", MARKER))
    marker = {"version": _version(source), "model_sha256": _sha256(tmp / "models" / "model.pt")}
    (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    if target.exists():
        target.replace(old)
    tmp.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def copy_bundle(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """The app's own copy of the bundle (configs, weights, docs, licence) at ``target``.

    Made when missing or incomplete (no ``configs/inference.json``); kept while it is the shipped release;
    replaced by a newer shipped release when its weights are untouched (the sha256 recorded at copy time,
    or, for copies made before that record existed, the shipped weights' own); kept with a warning when
    they were fine-tuned. The shipped bundle is never written to. Delete ``target`` to start again from
    the shipped bundle.
    """
    source, target = Path(source), Path(target)
    if not (target / "configs" / "inference.json").is_file():
        _replace_with_copy(source, target)
        logger.info("copied the bundle %s (version %s) to %s", source, _version(source), target)
        return target
    shipped, copied = _version(source), _version(target)
    if shipped == copied:
        return target
    weights = _sha256(target / "models" / "model.pt")
    untouched = weights is not None and weights in {
        _marker(target).get("model_sha256"),
        _sha256(source / "models" / "model.pt"),
    }
    if untouched:
        _replace_with_copy(source, target)
        logger.warning("upgraded the app's bundle copy %s from version %s to %s", target, copied, shipped)
    else:
        logger.warning(
            "the app's bundle copy %s is version %s with fine-tuned weights; the shipped bundle is "
            "version %s. Kept; to use the shipped release, move %s away and restart",
            target,
            copied,
            shipped,
            target,
        )
    return target
