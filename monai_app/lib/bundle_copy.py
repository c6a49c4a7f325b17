"""The app's own copy of the bundle: what the infer tasks read and the train task writes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def copy_bundle(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """The app's own copy of the bundle (configs, weights, docs, licence) at ``target``.

    Copied once: an existing copy (holding weights fine-tuned by the train task) is kept, and the shipped
    bundle is never written to. Delete ``target`` to start again from the shipped weights.
    """
    target = Path(target)
    if not (target / "configs" / "inference.json").is_file():
        tmp = target.with_name(f".{target.name}.copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("runs", "__pycache__"))
        if target.exists():  # an incomplete copy (no inference.json)
            shutil.rmtree(target)
        tmp.replace(target)
        logger.info("copied the bundle %s to %s", source, target)
    return target
