"""One predictor: file in, fracture probability map and mask (at the input's displayed size) out."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from fracseg.errors import find_fracseg_error
from fracseg.inference.decision import Decision, DecisionRule, decide, image_score_of
from fracseg.inference.inferer import GuidedInferer, parse_views
from fracseg.io import file_sha256
from fracseg.networks import build_generator, load_generator_state
from fracseg.precision import Precision, resolve_precision
from fracseg.transforms import DEFAULT_SPATIAL_SIZE, letterbox_transforms, loading_transforms

logger = logging.getLogger(__name__)

#: Where the shipped generator weights live, relative to the repository root.
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundle"
DEFAULT_WEIGHTS = DEFAULT_BUNDLE / "models" / "model.pt"


@dataclass
class Prediction:
    """Result for one image.

    Attributes:
        image: the input X-ray at its displayed size, ``(H, W)`` float32 in [0, 1].
        probability: fracture probability ``(H, W)`` float32.
        decision: mask, regions, ``fracture_score`` and ``fracture_present`` from the bundle's
            :class:`~fracseg.inference.decision.DecisionRule`.
        meta: reader metadata (``XrayMeta.to_dict()`` plus MONAI keys).
        image_score: the image head's probability (``None`` without a head); the decision's
            ``fracture_score`` where present.
    """

    image: np.ndarray
    probability: np.ndarray
    decision: Decision
    meta: dict[str, Any]
    image_score: float | None = None

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool fracture mask (empty when the image is judged fracture-free)."""
        return self.decision.mask

    @property
    def fracture_score(self) -> float:
        return self.decision.fracture_score

    @property
    def fracture_present(self) -> bool:
        return self.decision.fracture_present


def bundle_settings(bundle: str | os.PathLike[str] = DEFAULT_BUNDLE) -> dict[str, Any]:
    """The generator definition, letterbox size and decision rule of ``<bundle>/configs/inference.json``.

    The bundle is the single definition of the shipped model: the CLI reads the same ``network_def``
    hyper-parameters that ``python -m monai.bundle run --config_file .../inference.json`` instantiates.
    """
    config = json.loads((Path(bundle) / "configs" / "inference.json").read_text(encoding="utf-8"))
    return {
        "channels": config.get("generator_channels", [32, 64, 128, 256, 512]),
        "strides": config.get("generator_strides", [2, 2, 2, 2]),
        "num_res_units": config.get("generator_res_units", 2),
        "spatial_size": int(config.get("spatial_size", DEFAULT_SPATIAL_SIZE)),
        "rule": DecisionRule.from_config(config),
        "precision": str(config.get("precision", "auto")),
        "mirror": bool(config.get("mirror", False)),
        "fp32_margin": float(config.get("fp32_margin", 0.0)),
        "image_head": Path(bundle) / config["image_head"] if config.get("image_head") else None,
        "head_views": parse_views(config.get("head_views", [])),
        "fp32_own_view": bool(config.get("fp32_own_view", False)),
    }


