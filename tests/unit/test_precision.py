"""The precision switch: what "auto" picks, the environment override, and bf16 vs fp32 in the inferer and
the trainer (weights stay fp32, bf16 needs no loss scaling)."""

from __future__ import annotations

import subprocess

import pytest
import torch

from fracseg import precision as precision_module
from fracseg.engines import ConditionalGanTrainer, GanSettings
from fracseg.inference.decision import DecisionRule
from fracseg.inference.inferer import GuidedInferer
from fracseg.losses import AdversarialLoss, SegmentationLoss
from fracseg.networks import build_discriminator, build_generator
from fracseg.networks.generator import GENERATOR_IN_CHANNELS, with_empty_guidance
from fracseg.precision import PRECISION_ENV, cpu_description, resolve_precision


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRECISION_ENV, raising=False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu_and_forced_values_win(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    auto = resolve_precision("auto", "cpu")
    assert auto.name == ("bf16" if native else "fp32")
    assert auto.amp is native and auto.channels_last is native
    assert auto.dtype == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("fp32", "cpu").amp is False
    forced = resolve_precision("bf16", "cpu")
    assert forced.amp and forced.channels_last and forced.requested == "bf16"


def test_environment_overrides_auto_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert resolve_precision("auto", "cpu").name == "fp32"
    assert resolve_precision("bf16", "cpu").name == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        resolve_precision("auto", "cpu")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("half", "cpu")


def test_bf16_inferer_returns_float32_logits_close_to_fp32() -> None:
    torch.manual_seed(0)
    net = build_generator(channels=(8, 16, 32, 64, 128)).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        ref = GuidedInferer(precision="fp32")(x, net)
        out = GuidedInferer(precision="bf16")(x, net)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (2, 1, 64, 64)
    assert not torch.equal(out, ref)  # bf16 really ran
    assert torch.allclose(torch.sigmoid(out), torch.sigmoid(ref), atol=0.02)
    assert net.model[0].conv.unit0.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_answer_near_the_image_threshold_is_recomputed_in_fp32() -> None:
    """An image whose bf16 score lies within ``fp32_margin`` of the threshold gets the fp32 logits (up to
    fp32 summation order), so bf16 cannot flip its decision; the other images keep their bf16 logits;
    clicks turn the re-check off."""
    from fracseg.inference.decision import fracture_score

    torch.manual_seed(0)
    net = build_generator(channels=(8, 16, 32, 64, 128)).eval()
    x = torch.rand(2, 1, 64, 64)
    x[1] = x[1] * 0.2  # a second, different image: its score sits elsewhere
    with torch.inference_mode():
        ref = GuidedInferer(precision="fp32", mirror=True)(x, net)
        plain = GuidedInferer(precision="bf16", mirror=True)(x, net)
        scores = [fracture_score(torch.sigmoid(plain[i]).numpy(), 16) for i in range(2)]
        assert abs(scores[0] - scores[1]) > 1e-3
        margin = abs(scores[0] - scores[1]) / 2
        guarded = GuidedInferer(
            precision="bf16",
            mirror=True,
            rule=DecisionRule(score_threshold=scores[0], score_top_pixels=16),
            fp32_margin=margin,
        )
        out = guarded(x, net)
        assert guarded.rechecked == 1
        # fp32 up to summation order (memory layout, batch of one): far closer than bf16 gets
        assert torch.allclose(out[0], ref[0], atol=1e-4) and not torch.allclose(plain[0], ref[0], atol=1e-3)
        assert torch.equal(out[1], plain[1])
        clicked = guarded(with_empty_guidance(x, GENERATOR_IN_CHANNELS), net)  # guidance given: no re-check
        assert guarded.rechecked == 1 and torch.equal(clicked[0], plain[0])
        # displayed sizes equal to the letterbox: the same top pixels, the same re-check
        assert torch.equal(guarded(x, net, display_shapes=[(64, 64), (64, 64)]), out)
        assert guarded.rechecked == 2
    # the displayed image's top 256 pixels at letterbox scale (longest side -> 512); unknown size: as given
    inferer = GuidedInferer(
        precision="bf16", rule=DecisionRule(score_threshold=0.5, score_top_pixels=256), fp32_margin=0.02
    )
    assert inferer.recheck.top_pixels(512, (373, 454)) == 326  # FracAtlas JPEG, upsampled
    assert inferer.recheck.top_pixels(512, (1976, 1576)) == 17  # CR DICOM, downsampled
    assert inferer.recheck.top_pixels(512, None) == 256


def test_bf16_training_step_keeps_fp32_weights_and_skips_loss_scaling() -> None:
    torch.manual_seed(0)
    gen = build_generator(channels=(8, 16, 32, 64, 128)).to(memory_format=torch.channels_last)
    disc = build_discriminator(channels=8)
    batch = {"image": torch.rand(2, 1, 64, 64), "label": (torch.rand(2, 1, 64, 64) > 0.9).float()}
    trainer = ConditionalGanTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[batch, batch],
        network=gen,
        optimizer=torch.optim.AdamW(gen.parameters(), 1e-3),
        discriminator=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), 1e-4),
        seg_loss=SegmentationLoss(),
        adv_loss=AdversarialLoss("lsgan"),
        settings=GanSettings(adversarial_weight=0.05),
        amp=True,
        amp_kwargs={"dtype": torch.bfloat16},
        decollate=False,
    )
    before = [p.detach().clone() for p in gen.parameters()]
    trainer.run()
    assert not trainer.g_scaler.is_enabled() and not trainer.d_scaler.is_enabled()
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters(), strict=True))
    assert torch.isfinite(torch.as_tensor(trainer.state.output["loss"]))


def test_cpu_description_names_the_cpu_as_lscpu_does_with_its_bf16_flags() -> None:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    described = cpu_description()
    assert described.startswith(name + " (")
    for flag in ("avx512_bf16", "amx_bf16"):
        assert (flag in described) == (flag in flags)
