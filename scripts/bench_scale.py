"""Batch-inference throughput: one process against Ray workers, and what N machines would give.

Measured in one run, on the same images (454x373 FracAtlas JPEGs from ``../shared/data``, or any folder
given with ``--inputs``), with the bundle's settings:

- ``single``: ``fracseg infer``'s own pipeline in this process (batch 1), with all cores' threads and with
  one thread; and, as the control of what the cores give at all, one plain process per core (1 thread
  each, no Ray) sharing the images;
- ``ray``: ``fracseg infer --ray``'s actor pool on a private local Ray, with 1 worker x 1 CPU, 1 worker x
  all CPUs and one worker per CPU. Ray's start-up and the workers' model loads are timed apart
  (``startup``): they happen once per run, not per image.

Then Ray's own cost per image is measured with workers that do nothing (the same dispatcher, a probe
actor), and a projection for N machines: ``min(N x one machine's images/s, 1 / driver cost per image)``,
the driver being the one process that hands out images and collects rows. Not modelled: the shared file
system's bandwidth (the bytes read and written per image are printed so that it can be sized).

    python scripts/bench_scale.py [--images 8] [--repeats 3] [--inputs DIR]

Prints a table of median images/s over ``--repeats`` runs and ratios to the baselines measured in the
same run, and the CPU model.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fracseg.inference import Predictor
from fracseg.inference.batch import plan_inputs, run_batch
from fracseg.inference.ray_batch import DispatchProbe, RayOptions, predict_on_ray, start_ray
from fracseg.precision import cpu_description

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def single(predictor: Predictor, inputs: Path, threads: int) -> float:
    """Images/s of the in-process pipeline with ``threads`` torch threads (model already loaded)."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_batch([inputs], out, predictor, quiet=True, batch_size=1, num_workers=0, overwrite=True)
        wall = time.perf_counter() - start
    return len(plan_inputs([inputs], None)) / wall


def _half(kwargs: dict[str, Any], inputs: list[str], barrier: Any, queue: Any) -> None:
    torch.set_num_threads(1)
    predictor = Predictor(**kwargs)
    run_batch(inputs[:1], tempfile.mkdtemp(), predictor, quiet=True, batch_size=1)  # warm-up
    barrier.wait()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run_batch(inputs, out, predictor, quiet=True, batch_size=1, num_workers=0)
    queue.put(time.perf_counter() - start)


def independent_processes(kwargs: dict[str, Any], inputs: Path, count: int) -> float:
    """Images/s of ``count`` plain processes (1 thread each, no Ray) sharing the images: the control that
    says how far this machine's cores scale for this work at all."""
    files = [str(f.path) for f in plan_inputs([inputs], None)]
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(count), context.Queue()
    shares = [files[i::count] for i in range(count)]
    procs = [context.Process(target=_half, args=(kwargs, share, barrier, queue)) for share in shares]
    for proc in procs:
        proc.start()
    walls = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    return len(files) / max(walls)


def on_ray(
    predictor: Predictor, kwargs: dict[str, Any], inputs: Path, workers: int, cpus: int, worker=None
) -> tuple[float, float]:
    """(images/s after start-up, start-up seconds) of the Ray actor pool."""
    files = plan_inputs([inputs], None)
    timings: dict[str, float] = {}
    options = RayOptions(workers=workers, cpus_per_worker=cpus, predictor_kwargs=kwargs)
    with tempfile.TemporaryDirectory() as out:
        extra = {"worker_class": worker} if worker is not None else {}
        predict_on_ray(
            files,
            Path(out),
            {**predictor.settings(), "dicom_seg": False},
            options,
            True,
            timings=timings,
            **extra,
        )
    return len(files) / timings["images_s"], timings["startup_s"]


