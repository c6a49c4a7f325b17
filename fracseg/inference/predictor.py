"""One predictor: file in, fracture probability map and mask (at the input's displayed size) out."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, CopyItemsd, Invertd

from fracseg.errors import find_fracseg_error
from fracseg.inference.bundle import DEFAULT_BUNDLE, inference_config
from fracseg.inference.decision import Decision, DecisionRule, decide
from fracseg.inference.inferer import GuidedInferer
from fracseg.io import file_sha256
from fracseg.networks import load_generator_state
from fracseg.precision import Precision, resolve_precision
from fracseg.transforms import loading_transforms

logger = logging.getLogger(__name__)

#: Where the shipped generator weights live, relative to the repository root.
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
    """

    image: np.ndarray
    probability: np.ndarray
    decision: Decision
    meta: dict[str, Any]

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


def split_preprocessing(preprocessing: Compose) -> tuple[Compose, Compose]:
    """The bundle's ``preprocessing`` as ``(load, letterbox)``: loading and normalisation at the displayed
    size (:func:`fracseg.transforms.loading_transforms`), then the rest (the invertible letterbox).

    Raises:
        ValueError: ``preprocessing`` does not start with the loading transforms.
    """
    transforms = list(preprocessing.transforms)
    loading = [type(t) for t in loading_transforms()]
    if [type(t) for t in transforms[: len(loading)]] != loading:
        names = [t.__name__ for t in loading]
        raise ValueError(f"inference.json preprocessing must start with {names}, got {transforms}")
    cut = len(loading)
    if cut < len(transforms) and isinstance(transforms[cut], CopyItemsd):
        cut += 1  # the copy of the displayed-size X-ray the bundle's overlay is drawn on: part of loading
    return Compose(transforms[:cut]), Compose(transforms[cut:])


class Predictor:
    """Load the generator once, then predict files one at a time.

    Network (``network_def``), pre-processing (``preprocessing``), inferer (``inferer``) and decision rule
    (``decision_rule``) are the bundle's ``configs/inference.json`` components, built by MONAI's
    ``ConfigParser`` (:func:`fracseg.inference.bundle.inference_config`); the arguments below are
    overrides of that config's ids (:meth:`config_overrides`), ``None`` keeping the bundle's value.

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
    ) -> None:
        weights_exist = weights is not None and Path(weights).exists()
        overrides = self.config_overrides(
            weights if weights_exist else None,
            spatial_size,
            threshold,
            rule,
            precision,
            mirror,
        )
        #: the bundle's inference config with this predictor's overrides: every part below is built from it
        self.config = inference_config(bundle, overrides)
        self.device = torch.device(device)
        self.rule: DecisionRule = self.config.get_parsed_content("decision_rule")
        self.spatial_size = int(self.config.get_parsed_content("spatial_size"))
        torch.manual_seed(0)
        self.network = network or self.config.get_parsed_content("network_def")
        self.trained = False
        self.weights_sha256 = "untrained"
        if weights_exist:
            assert weights is not None
            self.weights_sha256 = file_sha256(weights)
            self.network.load_state_dict(load_generator_state(weights))
            self.trained = True
            logger.info("generator weights: %s", weights)
        else:
            logger.warning(
                "no trained weights at %s: using an UNTRAINED generator (seed 0); masks are not meaningful",
                weights,
            )
        # the bundle's inferer: guidance channels, precision, mirroring and the fp32 re-check
        self.inferer: GuidedInferer = self.config.get_parsed_content("inferer")
        self.mirror = self.inferer.mirror
        self.precision: Precision = resolve_precision(self.inferer.precision, self.device)
        self.network.to(self.device).eval()
        self.precision.prepare_module(self.network)
        logger.info("inference precision: %s on %s", self.precision.name, self.device)
        # The bundle's preprocessing, split so the full-size normalised image stays available for the overlay.
        self.load, self.letterbox = split_preprocessing(self.config.get_parsed_content("preprocessing"))
        self.invert = Invertd(keys="pred", transform=self.letterbox, orig_keys="image", nearest_interp=False)

    @staticmethod
    def config_overrides(
        weights: str | os.PathLike[str] | None,
        spatial_size: int | None = None,
        threshold: float | None = None,
        rule: DecisionRule | None = None,
        precision: str | None = None,
        mirror: bool | None = None,
    ) -> dict[str, Any]:
        """The ``inference.json`` overrides of the constructor's arguments (``None``: the bundle's):
        ``weights`` is the trained weights file, ``None`` when there is none."""
        overrides: dict[str, Any] = {"ckpt_path": None if weights is None else os.fspath(weights)}
        if spatial_size is not None:
            overrides["spatial_size"] = int(spatial_size)
        if rule is not None:
            overrides.update({f"decision_rule#{k}": v for k, v in rule.to_dict().items()})
        elif threshold is not None:
            overrides["decision_rule#threshold"] = float(threshold)
        if precision is not None:
            overrides["precision"] = precision
        if mirror is not None:
            overrides["mirror"] = bool(mirror)
        return overrides

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
        """Fracture probabilities ``(B, 1, S, S)`` (float32, CPU) for a batch of letterboxed X-rays.

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
        return Prediction(
            image=prepared["original"],
            probability=channels[0],
            decision=decide(channels[0], self.rule),
            meta=dict(image.meta),
        )

    def predict(self, path: str | os.PathLike[str]) -> Prediction:
        """Predict one file. Raises :class:`fracseg.errors.ImageReadError` for unreadable input."""
        prepared = self.prepare(path)
        shape = [tuple(prepared["original"].shape[-2:])]
        return self.finish(prepared, self.infer(prepared["image"].as_tensor()[None], shape)[0])
