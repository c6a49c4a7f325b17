"""Conditional-GAN trainer: a MONAI ``Trainer`` that trains the segmentation generator against a critic.

One iteration (see :meth:`ConditionalGanTrainer._iteration`):

0. With probability ``click_probability``, one simulated click round: the generator predicts without
   guidance (eval mode, no gradients), :func:`~fracseg.engines.clicks.simulate_clicks` turns its errors
   into guidance, and the rest of the iteration trains on the *guided* prediction. Otherwise the guidance
   channels are zeros (or whatever the batch already carries).
1. Generator forward: ``logits = G(concat(xray, guidance))``.
2. Critic step (skipped entirely while the scheduled adversarial weight is 0): ``D(xray, softened label)``
   vs ``D(xray, sigmoid(logits).detach())``, updating the critic only.
3. Generator step: ``seg_loss(logits, label) + w * adv_loss.generator_loss(D(xray, sigmoid(logits)))``,
   updating the generator only (the critic's parameters are frozen during this step, so it leaves no
   gradients on them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.transforms import Transform
from monai.utils import AdversarialIterationEvents, StrEnum
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from fracseg.engines.clicks import CLICK_SIGMA, simulate_clicks
from fracseg.losses import AdversarialLoss, adversarial_weight_at
from fracseg.networks.discriminator import discriminator_logits, soften_real_mask
from fracseg.networks.generator import GENERATOR_IN_CHANNELS, with_empty_guidance

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric

logger = logging.getLogger(__name__)

#: Channels of the X-ray in the generator input (the rest are guidance).
XRAY_CHANNELS = 1


class GanOutputKeys(StrEnum):
    """Keys of ``engine.state.output`` added to MONAI's ``CommonKeys`` by :class:`ConditionalGanTrainer`."""

    SEG_LOSS = "seg_loss"
    G_ADV_LOSS = "g_adv_loss"
    D_LOSS = "d_loss"
    D_ACC = "d_acc"
    ADV_WEIGHT = "adv_weight"
    GUIDANCE = "guidance"
    CLICKED = "clicked"


@contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on a module's parameters (restoring the previous flags)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class GanSettings:
    """What makes :class:`ConditionalGanTrainer`'s iteration adversarial and interactive (``train.json``:
    ``trainer#settings``).

    Args:
        adversarial_weight: final weight of the generator's adversarial term.
        warmup_epochs: epochs trained on ``seg_loss`` alone (no critic step at all).
        ramp_epochs: epochs over which the weight then ramps linearly (:func:`adversarial_weight_at`).
        click_probability: per-iteration probability of one simulated click round, in [0, 1].
        click_sigma: standard deviation of the click heat maps, in pixels.
        real_smoothing: noise bound of :func:`soften_real_mask` applied to real masks before the critic.
        critic_every: update the critic on every ``critic_every``-th iteration only (the generator's
            adversarial term is computed every iteration); 2 halves the critic's share of the step time.
        instance_noise: standard deviation of Gaussian noise added to every mask the critic sees, real and
            fake alike, in the critic step and in the generator's adversarial term (instance noise,
            Sønderby et al. 2017): it blurs the cues that let a critic separate binary ground truth from
            soft predictions perfectly (measured: patch accuracy 0.99 within 8 epochs without it), so the
            critic keeps giving the generator a usable gradient. 0 disables it.
        seed: seeds the trainer's own random generator (click rounds, tie breaks, real-mask noise);
            the global torch generator is used when None.

    Raises:
        ValueError: ``click_probability`` outside [0, 1], ``critic_every`` < 1 or ``instance_noise`` < 0.
    """

    adversarial_weight: float = 0.01
    warmup_epochs: int = 0
    ramp_epochs: int = 0
    click_probability: float = 0.0
    click_sigma: float = CLICK_SIGMA
    real_smoothing: float = 0.1
    critic_every: int = 1
    instance_noise: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.click_probability <= 1.0:
            raise ValueError(f"click_probability must be in [0, 1], got {self.click_probability}")
        if self.critic_every < 1:
            raise ValueError(f"critic_every must be >= 1, got {self.critic_every}")
        if self.instance_noise < 0:
            raise ValueError(f"instance_noise must be >= 0, got {self.instance_noise}")
        object.__setattr__(self, "instance_noise", float(self.instance_noise))