def output_bytes(predictor: Predictor, inputs: Path) -> tuple[float, float]:
    """Mean bytes read and written per image."""
    files = plan_inputs([inputs], None)
    read = sum(f.path.stat().st_size for f in files) / len(files)
    with tempfile.TemporaryDirectory() as out:
        run_batch([inputs], out, predictor, quiet=True, batch_size=1, num_workers=0)
        written = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return read, written / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="JPEGs taken from the shared data")
    parser.add_argument("--inputs", type=Path, default=None, help="a folder of inputs instead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--echo-images", type=int, default=400, help="images sent to the echo workers")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64, 256])
    args = parser.parse_args()

    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        inputs = args.inputs
        if inputs is None:
            inputs = work / "inputs"
            inputs.mkdir()
            for src in sorted((SHARED / "fracatlas" / "images" / "Fractured").glob("*.jpg"))[: args.images]:
                shutil.copy(src, inputs)
        kwargs: dict[str, Any] = {}
        predictor = Predictor(**kwargs)
        n = len(plan_inputs([inputs], None))
        single(predictor, inputs, cpus)  # warm-up: first-call allocations, file cache

        start_ray(None)  # one private Ray for every Ray measurement: its start-up is not per run
        # Ray's own cost first, before killed model workers leave Ray starting fresh idle processes.
        echo_files = work / "echo"
        echo_files.mkdir()
        for i in range(args.echo_images):
            (echo_files / f"{i:05d}.png").write_bytes(b"")
        echo = [
            on_ray(predictor, kwargs, echo_files, cpus, 1, worker=DispatchProbe)[0]
            for _ in range(args.repeats)
        ]
        results: dict[str, list[float]] = {}
        startups: list[float] = []
        configs = [
            (f"single, {cpus} threads", lambda: single(predictor, inputs, cpus)),
            ("single, 1 thread", lambda: single(predictor, inputs, 1)),
            (f"{cpus} processes x 1 thread", lambda: independent_processes(kwargs, inputs, cpus)),
            ("ray, 1 worker x 1 CPU", lambda: on_ray(predictor, kwargs, inputs, 1, 1)),
            (f"ray, 1 worker x {cpus} CPUs", lambda: on_ray(predictor, kwargs, inputs, 1, cpus)),
            (f"ray, {cpus} workers x 1 CPU", lambda: on_ray(predictor, kwargs, inputs, cpus, 1)),
        ]
        for _ in range(args.repeats):
            for name, run in configs:
                value = run()
                if isinstance(value, tuple):
                    value, startup = value
                    startups.append(startup)
                results.setdefault(name, []).append(value)
        torch.set_num_threads(cpus)
        read, written = output_bytes(predictor, inputs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    base_all, base_one = med[configs[0][0]], med[configs[1][0]]
    ray_one = med[configs[3][0]]
    print(f"\nCPU: {cpu_description()}, {cpus} cores; torch {torch.__version__}; {n} images of {inputs}")
    print(f"settings: precision {predictor.precision.name}, mirror {predictor.mirror}")
    print(f"median of {args.repeats} runs\n")
    print(f"| {'configuration':<26} | images/s | vs single {cpus} thr | vs single 1 thr | vs ray 1x1 |")
    print(f"|{'-' * 28}|---------:|----------------:|---------------:|-----------:|")
    for name, _ in configs:
        v = med[name]
        print(
            f"| {name:<26} | {v:8.3f} | {v / base_all:15.2f} | {v / base_one:14.2f} | {v / ray_one:10.2f} |"
        )
    print(
        f"\nRay start-up per run (workers started, model loaded): median {statistics.median(startups):.1f} s"
    )
    echo_rate = statistics.median(echo)
    per_image_ms = 1000.0 / echo_rate
    print(f"Ray dispatch cost per image (DispatchProbe, {args.echo_images} images): {per_image_ms:.2f} ms")
    print(f"bytes per image: {read / 1e3:.0f} kB read, {written / 1e3:.0f} kB written")
    control = med[configs[2][0]]
    ray_all = med[configs[-1][0]]
    print("\nissue targets:")
    print(f"  ray 1 worker x 1 CPU / single 1 thread = {ray_one / base_one:.2f} (target >= 0.90)")
    ray_wide = med[configs[4][0]]
    print(
        f"  ray 1 worker x {cpus} CPUs / single {cpus} threads = {ray_wide / base_all:.2f} (target >= 0.90)"
    )
    print(
        f"  ray {cpus} workers / ray 1 worker x 1 CPU = {ray_all / ray_one:.2f} (target >= 1.7); control, "
        f"{cpus} plain processes / single 1 thread = {control / base_one:.2f}"
    )
    machine = max(v for k, v in med.items() if k.startswith("ray"))
    print(f"\nprojection: one machine = {machine:.3f} images/s (its best Ray configuration above)")
    print("| machines | images/s | images/day | driver-bound | file system MB/s |")
    print("|---------:|---------:|-----------:|:------------:|-----------------:|")
    for m in args.machines:
        rate = min(m * machine, echo_rate)
        fs = rate * (read + written) / 1e6
        print(
            f"| {m:8d} | {rate:8.2f} | {rate * 86400:10.0f} | {'yes' if rate == echo_rate else 'no':^12} "
            f"| {fs:16.2f} |"
        )


if __name__ == "__main__":
    main()
