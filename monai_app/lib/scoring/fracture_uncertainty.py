"""How unsure the current model is about each image: how close its fracture score is to the threshold.

The shared decision rule calls an image fractured when ``fracture_score >= score_threshold``; an image
whose score lies at that threshold is the one the model is least sure of, and the one whose label
teaches it most about its decision. Scores come from :class:`fracseg.inference.predictor.Predictor`
(the predictor ``fracseg infer`` uses) with the app's current weights, and are kept in each image's
datastore info under :data:`INFO_KEY`, tagged with :func:`scoring_key` (the weights and the decision
rule of the bundle copy) so that they are recomputed whenever either changed: after training changed the
weights, and after an upgraded bundle copy brought a new rule (a new threshold moves every uncertainty,
which a record keyed on the weights alone would keep).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from fracseg.errors import ImageReadError
from fracseg.inference.decision import DecisionRule
from fracseg.inference.predictor import Predictor
from fracseg.io import file_sha256

logger = logging.getLogger(__name__)

#: Key of the score record in an image's datastore info.
INFO_KEY = "fracture_uncertainty"
#: The weights the app scores with (relative to the bundle copy).
WEIGHTS = "models/model.pt"
#: The rule's file (relative to the bundle copy).
RULE = "configs/inference.json"


def scored_files(bundle: Path) -> dict[str, Path | None]:
    """The files a score depends on: the weights and the decision rule."""
    return {"weights": bundle / WEIGHTS, "rule": bundle / RULE}


def scoring_key(bundle: Path, weights_sha256: str | None = None) -> str:
    """SHA-256 over the SHA-256 of each of :func:`scored_files` (a missing one counts as absent): equal keys,
    equal scores. ``weights_sha256``: the weights' digest when the caller has it already."""
    digest = hashlib.sha256()
    for name, path in scored_files(bundle).items():
        if name == "weights" and weights_sha256 is not None:
            sha = weights_sha256
        else:
            sha = file_sha256(path) if path is not None and path.is_file() else "-"
        digest.update(f"{name}={sha};".encode())
    return digest.hexdigest()


def uncertainty(fracture_score: float, rule: DecisionRule) -> float:
    """1 at the rule's image threshold, falling linearly to 0 at the farthest possible score (0 or 1)."""
    threshold = rule.score_threshold
    span = max(threshold, 1.0 - threshold, 1e-6)
    return float(max(0.0, 1.0 - abs(fracture_score - threshold) / span))


class FractureUncertainty(ScoringMethod):
    """Score every image (unlabeled first) with the current model; skip those scored with it already.

    Args:
        bundle: the app's bundle copy (``configs/inference.json``, ``models/model.pt``).
    """

    def __init__(self, bundle: str) -> None:
        super().__init__("Closeness of the image's fracture score to the decision threshold")
        self.bundle = Path(bundle)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        weights = self.bundle / WEIGHTS
        sha = file_sha256(weights) if weights.is_file() else "-"
        key = scoring_key(self.bundle, weights_sha256=sha)
        labeled = set(datastore.get_labeled_images())
        images = sorted(datastore.list_images(), key=lambda i: (i in labeled, i))
        todo = [i for i in images if datastore.get_image_info(i).get(INFO_KEY, {}).get("model") != key]
        if not todo:
            return {"scored": 0, "images": len(images)}
        predictor = Predictor(weights=weights, bundle=self.bundle, device=request.get("device", "cpu"))
        scored = 0
        for image_id in todo:
            try:
                prediction = predictor.predict(datastore.get_image_uri(image_id))
            except ImageReadError as exc:
                logger.error("scoring skipped %s: %s", image_id, exc)
                continue
            record = {
                "fracture_score": round(prediction.fracture_score, 6),
                "uncertainty": round(uncertainty(prediction.fracture_score, predictor.rule), 6),
                "weights": sha,
                "model": key,
                "ts": int(time.time()),
            }
            datastore.update_image_info(image_id, {INFO_KEY: record})
            scored += 1
        logger.info("scored %d of %d images", scored, len(images))
        return {"scored": scored, "images": len(images)}