class ConditionalGanTrainer(Trainer):
    """Adversarial training of the fracture generator with a conditional PatchGAN critic.

    Networks, optimisers and gradient scalers are engine attributes (``network``, ``optimizer``,
    ``discriminator``, ``d_optimizer``, ``g_scaler``, ``d_scaler``), so a ``CheckpointSaver`` can save
    them: ``save_dict={"model": G, "discriminator": D, "optimizer": opt, "d_optimizer": d_opt,
    "trainer": trainer}``.

    Args:
        device: device to train on.
        max_epochs: total number of epochs.
        train_data_loader: iterable of batches; dictionaries with ``"image"`` ``(B, 1 or 3, H, W)`` (X-ray,
            optionally followed by two guidance channels) and ``"label"`` ``(B, 1, H, W)`` in {0, 1}.
        network: the generator, ``concat(xray, fg guidance, bg guidance) -> (B, 1, H, W)`` logits.
        optimizer: the generator's optimiser.
        discriminator: the conditional critic (:func:`fracseg.networks.build_discriminator`).
        d_optimizer: the critic's optimiser.
        seg_loss: ``(logits, label) -> scalar``, e.g. :class:`fracseg.losses.SegmentationLoss`.
        adv_loss: the GAN objective (:class:`fracseg.losses.AdversarialLoss`).
        settings: the adversarial and click settings (:class:`GanSettings`; default: its defaults).
        epoch_length: iterations per epoch; ``len(train_data_loader)`` when None.
        non_blocking: asynchronous host-to-device copies.
        prepare_batch: as in ``SupervisedTrainer``; extra ``args``/``kwargs`` go to the generator.
        iteration_update: replaces :meth:`_iteration` when given.
        postprocessing: transform applied to the (decollated) output at ``MODEL_COMPLETED``.
        key_train_metric: Ignite metric computed every iteration, averaged per epoch.
        additional_metrics: more Ignite metrics.
        metric_cmp_fn: compares the key metric with the best so far.
        train_handlers: handlers with an ``attach`` method (``StatsHandler``, ``CheckpointSaver``, ...).
        amp: mixed precision (autocast on the device type, one ``torch.amp.GradScaler`` per network).
        event_names: additional custom events to register.
        event_to_attr: maps events to ``engine.state`` attributes.
        decollate: decollate batch and output after each iteration (for MONAI post-processing).
        optim_set_to_none: ``zero_grad(set_to_none=...)`` for both optimisers.
        to_kwargs: extra arguments for ``prepare_batch``'s tensor conversion.
        amp_kwargs: extra arguments for ``torch.autocast``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        discriminator: torch.nn.Module,
        d_optimizer: Optimizer,
        seg_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        adv_loss: AdversarialLoss,
        *,
        settings: GanSettings | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.register_events(*AdversarialIterationEvents)
        self.network = network
        self.optimizer = optimizer
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.seg_loss = seg_loss
        self.adv_loss = adv_loss
        self.settings = settings or GanSettings()
        self.optim_set_to_none = optim_set_to_none
        self.rng = None if self.settings.seed is None else torch.Generator().manual_seed(self.settings.seed)
        device_type = torch.device(device).type
        self.autocast_device_type = device_type
        # Loss scaling guards fp16 gradients against underflow; bf16 has fp32's exponent range and needs none.
        scale = amp and self.amp_kwargs.get("dtype", torch.float16) == torch.float16
        self.g_scaler = torch.amp.GradScaler(device_type, enabled=scale)
        self.d_scaler = torch.amp.GradScaler(device_type, enabled=scale)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.autocast_device_type, enabled=self.amp, **self.amp_kwargs)

    def current_adversarial_weight(self) -> float:
        """The scheduled adversarial weight for the current epoch (0 before the run starts)."""
        return adversarial_weight_at(
            self.state.epoch,
            self.settings.warmup_epochs,
            self.settings.ramp_epochs,
            self.settings.adversarial_weight,
        )

    def guided_input(
        self, inputs: torch.Tensor, label: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, bool]:
        """The generator input for this iteration, after an optional simulated click round.

        Args:
            inputs: ``(B, 1, H, W)`` X-ray or ``(B, 3, H, W)`` X-ray + guidance batch.
            label: ``(B, 1, H, W)`` ground truth in {0, 1}.
            args: extra positional arguments for the generator.
            kwargs: extra keyword arguments for the generator.

        Returns:
            ``(B, 3, H, W)`` generator input and whether clicks were simulated.
        """
        xray = inputs[:, :XRAY_CHANNELS]
        base = with_empty_guidance(inputs, GENERATOR_IN_CHANNELS)
        p = self.settings.click_probability
        if p <= 0.0 or (p < 1.0 and torch.rand((), generator=self.rng).item() >= p):
            return base, False
        was_training = self.network.training
        self.network.eval()
        with torch.no_grad(), self._autocast():
            prob = torch.sigmoid(
                self.network(with_empty_guidance(xray, GENERATOR_IN_CHANNELS), *args, **kwargs)
            )
        self.network.train(was_training)
        guidance = simulate_clicks(prob, label, sigma=self.settings.click_sigma, generator=self.rng)
        return torch.cat([xray, guidance.to(device=xray.device, dtype=xray.dtype)], dim=1), True

    def critic_view(self, mask: torch.Tensor) -> torch.Tensor:
        """What the critic sees of a mask: the mask plus instance noise (unchanged when it is 0)."""
        if self.settings.instance_noise <= 0:
            return mask
        noise = torch.randn(mask.shape, generator=self.rng, device="cpu").to(mask.device, mask.dtype)
        return mask + self.settings.instance_noise * noise

    def discriminator_step(
        self, xray: torch.Tensor, label: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One critic update on real ``(xray, softened label)`` vs fake ``(xray, sigmoid(logits))`` pairs.

        ``logits`` are detached, so the generator receives no gradient; only ``d_optimizer`` steps.

        Args:
            xray: ``(B, 1, H, W)`` X-ray batch.
            label: ``(B, 1, H, W)`` ground truth in {0, 1}.
            logits: ``(B, 1, H, W)`` generator logits.

        Returns:
            The detached critic loss and the critic's balanced patch accuracy
            (:meth:`AdversarialLoss.discriminator_accuracy`).
        """
        self.discriminator.train()
        self.d_optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        real = soften_real_mask(label, generator=self.rng, smoothing=self.settings.real_smoothing)
        fake = torch.sigmoid(logits.detach().float())
        batch = xray.shape[0]
        with self._autocast():
            # One forward over [real; fake]: half the kernel launches, and exactly one forward per backward,
            # which DistributedDataParallel requires.
            both = discriminator_logits(
                self.discriminator,
                torch.cat([xray, xray]),
                self.critic_view(torch.cat([real.to(fake.dtype), fake])),
            )
            real_logits = [x[:batch] for x in both]
            fake_logits = [x[batch:] for x in both]
            self.fire_event(AdversarialIterationEvents.DISCRIMINATOR_REALS_FORWARD_COMPLETED)
            self.fire_event(AdversarialIterationEvents.DISCRIMINATOR_FAKES_FORWARD_COMPLETED)
            d_loss = self.adv_loss.discriminator_loss(real_logits, fake_logits)
        self.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
        self.d_scaler.scale(d_loss).backward()
        self.fire_event(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)
        self.d_scaler.step(self.d_optimizer)
        self.d_scaler.update()
        self.fire_event(AdversarialIterationEvents.DISCRIMINATOR_MODEL_COMPLETED)
        return d_loss.detach(), self.adv_loss.discriminator_accuracy(real_logits, fake_logits)

    def generator_step(
        self, xray: torch.Tensor, label: torch.Tensor, logits: torch.Tensor, weight: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One generator update on ``seg_loss + weight * adversarial loss``; the critic is frozen meanwhile.

        Args:
            xray: ``(B, 1, H, W)`` X-ray batch.
            label: ``(B, 1, H, W)`` ground truth in {0, 1}.
            logits: ``(B, 1, H, W)`` generator logits, still attached to the generator's graph.
            weight: adversarial weight; 0 skips the critic forward.

        Returns:
            Detached total loss, segmentation loss and adversarial (generator) loss.
        """
        self.optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        # The generator step uses the critic's plain module: under DistributedDataParallel the wrapper must
        # see only the critic's own forward/backward pairs, and frozen parameters get no gradient here.
        critic = getattr(self.discriminator, "module", self.discriminator)
        with _frozen(critic):
            with self._autocast():
                seg = self.seg_loss(logits, label).mean()
                if weight > 0:
                    fake_logits = discriminator_logits(critic, xray, self.critic_view(torch.sigmoid(logits)))
                    self.fire_event(AdversarialIterationEvents.GENERATOR_DISCRIMINATOR_FORWARD_COMPLETED)
                    adv = self.adv_loss.generator_loss(fake_logits)
                else:
                    adv = torch.zeros((), device=logits.device)
                loss = seg + weight * adv
            self.fire_event(IterationEvents.LOSS_COMPLETED)
            self.g_scaler.scale(loss).backward()
        self.fire_event(IterationEvents.BACKWARD_COMPLETED)
        self.g_scaler.step(self.optimizer)
        self.g_scaler.update()
        return loss.detach(), seg.detach(), adv.detach()

    def _iteration(self, engine: ConditionalGanTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One conditional-GAN iteration (module docstring, steps 0-3).

        Returns ``engine.state.output``, a dictionary with:
            - ``IMAGE``: the input batch as given (X-ray, possibly with guidance), on the device.
            - ``LABEL``: the label batch.
            - ``PRED``: the generator's ``(B, 1, H, W)`` logits on the (possibly guided) input.
            - ``LOSS``: total generator loss ``seg_loss + w * g_adv_loss``.
            - ``"seg_loss"``, ``"g_adv_loss"``: its two terms (``g_adv_loss`` is 0 while ``w`` is 0).
            - ``"d_loss"``: the critic loss (0 when the critic step was skipped).
            - ``"d_acc"``: the critic's balanced patch accuracy in [0, 1] (NaN when skipped).
            - ``"adv_weight"``: the scheduled ``w`` of this epoch.
            - ``"guidance"``: the ``(B, 2, H, W)`` guidance fed to the generator.
            - ``"clicked"``: whether a simulated click round produced that guidance.

        Args:
            engine: this trainer.
            batchdata: the batch from the data loader.

        Raises:
            ValueError: when ``batchdata`` is None.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) == 2:
            inputs, targets = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            inputs, targets, args, kwargs = batch
        xray = inputs[:, :XRAY_CHANNELS]
        weight = engine.current_adversarial_weight()

        engine.network.train()
        g_input, clicked = engine.guided_input(inputs, targets, *args, **kwargs)
        engine.state.output = {
            Keys.IMAGE: inputs,
            Keys.LABEL: targets,
            GanOutputKeys.ADV_WEIGHT: weight,
            GanOutputKeys.GUIDANCE: g_input[:, XRAY_CHANNELS:],
            GanOutputKeys.CLICKED: clicked,
        }
        with engine._autocast():
            logits = engine.network(g_input, *args, **kwargs)
        engine.state.output[Keys.PRED] = logits
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        if weight > 0 and engine.state.iteration % engine.settings.critic_every == 0:
            d_loss, d_acc = engine.discriminator_step(xray, targets, logits)
        else:
            d_loss, d_acc = torch.zeros((), device=logits.device), math.nan
        engine.state.output[GanOutputKeys.D_LOSS] = d_loss
        engine.state.output[GanOutputKeys.D_ACC] = d_acc

        loss, seg, adv = engine.generator_step(xray, targets, logits, weight)
        engine.state.output[Keys.LOSS] = loss
        engine.state.output[GanOutputKeys.SEG_LOSS] = seg
        engine.state.output[GanOutputKeys.G_ADV_LOSS] = adv
        engine.state.output[Keys.PRED] = logits.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def gan_stats_output(output: Any) -> dict[str, float]:
    """``output_transform`` for ``StatsHandler``/``TensorBoardStatsHandler``: the generator loss, its two
    terms, the critic loss and the critic's accuracy of one iteration (NaN accuracy when the critic
    step was skipped)."""
    if isinstance(output, list):  # decollated output
        output = output[0]
    keys = (
        Keys.LOSS,
        GanOutputKeys.SEG_LOSS,
        GanOutputKeys.G_ADV_LOSS,
        GanOutputKeys.D_LOSS,
        GanOutputKeys.D_ACC,
    )
    return {str(k): float(output[k]) for k in keys if k in output}
