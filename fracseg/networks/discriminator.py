"""The conditional discriminator: a MONAI 2D PatchGAN critic scoring (X-ray, mask) pairs.

The critic always sees the X-ray and a mask together, concatenated on channels
(``concat(image, mask)``, 1 + 1 = 2 channels by default): an unconditional critic that sees the mask alone
can only learn a shape prior, not whether the mask fits *this* X-ray.

Real masks are binary ``{0, 1}`` while generated masks are sigmoid probabilities in ``(0, 1)``; left as is,
the critic can separate them by value range alone (any value strictly between 0 and 1 is fake) and its
gradient then carries no information about shape. :func:`soften_real_mask` removes that shortcut.
"""

from __future__ import annotations

import logging

import torch
from monai.networks.layers import GaussianFilter
from monai.networks.nets import MultiScalePatchDiscriminator, PatchDiscriminator
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

logger = logging.getLogger(__name__)

#: X-ray + mask (or fracture probability).
DISCRIMINATOR_IN_CHANNELS = 2


def build_discriminator(
    in_channels: int = DISCRIMINATOR_IN_CHANNELS,
    channels: int = 32,
    num_layers_d: int = 3,
    spectral_norm: bool = True,
    multiscale: bool = False,
    num_d: int = 2,
    norm: str | tuple | None = None,
    image_size: int = 512,
) -> torch.nn.Module:
    """A conditional PatchGAN critic (MONAI, 2D) for ``concat(image, mask)`` inputs.

    Args:
        in_channels: channels of the concatenated input (image channels + mask channels).
        channels: filters of the first convolution; doubled at every layer.
        num_layers_d: strided layers of the (first) critic; MONAI's multi-scale critic ``i`` (0-based) has
            ``num_layers_d * (i + 1)`` layers, i.e. deeper critics with larger receptive fields.
        spectral_norm: wrap every convolution in ``torch.nn.utils.parametrizations.spectral_norm``.
        multiscale: build a ``MultiScalePatchDiscriminator`` of ``num_d`` critics instead of one.
        num_d: number of critics when ``multiscale`` is True.
        norm: normalisation between convolutions (MONAI name such as ``"BATCH"``/``"INSTANCE"``), or None.
            None by default: spectral normalisation already bounds the critic, and batch norm would mix
            statistics of the separate real and fake batches. Convolutions get a bias when ``norm`` is None.
        image_size: smallest input side expected; MONAI's multi-scale critic refuses depths that would
            reduce it below one pixel.

    Returns:
        The critic. Use :func:`discriminator_logits` to call it; it returns one patch map per scale.
    """
    bias = norm is None
    disc: torch.nn.Module
    if multiscale:
        disc = MultiScalePatchDiscriminator(
            num_d=num_d,
            num_layers_d=num_layers_d,
            spatial_dims=2,
            channels=channels,
            in_channels=in_channels,
            out_channels=1,
            norm=norm,  # type: ignore[arg-type]
            bias=bias,
            minimum_size_im=image_size,
        )
    else:
        disc = PatchDiscriminator(
            spatial_dims=2,
            channels=channels,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=num_layers_d,
            norm=norm,  # type: ignore[arg-type]
            bias=bias,
        )
    if spectral_norm:
        n_wrapped = 0
        for module in list(disc.modules()):
            if isinstance(module, torch.nn.Conv2d):
                _spectral_norm(module)
                n_wrapped += 1
        logger.debug("Spectral normalisation applied to %d convolutions", n_wrapped)
    return disc


def discriminator_in_channels(disc: torch.nn.Module) -> int:
    """The number of input channels the critic expects (that of its first convolution)."""
    for module in disc.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    raise ValueError("The discriminator has no Conv2d layer.")


def discriminator_logits(
    disc: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor
) -> list[torch.Tensor]:
    """Score ``(image, mask)`` pairs: the final patch map of every scale.

    MONAI's ``PatchDiscriminator`` returns its intermediate features with the patch map *last*;
    ``MultiScalePatchDiscriminator`` returns ``(patch maps, features)``. Both are reduced here to the
    patch maps alone.

    Args:
        disc: a critic from :func:`build_discriminator`.
        image: ``(B, Ci, H, W)`` float X-ray batch (normalised to [0, 1]).
        mask: ``(B, Cm, H, W)`` float mask or fracture probability in [0, 1].

    Returns:
        One ``(B, 1, h_s, w_s)`` tensor of unbounded patch logits per scale (length 1 for a single critic).

    Raises:
        ValueError: when ``Ci + Cm`` differs from the critic's input channels (e.g. a mask without image).
    """
    inner = getattr(disc, "module", disc)  # DistributedDataParallel wraps the critic
    expected = discriminator_in_channels(inner)
    if image.shape[1] + mask.shape[1] != expected:
        raise ValueError(
            f"The discriminator is conditional: it expects {expected} channels of concat(image, mask), "
            f"got image with {image.shape[1]} and mask with {mask.shape[1]}."
        )
    out = disc(torch.cat([image, mask.to(image.dtype)], dim=1))
    if isinstance(inner, MultiScalePatchDiscriminator):
        return list(out[0])
    return [out[-1]]


def soften_real_mask(
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
    smoothing: float = 0.1,
    blur_sigma: float = 0.0,
) -> torch.Tensor:
    """Make a binary ground-truth mask look like a (confident) generator output before the critic sees it.

    Choice: one-sided-per-class *uniform label noise*. Every foreground pixel becomes ``1 - u`` and every
    background pixel ``u`` with ``u ~ U(0, smoothing)`` drawn per pixel, so real masks live in
    ``[0, s] ∪ [1 - s, 1]`` like a confident sigmoid output, and value range alone (exactly 0/1 vs
    strictly inside) no longer separates real from fake. Per-pixel noise, rather than one constant
    (classic label smoothing), also removes the "perfectly flat regions" cue. An optional Gaussian blur
    (``blur_sigma`` > 0, in pixels) additionally softens the edges the way a sigmoid output is soft at
    boundaries; it is off by default because fracture lines are only a few pixels wide and a blur of
    comparable width erases them.

    Args:
        mask: ``(B, C, H, W)`` mask with values in {0, 1} (any dtype).
        generator: random generator for reproducible noise; the global one when None.
        smoothing: upper bound ``s`` of the noise, in [0, 0.5).
        blur_sigma: standard deviation of an optional Gaussian blur applied first; 0 disables it.

    Returns:
        A float tensor of the same shape with values in [0, 1].
    """
    if not 0.0 <= smoothing < 0.5:
        raise ValueError(f"smoothing must be in [0, 0.5), got {smoothing}")
    soft = mask.float()
    if blur_sigma > 0:
        soft = GaussianFilter(spatial_dims=2, sigma=blur_sigma).to(soft.device)(soft)
    if smoothing > 0:
        noise = torch.rand(soft.shape, generator=generator, device="cpu").to(soft.device) * smoothing
        soft = soft * (1.0 - noise) + (1.0 - soft) * noise
    return soft.clamp(0.0, 1.0)
