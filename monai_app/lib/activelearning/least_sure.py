"""``least_sure``: the unlabeled image whose fracture score is closest to the decision threshold.

Reads the scores :class:`lib.scoring.FractureUncertainty` keeps in the datastore (computed in the
background at start-up, after training and after each request here). Images without a score for the
current weights are scored on the spot first, so the answer always reflects the weights in use.
"""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.scoring.fracture_uncertainty import INFO_KEY, FractureUncertainty

logger = logging.getLogger(__name__)


class LeastSure(Strategy):
    """Next sample: the most uncertain image without a ``final`` label (ties: the smaller id).

    Args:
        scoring: the scoring method that computes missing scores.
    """

    def __init__(self, scoring: FractureUncertainty) -> None:
        super().__init__("Unlabeled image whose fracture score is closest to the threshold")
        self.scoring = scoring

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        if hasattr(datastore, "reload"):
            datastore.reload()
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        self.scoring({"device": request.get("device", "cpu")}, datastore)
        records = {i: datastore.get_image_info(i).get(INFO_KEY) for i in images}
        scored = {i: r for i, r in records.items() if r}
        if not scored:
            logger.warning("no image could be scored; answering the first unlabeled image")
            return {"id": sorted(images)[0]}
        image = min(scored, key=lambda i: (-scored[i]["uncertainty"], i))
        return {"id": image, **{k: scored[image][k] for k in ("fracture_score", "uncertainty")}}
