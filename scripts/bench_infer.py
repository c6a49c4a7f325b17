"""Inference speed: model-only latency vs end-to-end (decode, pre-process, infer, invert, write PNGs).

Runs, in one process on the same predictor: the network alone on a letterboxed 512x512 batch, then
``fracseg infer``'s batch pipeline over (a) 454x373 FracAtlas JPEGs and (b) a large JPEG-lossless CR
DICOM (1576x1976), once sequentially (batch 1, no workers: per-image latency) and once pipelined
(batches + decoding workers + writer thread: throughput). Prints medians and p95 and the ratio of
end-to-end to model-only time, for each precision (fp32 and bf16 autocast + channels_last side by side,
with bf16's speed-up measured in the same run).

    python scripts/bench_infer.py [--device cuda] [--batch 16] [--workers 2] [--precisions fp32 bf16]
        [--no-mirror]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fracseg.inference import Predictor
from fracseg.inference.batch import run_batch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def model_only(predictor: Predictor, batch: int, repeats: int) -> float:
    """Median seconds per image of ``predictor.infer`` on a ``batch`` of 512x512 inputs."""
    x = torch.rand(batch, 1, predictor.spatial_size, predictor.spatial_size)
    predictor.infer(x)
    times = []
    for _ in range(repeats):
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictor.infer(x)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def end_to_end(predictor: Predictor, inputs: Path, batch: int, workers: int) -> tuple[float, float, float]:
    """(p50 s/image, p95 s/image, images/s) of the batch pipeline over ``inputs``."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_batch([inputs], out, predictor, quiet=True, batch_size=batch, num_workers=workers, overwrite=True)
        wall = time.perf_counter() - start
        rows = list(csv.DictReader((Path(out) / "predictions.csv").open()))
    seconds = np.array([float(r["seconds"]) for r in rows])
    return float(np.percentile(seconds, 50)), float(np.percentile(seconds, 95)), len(rows) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jpegs", type=int, default=24)
    parser.add_argument("--dicoms", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--data", type=Path, default=SHARED, help="folder with fracatlas/ and dicom/ (default ../shared/data)"
    )
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the shipped one)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "auto"))
    parser.add_argument(
        "--mirror",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="test-time mirroring on/off (default: the bundle's 'mirror')",
    )
    args = parser.parse_args()
    weights = None if args.bundle is None else args.bundle / "models" / "model.pt"
    bundle = {} if args.bundle is None else {"weights": weights, "bundle": args.bundle}
    predictors = {
        p: Predictor(device=args.device, precision=p, mirror=args.mirror, **bundle) for p in args.precisions
    }
    first = next(iter(predictors.values()))
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = Path(tmp) / "jpegs"
        jpegs.mkdir()
        for image in sorted((args.data / "fracatlas" / "images" / "Fractured").glob("*.jpg")):
            if len(list(jpegs.iterdir())) >= args.jpegs:
                break
            if image.stat().st_size and first.prepare(image)["original"].shape in ((454, 373), (373, 454)):
                shutil.copy(image, jpegs / image.name)
        dicoms = Path(tmp) / "dicoms"
        dicoms.mkdir()
        for i in range(args.dicoms):
            shutil.copy(args.data / "dicom" / "CR-ModalitySequenceLUT.dcm", dicoms / f"cr{i}.dcm")
        print(
            f"\nInference on {args.device} ({torch.get_num_threads()} threads), "
            f"{first.spatial_size}x{first.spatial_size} letterbox\n"
        )
        model_ms = {}
        for name, predictor in predictors.items():
            m1 = model_only(predictor, 1, args.repeats)
            mb = model_only(predictor, args.batch, args.repeats)
            model_ms[name] = (m1, mb)
            per_image = f"{m1 * 1000:.0f} ms/image at batch 1, {mb * 1000:.0f} ms/image at batch {args.batch}"
            base = next(iter(model_ms.values()))[0]
            print(f"model only, {_label(predictor)}: {per_image} ({base / m1:.2f}x the first row)")
        print()
        print("| precision | input | mode | p50 s/image | p95 s/image | images/s | end-to-end / model-only |")
        print("|---|---|---|---:|---:|---:|---:|")
        sets = ((f"{args.jpegs} JPEG 454x373", jpegs), (f"{args.dicoms} CR DICOM 1576x1976 JPEG-LL", dicoms))
        for name, predictor in predictors.items():
            m1, mb = model_ms[name]
            label = _label(predictor)
            for set_name, folder in sets:
                p50, p95, rate = end_to_end(predictor, folder, 1, 0)
                ratio = p50 / m1
                print(
                    f"| {label} | {set_name} | sequential (batch 1) | {p50:.3f} | {p95:.3f} | {rate:.2f} "
                    f"| {ratio:.1f} |"
                )
                p50, p95, rate = end_to_end(predictor, folder, args.batch, args.workers)
                mode = f"pipelined (batch {args.batch}, {args.workers} workers)"
                ratio = (1 / rate) / mb
                print(f"| {label} | {set_name} | {mode} | {p50:.3f} | {p95:.3f} | {rate:.2f} | {ratio:.1f} |")


def _label(predictor: Predictor) -> str:
    """The precision, and the network passes per image."""
    return f"{predictor.precision.name}, {2 if predictor.mirror else 1} passes"


if __name__ == "__main__":
    main()
