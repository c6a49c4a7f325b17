"""The image-level head: a linear fracture classifier on the generator's own deepest features.

The segmentation score (mean of the top probabilities) ranks images only as well as the masks find
fractures: a fractured image whose fracture the generator misses scores as low as a normal one, however
the rule is tuned. The generator's deepest features (1/16 of the letterbox, the most context) carry more
of the image-level evidence; ``studies/image_head_probe.py`` compares a logistic regression on them with
the score alone.

The head is that regression, attached to a trained MONAI ``UNet`` without changing it: forward hooks
capture the network input and the deepest features, and the output block's hook appends one channel
holding the image's fracture logit, constant over the image. The generator's state dict, its training,
its precision handling (:meth:`fracseg.precision.Precision.forward` runs ``model[0]`` and ``model[1:]``
separately; the hooks sit on modules both paths call) and its weights file stay as they are; the head's
numbers live in a separate file (e.g. ``runs/head/image_head.pt``; none is shipped since 0.11.0) written by
:func:`fracseg.engines.image_head_fit.fit_image_head`, tied to the generator weights by their sha256.
Because the second channel is an ordinary output channel, test-time mirroring, the letterbox inversion
(``Invertd``) and the fp32 re-check carry it like the mask channel.

Features per image (``2 C + 2``): the mean and the maximum of each of the ``C`` deepest channels over the
feature cells that cover the image (not the letterbox padding, whose shape would give away the image's
aspect, an acquisition shortcut of FracAtlas), the mean of the :data:`SCORE_TOP_PIXELS` highest
probabilities of the mask channel and its maximum.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet

from fracseg.io.atomic import atomic_path

logger = logging.getLogger(__name__)

#: The mask channel's score summary fed to the head (the shipped rule's ``score_top_pixels``).
SCORE_TOP_PIXELS = 256
#: Version of the file layout written by :func:`save_image_head`.
FORMAT_VERSION = 1


class ImageHead(torch.nn.Module):
    """Standardise pooled features, then a linear map to one logit per image.

    The numbers are non-persistent buffers: attaching the head to a generator leaves the generator's
    ``state_dict`` (and so every checkpoint and ``CheckpointLoader``) unchanged.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().reshape(-1), persistent=False)
        self.register_buffer("std", std.float().reshape(-1).clamp_min(1e-6), persistent=False)
        self.register_buffer("weight", weight.float().reshape(-1), persistent=False)
        self.register_buffer("bias", torch.tensor(float(bias)), persistent=False)

    @property
    def num_features(self) -> int:
        return int(self.weight.numel())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` pooled features -> ``(B,)`` fracture logits (fp32)."""
        z = (features.float() - self.mean) / self.std
        return z @ self.weight + self.bias


def deepest_module(network: UNet, side: int = 64) -> torch.nn.Module:
    """The submodule whose output has the smallest spatial size (the most channels among ties)."""
    found: list[tuple[int, int, int, torch.nn.Module]] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: found.append((o.shape[-1], -o.shape[1], n, m)))
        for n, m in enumerate(network.modules())
        if m is not network
    ]
    first = next(network.parameters())
    try:
        with torch.inference_mode():
            network(torch.zeros(1, network.in_channels, side, side, dtype=first.dtype, device=first.device))
    finally:
        for h in hooks:
            h.remove()
    return min(found, key=lambda t: t[:3])[3]


def content_cells(image: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, grid, grid)`` bool: the feature cells more than half covered by the image rather than by the
    letterbox's zero padding. The image is the bounding box of the rows and columns of channel 0 that hold
    any non-zero value (the padding is exactly 0; an all-zero border row of the image itself counts as
    padding, which changes nothing a classifier could use)."""
    x = image[:, 0].float()
    nonzero = x != 0
    rows, cols = nonzero.any(dim=2), nonzero.any(dim=1)
    box = torch.zeros_like(x)
    for b in range(x.shape[0]):
        r, c = torch.nonzero(rows[b]).flatten(), torch.nonzero(cols[b]).flatten()
        if r.numel() and c.numel():
            box[b, r[0] : r[-1] + 1, c[0] : c[-1] + 1] = 1.0
        else:
            box[b] = 1.0
    return torch.nn.functional.adaptive_avg_pool2d(box[:, None], grid)[:, 0] > 0.5


def pooled_features(image: torch.Tensor, deep: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``(B, 2 C + 2)`` head features from the network input, the deepest features and the output logits
    (see the module docstring)."""
    deep = deep.float()
    cells = content_cells(image, deep.shape[-1]).to(deep.device)
    # an image thinner than half a cell covers none: pool over the whole grid rather than nothing
    cells = cells | ~cells.flatten(1).any(dim=1)[:, None, None]
    weights = cells[:, None].float()
    count = weights.sum(dim=(2, 3)).clamp_min(1.0)
    mean = (deep * weights).sum(dim=(2, 3)) / count
    masked = deep.masked_fill(~cells[:, None], float("-inf"))
    maximum = masked.amax(dim=(2, 3))
    prob = torch.sigmoid(logits[:, 0].float()).flatten(1)
    k = min(SCORE_TOP_PIXELS, prob.shape[1])
    top = prob.topk(k, dim=1).values
    return torch.cat([mean, maximum, top.mean(dim=1, keepdim=True), top[:, :1]], dim=1)


class FeatureTap:
    """Hooks on a MONAI ``UNet`` that compute :func:`pooled_features` on every forward pass.

    With ``head`` the output block's hook appends the head's logit as a second output channel (constant
    over the image); without it the features of each pass are appended to :attr:`collected` (for fitting)
    and the output is left alone. :meth:`remove` detaches the hooks.
    """

    def __init__(self, network: UNet, head: ImageHead | None = None) -> None:
        model = network.model
        if not isinstance(model, torch.nn.Sequential) or len(model) < 2:
            raise TypeError("the image head needs a MONAI UNet (network.model = input, inner, output blocks)")
        self.head = head
        self.collected: list[torch.Tensor] = []
        # per thread: a served model may run forward passes on several threads at once
        self._state = threading.local()
        self._handles = [
            model[0].register_forward_pre_hook(self._keep_input),
            deepest_module(network).register_forward_hook(self._keep_deep),
            model[-1].register_forward_hook(self._output),
        ]

    def _keep_input(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._state.input = args[0]

    def _keep_deep(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        self._state.deep = output

    def _output(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        image, deep = getattr(self._state, "input", None), getattr(self._state, "deep", None)
        if image is None or deep is None:
            raise RuntimeError("image head hooks fired out of order")
        self._state.input = self._state.deep = None
        with torch.autocast(output.device.type, enabled=False):
            features = pooled_features(image, deep, output)
            if self.head is None:
                self.collected.append(features.detach().cpu())
                return None
            logit = self.head(features.to(self.head.weight.device))
            plane = logit[:, None, None, None].expand(-1, 1, *output.shape[2:])
            return torch.cat([output.float(), plane.to(output.device)], dim=1)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclass
class ImageHeadFile:
    """What ``image_head.pt`` holds besides the numbers: enough to refuse it for other weights."""

    head: ImageHead
    generator_sha256: str
    info: dict[str, Any]


def save_image_head(path: str | Path, head: ImageHead, generator_sha256: str, info: dict[str, Any]) -> None:
    """Write the head atomically (plain tensors and JSON-able values: loadable with ``weights_only``)."""
    payload = {
        "format": FORMAT_VERSION,
        "mean": head.mean.cpu(),
        "std": head.std.cpu(),
        "weight": head.weight.cpu(),
        "bias": float(head.bias),
        "score_top_pixels": SCORE_TOP_PIXELS,
        "generator_sha256": generator_sha256,
        "info": info,
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def load_image_head(path: str | Path) -> ImageHeadFile:
    """Read a file written by :func:`save_image_head` (no code runs: ``weights_only=True``)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not an image head file of format {FORMAT_VERSION}")
    if int(payload.get("score_top_pixels", -1)) != SCORE_TOP_PIXELS:
        raise ValueError(f"{path}: fitted with another score summary than top-{SCORE_TOP_PIXELS}")
    head = ImageHead(payload["mean"], payload["std"], payload["weight"], payload["bias"])
    return ImageHeadFile(head=head, generator_sha256=str(payload["generator_sha256"]), info=payload["info"])


def attach_image_head(network: UNet, head: ImageHead) -> FeatureTap:
    """Give ``network`` the head's second output channel (in place); returns the hooks' owner."""
    if has_image_head(network):
        raise ValueError("this network already has an image head")
    first = next(network.parameters())
    head.to(first.device)
    tap = FeatureTap(network, head)
    network.image_head_tap = tap  # keeps the hooks' owner alive with the network and marks it as headed
    return tap


def has_image_head(network: torch.nn.Module) -> bool:
    """Whether :func:`attach_image_head` gave ``network`` the image-level channel."""
    return getattr(network, "image_head_tap", None) is not None


def attach_image_head_file(network: UNet, path: str | Path | None, weights_sha256: str | None) -> bool:
    """Attach the head stored at ``path`` when it was fitted for the generator weights ``weights_sha256``.

    A missing file (or ``None``) leaves the network alone (the image score is then the mask channel's
    top-pixel summary, gated by the rule's ``score_threshold``); a head fitted for other weights is refused
    with a warning, because its features would not mean what they meant when it was fitted.
    ``weights_sha256`` ``None``: no check. Returns whether the network now has the head.
    """
    if has_image_head(network):
        return True
    if path is None or not Path(path).is_file():
        return False
    stored = load_image_head(path)
    if weights_sha256 is not None and stored.generator_sha256 != weights_sha256:
        logger.warning(
            "image head %s was fitted for generator weights %s..., not these (%s...): not used; the image "
            "score is the mask's top-pixel mean, gated by the rule's score_threshold (fit a head for these "
            "weights with `fracseg fit-image-head`)",
            path,
            stored.generator_sha256[:12],
            weights_sha256[:12],
        )
        return False
    attach_image_head(network, stored.head)
    logger.info("image head: %s", path)
    return True
