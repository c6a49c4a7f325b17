"""The conditional-GAN trainer: step isolation, learning, output keys, stock MONAI handlers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler, from_engine
from monai.utils import CommonKeys

from fracseg.engines import ConditionalGanTrainer, GanOutputKeys, GanSettings
from fracseg.losses import AdversarialLoss, SegmentationLoss
from fracseg.networks import build_discriminator, build_generator

SIZE = 32


def _loader(n: int = 4, seed: int = 0) -> DataLoader:
    """``n`` random X-rays whose label is ``image > 0.5`` (trivially learnable), batch 2."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        image = torch.rand(1, SIZE, SIZE, generator=g)
        items.append({"image": image, "label": (image > 0.5).float()})
    return DataLoader(Dataset(items), batch_size=2, shuffle=False, num_workers=0)


def _trainer(max_epochs: int = 2, n: int = 4, lr: float = 1e-3, **kwargs) -> ConditionalGanTrainer:
    torch.manual_seed(0)
    gen = build_generator(channels=(8, 16), strides=(2,), num_res_units=0)
    disc = build_discriminator(channels=8, num_layers_d=2)
    fields = {f.name for f in dataclasses.fields(GanSettings)}
    settings = GanSettings(
        **{"adversarial_weight": 0.1, "seed": 0, **{k: v for k, v in kwargs.items() if k in fields}}
    )
    options = {k: v for k, v in kwargs.items() if k not in fields}
    return ConditionalGanTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=_loader(n),
        network=gen,
        optimizer=torch.optim.Adam(gen.parameters(), lr=lr),
        discriminator=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), lr=lr),
        seg_loss=SegmentationLoss(),
        adv_loss=AdversarialLoss("lsgan"),
        settings=settings,
        **options,
    )


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = next(iter(_loader()))
    return torch.as_tensor(data["image"]), torch.as_tensor(data["label"])


def test_discriminator_step_updates_only_the_discriminator() -> None:
    trainer = _trainer()
    image, label = _batch()
    g_input, _ = trainer.guided_input(image, label)
    logits = trainer.network(g_input)
    g_before, d_before = _params(trainer.network), _params(trainer.discriminator)
    d_loss, d_acc = trainer.discriminator_step(image, label, logits)
    assert not _changed(g_before, trainer.network)
    assert _changed(d_before, trainer.discriminator)
    assert all(p.grad is None for p in trainer.network.parameters())
    assert d_loss.ndim == 0 and torch.isfinite(d_loss) and 0.0 <= d_acc <= 1.0


def test_generator_step_updates_only_the_generator() -> None:
    trainer = _trainer()
    image, label = _batch()
    g_input, _ = trainer.guided_input(image, label)
    logits = trainer.network(g_input)
    g_before, d_before = _params(trainer.network), _params(trainer.discriminator)
    loss, seg, adv = trainer.generator_step(image, label, logits, weight=0.5)
    assert _changed(g_before, trainer.network)
    assert not _changed(d_before, trainer.discriminator)
    assert all(p.grad is None for p in trainer.discriminator.parameters())  # frozen: no leaked gradients
    assert all(p.requires_grad for p in trainer.discriminator.parameters())  # ... and unfrozen again
    assert loss.item() == pytest.approx(seg.item() + 0.5 * adv.item(), rel=1e-5)


def test_warmup_skips_the_discriminator_and_outputs_all_keys() -> None:
    trainer = _trainer(max_epochs=2, warmup_epochs=2)
    d_before = _params(trainer.discriminator)
    trainer.run()
    assert trainer.state.iteration == 4
    assert not _changed(d_before, trainer.discriminator)
    out = trainer.state.output  # decollated: one dict per item
    assert isinstance(out, list) and len(out) == 2
    for key in (CommonKeys.IMAGE, CommonKeys.LABEL, CommonKeys.PRED, CommonKeys.LOSS, "d_loss", "d_acc"):
        assert key in out[0]
    assert out[0][CommonKeys.PRED].shape == (1, SIZE, SIZE)
    assert out[0]["d_loss"] == 0 and math.isnan(out[0]["d_acc"]) and out[0]["adv_weight"] == 0.0


