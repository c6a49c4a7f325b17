"""Training throughput: supervised-only vs conditional-GAN, same data, same generator, one run.

Loads real FracAtlas images through the shared pre-processing, keeps them on the device (as the GPU
recipe does), and times ``ConditionalGanTrainer`` iterations with ``adversarial_weight=0`` (no critic:
the supervised baseline) and with the critic active from the first iteration, in fp32 and in bf16 autocast +
channels_last (``--precisions``). Prints a table of median images/s over repeats, the GAN/supervised ratio
and bf16's speed-up over fp32, all measured in the same run.

    python scripts/bench_train.py                      # CPU defaults (256 px, small generator)
    python scripts/bench_train.py --device cuda --size 512 --batch 32 --channels 32 64 128 256 512 \
        --precisions bf16                               # the GPU recipe's settings
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.engines.utils import default_prepare_batch
from monai.transforms import Compose

from fracseg.data import ensure_prepared, load_datalist
from fracseg.engines import ConditionalGanTrainer, GanSettings
from fracseg.losses import AdversarialLoss, SegmentationLoss
from fracseg.networks import build_discriminator, build_generator
from fracseg.transforms import AugmentingPrepareBatch, BatchAugment, preprocessing

ROOT = Path(__file__).resolve().parents[1]


def load_batches(root: Path, size: int, count: int, batch: int, device: torch.device) -> list[dict]:
    prepared = Path(tempfile.gettempdir()) / "fracseg-bench-prepared"
    datalist = ensure_prepared(root, prepared)
    items = load_datalist(datalist, ["training"])[:count]
    pre = preprocessing(label_key="label", spatial_size=size)
    data = [pre({"image": it["image"], "label": it["label"]}) for it in items]
    images = torch.stack([d["image"].as_tensor() for d in data]).to(device)
    labels = torch.stack([d["label"].as_tensor() for d in data]).to(device)
    return [
        {"image": images[i : i + batch], "label": labels[i : i + batch]}
        for i in range(0, len(data) - batch + 1, batch)
    ]


def time_mode(
    args: argparse.Namespace,
    batches: list[dict],
    adversarial: bool,
    device: torch.device,
    critic_every: int = 1,
    recipe: bool = False,
) -> float:
    """Median images/s of training iterations; ``recipe`` adds what the GPU recipe does besides the
    networks: simulated click rounds (``click_probability`` 0.3) and :class:`BatchAugment`."""
    torch.manual_seed(0)
    gen = build_generator(channels=args.channels).to(device)
    disc = build_discriminator(channels=args.disc_channels).to(device)
    if args.channels_last:
        gen = gen.to(memory_format=torch.channels_last)
        disc = disc.to(memory_format=torch.channels_last)
    if args.compile:
        gen = torch.compile(gen)
        disc = torch.compile(disc)
    trainer = ConditionalGanTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=batches,
        network=gen,
        optimizer=torch.optim.AdamW(gen.parameters(), 1e-4),
        discriminator=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), 1e-4, betas=(0.5, 0.999)),
        seg_loss=SegmentationLoss(),
        adv_loss=AdversarialLoss("lsgan"),
        settings=GanSettings(
            adversarial_weight=0.05 if adversarial else 0.0,
            critic_every=critic_every,
            click_probability=0.3 if recipe else 0.0,
        ),
        epoch_length=len(batches),
        amp=args.amp,
        amp_kwargs={"dtype": torch.bfloat16},
        decollate=False,
        prepare_batch=AugmentingPrepareBatch(BatchAugment()) if recipe else default_prepare_batch,
    )
    trainer.run()  # warm-up (allocations, cuDNN autotune, compile)
    rates = []
    for _ in range(args.repeats):
        trainer.state.max_epochs = trainer.state.epoch + 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(len(batches) * args.batch / (time.perf_counter() - start))
    return statistics.median(rates)


def time_augmentation(batches: list[dict], size: int, repeats: int) -> tuple[float, float]:
    """Milliseconds per image: train.json's per-sample MONAI augmentation vs :class:`BatchAugment` on the
    whole batch, on the batches' device."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundle" / "configs" / "train.json"))
    parser["patch_size"] = [size, size]
    per_sample = Compose(parser.get_parsed_content("train#random_transforms"))
    per_sample.set_random_state(seed=0)
    augment = BatchAugment()
    sync = torch.cuda.synchronize if batches[0]["image"].is_cuda else (lambda: None)
    n = sum(len(b["image"]) for b in batches)
    sample_ms, batch_ms = [], []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for b in batches:
            for image, label in zip(b["image"], b["label"], strict=True):
                per_sample({"image": image, "label": label})
        sync()
        sample_ms.append((time.perf_counter() - start) * 1000 / n)
        start = time.perf_counter()
        for b in batches:
            augment(b["image"], b["label"])
        sync()
        batch_ms.append((time.perf_counter() - start) * 1000 / n)
    return statistics.median(sample_ms), statistics.median(batch_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=32, help="distinct images kept on the device")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--disc-channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=("fp32", "bf16"),
        help="fp32, and/or bf16 autocast + channels_last",
    )
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    batches = load_batches(args.data, args.size, args.images, args.batch, device)
    critic = f"{args.disc_channels}-channel critic"
    modes = {
        "supervised (adversarial_weight 0)": {"adversarial": False},
        f"conditional GAN, {critic} every step": {"adversarial": True},
        f"conditional GAN, {critic} every 2nd step": {"adversarial": True, "critic_every": 2},
        f"conditional GAN, {critic} every step + click rounds (p 0.3) + BatchAugment": {
            "adversarial": True,
            "recipe": True,
        },
    }
    rates: dict[str, dict[str, float]] = {}
    for precision in args.precisions:
        args.amp = args.channels_last = precision == "bf16"
        rates[precision] = {m: time_mode(args, batches, device=device, **kw) for m, kw in modes.items()}
    sample_ms, batch_ms = time_augmentation(batches, args.size, args.repeats)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"\nTraining throughput on {name}: {args.size}x{args.size}, batch {args.batch}, generator "
        f"{args.channels}, compile={args.compile}, median of {args.repeats} x {len(batches)} iterations; "
        "bf16 = bf16 autocast + channels_last\n"
    )
    cols = " | ".join(f"{p} images/s | {p} ratio to supervised" for p in args.precisions)
    speedup = " | bf16 / fp32" if {"fp32", "bf16"} <= set(args.precisions) else ""
    print(f"| mode | {cols}{speedup} |")
    print("|---|" + "---:|" * (2 * len(args.precisions) + bool(speedup)))
    supervised = next(iter(modes))
    for mode in modes:
        cells = " | ".join(
            f"{rates[p][mode]:.1f} | {rates[p][mode] / rates[p][supervised]:.2f}" for p in args.precisions
        )
        extra = f" | {rates['bf16'][mode] / rates['fp32'][mode]:.2f}" if speedup else ""
        print(f"| {mode} | {cells}{extra} |")
    print(
        f"\nAugmentation, ms/image: per-sample MONAI transforms (train.json) {sample_ms:.2f}, "
        f"BatchAugment on the batch {batch_ms:.3f} ({sample_ms / batch_ms:.0f}x)"
    )


if __name__ == "__main__":
    main()