class Predictor:
    """Load the generator once, then predict files one at a time.

    Args:
        weights: checkpoint with the generator state dict under key ``model`` (or a bare state dict);
            ``None`` or a missing file gives an untrained, seeded generator and a loud warning.
        device: torch device string.
        spatial_size: letterbox side used by the pre-processing (must match training); default: the
            bundle's.
        threshold: pixel probability threshold for the mask; default: the bundle's.
        rule: the whole decision rule (overrides ``threshold`` and the bundle's rule).
        network: an already built generator (e.g. a bundle config's ``network_def``) instead of the one
            ``<bundle>/configs/inference.json`` defines.
        bundle: bundle folder whose ``configs/inference.json`` defines the generator.
        precision: ``"auto"`` (bf16 autocast + channels_last where the device computes bf16 natively,
            fp32 elsewhere), ``"bf16"`` or ``"fp32"`` (:func:`fracseg.precision.resolve_precision`);
            default: the bundle's ``precision`` (the one the shipped weights were checked with).
        mirror: average with the left-right mirrored input
            (:func:`fracseg.inference.inferer.mirror_averaged`); default: the bundle's ``mirror`` (the
            decision rule is calibrated with it).
        image_head: the image-level head file (:mod:`fracseg.networks.image_head`); ``True``: the
            bundle's ``image_head``; ``False``: none. Attached only when it was fitted for ``weights``.
        head_views: average the head's answer over the bundle's ``head_views`` too
            (:func:`fracseg.inference.inferer.head_view_averaged`); default: the bundle's (its decision
            rule is calibrated with them); ``False``: the input's view alone.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
        device: str = "cpu",
        spatial_size: int | None = None,
        threshold: float | None = None,
        bundle: str | os.PathLike[str] = DEFAULT_BUNDLE,
        rule: DecisionRule | None = None,
        network: torch.nn.Module | None = None,
        precision: str | None = None,
        mirror: bool | None = None,
        image_head: bool | str | os.PathLike[str] = True,
        head_views: bool | None = None,
    ) -> None:
        settings = bundle_settings(bundle)
        self.mirror = settings["mirror"] if mirror is None else bool(mirror)
        self.device = torch.device(device)
        self.precision: Precision = resolve_precision(precision or settings["precision"], self.device)
        self.rule: DecisionRule = rule or settings["rule"]
        if threshold is not None and rule is None:
            self.rule = DecisionRule(**{**self.rule.to_dict(), "threshold": float(threshold)})
        spatial_size = settings["spatial_size"] if spatial_size is None else spatial_size
        torch.manual_seed(0)
        self.network = network or build_generator(
            channels=settings["channels"],
            strides=settings["strides"],
            num_res_units=settings["num_res_units"],
        )
        self.trained = False
        self.spatial_size = spatial_size
        self.weights_sha256 = "untrained"
        if weights is not None and Path(weights).exists():
            self.weights_sha256 = file_sha256(weights)
            self.network.load_state_dict(load_generator_state(weights))
            self.trained = True
            logger.info("generator weights: %s", weights)
        else:
            logger.warning(
                "no trained weights at %s: using an UNTRAINED generator (seed 0); masks are not meaningful",
                weights,
            )
        self.network.to(self.device).eval()
        self.precision.prepare_module(self.network)
        # the bundle's inferer: guidance channels, precision and mirroring exactly as in inference.json
        self.inferer = GuidedInferer(
            precision=self.precision.requested,
            mirror=self.mirror,
            score_threshold=self.rule.score_threshold,
            score_top_pixels=self.rule.score_top_pixels,
            fp32_margin=settings["fp32_margin"],
            image_head=(settings["image_head"] if image_head is True else (image_head or None))
            if self.trained
            else None,
            weights=weights if self.trained else None,
            image_head_threshold=self.rule.image_head_threshold,
            head_views=settings["head_views"] if head_views is not False else (),
            fp32_own_view=settings["fp32_own_view"],
        )
        self.image_head_sha256 = None
        if self.inferer.attach_head(self.network):
            head = self.inferer.image_head
            self.image_head_sha256 = file_sha256(head) if head is not None else "attached by the caller"
        logger.info("inference precision: %s on %s", self.precision.name, self.device)
        # Same chain as training (fracseg.transforms.preprocessing), split so the full-size normalised
        # image stays available for the overlay.
        self.load = Compose(loading_transforms())
        self.letterbox = Compose(letterbox_transforms(spatial_size=spatial_size))
        self.invert = Invertd(keys="pred", transform=self.letterbox, orig_keys="image", nearest_interp=False)

    @property
    def threshold(self) -> float:
        """The pixel threshold of the decision rule."""
        return self.rule.threshold

    def settings(self) -> dict[str, Any]:
        """What determines the outputs besides the input: recorded with results to make resume safe."""
        return {
            "weights_sha256": self.weights_sha256,
            **self.rule.to_dict(),
            "spatial_size": self.spatial_size,
            "trained_model": self.trained,
            "precision": self.precision.name,
            "mirror": self.mirror,
            "fp32_margin": self.inferer.fp32_margin,
            "image_head_sha256": self.image_head_sha256,
            "head_views": [list(v) for v in self.inferer.head_views] if self.image_head_sha256 else [],
            "fp32_own_view": self.inferer.fp32_own_view and self.precision.amp,
        }

    def prepare(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Load and pre-process one file (CPU; safe in DataLoader workers).

        Returns ``{"image": letterboxed (1, S, S) MetaTensor, "original": (H, W) float32 normalised image}``.

        Raises:
            ImageReadError: unreadable input (unwrapped from MONAI's ``RuntimeError``).
        """
        try:
            loaded = self.load({"image": os.fspath(path)})
        except RuntimeError as exc:  # MONAI wraps transform errors; surface the reader's message
            cause = find_fracseg_error(exc)
            if cause is None:
                raise
            raise cause from None
        original = np.asarray(loaded["image"].as_tensor()[0], dtype=np.float32)
        data = self.letterbox(dict(loaded))
        return {"image": data["image"], "original": original}

    @torch.inference_mode()
    def infer(
        self, images: torch.Tensor, display_shapes: list[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """Fracture probabilities ``(B, C, S, S)`` (float32, CPU) for a batch of letterboxed X-rays: channel
        0 per pixel, channel 1 (with the image head) the image-level probability, constant over the image.

        ``display_shapes``: each image's displayed ``(H, W)``, for the inferer's fp32 re-check of borderline
        bf16 answers (:class:`fracseg.inference.inferer.GuidedInferer`)."""
        logits = self.inferer(
            images.to(self.device, non_blocking=True), self.network, display_shapes=display_shapes
        )
        return torch.sigmoid(logits).cpu()

    def finish(self, prepared: dict[str, Any], probability: torch.Tensor) -> Prediction:
        """Undo the letterbox of one ``(C, S, S)`` probability map and apply the decision rule."""
        image: MetaTensor = prepared["image"]
        data = {
            "image": image,
            "pred": MetaTensor(probability, meta=image.meta, applied_operations=image.applied_operations),
        }
        restored = self.invert(data)["pred"]
        channels = np.asarray(restored.as_tensor(), dtype=np.float32).clip(0.0, 1.0)
        image_score = image_score_of(channels)
        return Prediction(
            image=prepared["original"],
            probability=channels[0],
            decision=decide(channels[0], self.rule, image_score),
            meta=dict(image.meta),
            image_score=image_score,
        )

    def predict(self, path: str | os.PathLike[str]) -> Prediction:
        """Predict one file. Raises :class:`fracseg.errors.ImageReadError` for unreadable input."""
        prepared = self.prepare(path)
        shape = [tuple(prepared["original"].shape[-2:])]
        return self.finish(prepared, self.infer(prepared["image"].as_tensor()[None], shape)[0])