def test_adversarial_run_reports_discriminator_stats_and_simulates_clicks() -> None:
    trainer = _trainer(max_epochs=2, click_probability=1.0, decollate=False)
    d_before = _params(trainer.discriminator)
    trainer.run()
    out = trainer.state.output
    assert _changed(d_before, trainer.discriminator)
    assert out[GanOutputKeys.ADV_WEIGHT] == 0.1 and out[GanOutputKeys.CLICKED] is True
    assert out["d_loss"] > 0 and 0.0 <= out["d_acc"] <= 1.0
    assert out[GanOutputKeys.GUIDANCE].shape == (2, 2, SIZE, SIZE)
    assert out[GanOutputKeys.GUIDANCE].max() == pytest.approx(1.0)  # an untrained generator makes errors
    assert out[CommonKeys.LOSS].item() == pytest.approx(
        (out["seg_loss"] + 0.1 * out["g_adv_loss"]).item(), rel=1e-5
    )


def test_loss_decreases_on_a_learnable_task() -> None:
    trainer = _trainer(max_epochs=10, lr=1e-2, decollate=False)  # 20 iterations
    seg_losses: list[float] = []
    losses: list[float] = []

    def record(engine: ConditionalGanTrainer) -> None:
        seg_losses.append(float(engine.state.output[GanOutputKeys.SEG_LOSS]))
        losses.append(float(engine.state.output[CommonKeys.LOSS]))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    assert len(seg_losses) == 20
    # the supervised term alone (the adversarial term starts high while the critic is untrained)
    assert sum(seg_losses[-4:]) / 4 < 0.8 * sum(seg_losses[:4]) / 4
    assert sum(losses[-4:]) < sum(losses[:4])


def test_stock_handlers_and_checkpoint_round_trip(tmp_path: Path) -> None:
    trainer = _trainer(max_epochs=2)
    StatsHandler(name="fracseg.test", output_transform=from_engine(["loss"], first=True)).attach(trainer)
    save_dict = {
        "model": trainer.network,
        "discriminator": trainer.discriminator,
        "optimizer": trainer.optimizer,
        "d_optimizer": trainer.d_optimizer,
        "trainer": trainer,
    }
    CheckpointSaver(save_dir=str(tmp_path), save_dict=save_dict, save_final=True).attach(trainer)
    trainer.run()
    checkpoints = list(tmp_path.glob("*.pt"))
    assert len(checkpoints) == 1

    fresh = _trainer(max_epochs=2, seed=1)
    torch.manual_seed(123)
    for p in [*fresh.network.parameters(), *fresh.discriminator.parameters()]:
        torch.nn.init.normal_(p)
    load_dict = {
        "model": fresh.network,
        "discriminator": fresh.discriminator,
        "optimizer": fresh.optimizer,
        "d_optimizer": fresh.d_optimizer,
        "trainer": fresh,
    }
    CheckpointLoader(load_path=str(checkpoints[0]), load_dict=load_dict)(fresh)
    for name in ("network", "discriminator"):
        a, b = getattr(trainer, name).state_dict(), getattr(fresh, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("optimizer", "d_optimizer"):
        a, b = getattr(trainer, name).state_dict()["state"], getattr(fresh, name).state_dict()["state"]
        assert a.keys() == b.keys() and len(a) > 0
        assert all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
    assert fresh.state.epoch == 2 and fresh.state.iteration == 4


def test_critic_every_skips_critic_updates_on_the_other_iterations() -> None:
    trainer = _trainer(max_epochs=1, n=8, critic_every=2)
    d_losses: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: d_losses.append(float(e.state.output[0][GanOutputKeys.D_LOSS]))
    )
    trainer.run()
    assert len(d_losses) == 4
    assert d_losses[0] == 0.0 and d_losses[2] == 0.0  # iterations 1 and 3: no critic step
    assert d_losses[1] > 0.0 and d_losses[3] > 0.0
    with pytest.raises(ValueError, match="critic_every"):
        _trainer(critic_every=0)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_instance_noise_reaches_every_mask_the_critic_sees(noise: float) -> None:
    """With instance noise the critic's mask channel (real and fake, critic step and generator step) leaves
    [0, 1] with roughly the configured spread; without it every mask stays in [0, 1]."""
    trainer = _trainer(max_epochs=1, instance_noise=noise)
    seen: list[torch.Tensor] = []
    trainer.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 1:].detach()))
    trainer.run()
    assert len(seen) == 4  # 2 iterations x (critic step on [real; fake] + generator's adversarial term)
    masks = torch.cat([s.flatten() for s in seen])
    if noise == 0:
        assert masks.min() >= 0 and masks.max() <= 1
    else:
        assert masks.min() < -0.5 and masks.max() > 1.5
        real = seen[0][:2]  # first half of the critic step's batch: the softened ground truth
        truth = next(iter(_loader()))["label"]
        assert (real - truth).std() == pytest.approx(noise, rel=0.2)
    with pytest.raises(ValueError, match="instance_noise"):
        _trainer(instance_noise=-0.1)
