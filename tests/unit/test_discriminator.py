"""The conditional PatchGAN critic: shapes, spectral norm, the conditional contract, real-mask softening."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import MultiScalePatchDiscriminator, PatchDiscriminator
from torch.nn.utils import parametrize

from fracseg.networks import build_discriminator, discriminator_logits, soften_real_mask


def _pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, size, size, generator=g), (
        torch.rand(2, 1, size, size, generator=g) > 0.5
    ).float()


def test_single_scale_returns_final_patch_map_only() -> None:
    disc = build_discriminator(channels=8, num_layers_d=3)
    assert isinstance(disc, PatchDiscriminator)
    image, mask = _pair(32)
    out = discriminator_logits(disc, image, mask)
    # 32 -> 16 (initial, stride 2) -> 8 -> 4 (stride 2) -> 3 (stride 1) -> 2 (final 4x4 conv, pad 1)
    assert len(out) == 1
    assert out[0].shape == (2, 1, 2, 2)
    # the same tensor MONAI puts last in its list of intermediate features
    torch.manual_seed(0)
    disc.eval()
    raw = disc(torch.cat([image, mask], dim=1))
    torch.testing.assert_close(discriminator_logits(disc, image, mask)[0], raw[-1])


@pytest.mark.parametrize(("num_d", "expected"), [(2, [(15, 15), (7, 7)]), (3, [(15, 15), (7, 7), (3, 3)])])
def test_multiscale_returns_one_patch_map_per_scale(num_d: int, expected: list[tuple[int, int]]) -> None:
    disc = build_discriminator(channels=8, num_layers_d=1, multiscale=True, num_d=num_d, image_size=32)
    assert isinstance(disc, MultiScalePatchDiscriminator)
    out = discriminator_logits(disc, *_pair(32))
    assert [tuple(o.shape[2:]) for o in out] == expected
    assert all(o.shape[:2] == (2, 1) for o in out)


@pytest.mark.parametrize("multiscale", [False, True])
def test_spectral_norm_wraps_every_convolution(multiscale: bool) -> None:
    disc = build_discriminator(channels=8, num_layers_d=2, multiscale=multiscale, num_d=2, image_size=32)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) >= 4
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    plain = build_discriminator(channels=8, num_layers_d=2, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules() if isinstance(m, torch.nn.Conv2d))


def test_spectral_norm_bounds_the_weight_norm() -> None:
    disc = build_discriminator(channels=8, num_layers_d=2)
    disc.train()
    x = torch.cat(_pair(32), dim=1)
    for _ in range(20):  # power iterations converge during training forwards
        disc(x)
    conv = next(m for m in disc.modules() if isinstance(m, torch.nn.Conv2d))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_discriminator_is_conditional() -> None:
    disc = build_discriminator(channels=8)
    image, mask = _pair(32)
    with pytest.raises(ValueError, match="conditional"):
        discriminator_logits(disc, mask, mask[:, :0])  # the mask alone
    with pytest.raises(ValueError, match="conditional"):
        discriminator_logits(disc, torch.cat([image, image], 1), mask)


def test_soften_real_mask_overlaps_the_generator_range_and_keeps_classes() -> None:
    _, mask = _pair(32)
    soft = soften_real_mask(mask, generator=torch.Generator().manual_seed(1), smoothing=0.1)
    assert soft.dtype == torch.float32 and soft.shape == mask.shape
    fg, bg = soft[mask == 1], soft[mask == 0]
    assert fg.min() >= 0.9 and fg.max() <= 1.0 and bg.min() >= 0.0 and bg.max() <= 0.1
    # not separable by value: almost no pixel is exactly 0 or 1
    assert ((soft == 0) | (soft == 1)).float().mean() < 0.01
    again = soften_real_mask(mask, generator=torch.Generator().manual_seed(1), smoothing=0.1)
    torch.testing.assert_close(soft, again)
    blurred = soften_real_mask(mask, smoothing=0.0, blur_sigma=1.0)
    assert ((blurred > 0.05) & (blurred < 0.95)).any()  # soft edges
    with pytest.raises(ValueError):
        soften_real_mask(mask, smoothing=0.5)
