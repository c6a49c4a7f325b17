"""``fracseg`` command line: ``prepare``, ``info``, ``infer``. Thin: the work happens in the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from fracseg import __version__
from fracseg.errors import FracsegError

logger = logging.getLogger("fracseg")


def _cmd_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fracseg.data import load_datalist, prepare_fracatlas
    from fracseg.data.cache import build_cache

    bar = tqdm(desc="prepare", unit="img", disable=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    report = prepare_fracatlas(args.root, args.out, progress=progress)
    bar.close()
    print(report.summary())
    if args.cache_size:
        from pathlib import Path

        datalist = Path(args.out) / "datalist.json"
        keys = [k for k in ("training", "validation", "negatives") if report.counts.get(k)]
        items = load_datalist(datalist, keys)
        bar = tqdm(desc=f"cache {args.cache_size}px", unit="img", disable=args.quiet)
        folder = build_cache(items, Path(args.out) / "cache", args.cache_size, progress=progress)
        bar.close()
        print(f"  cached arrays ({args.cache_size}px): {folder}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from fracseg.io import read_xray

    failed = 0
    for path in args.files:
        try:
            image = read_xray(path)
        except FracsegError as exc:
            failed += 1
            print(json.dumps({"source": path, "error": str(exc)}))
            continue
        arr = image.array
        print(json.dumps({**image.meta.to_dict(), "min": float(arr.min()), "max": float(arr.max())}))
    return 1 if failed else 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from fracseg.inference import DEFAULT_WEIGHTS, Predictor
    from fracseg.inference.batch import run_batch

    predictor = Predictor(
        weights=args.weights or DEFAULT_WEIGHTS, device=args.device, threshold=args.threshold
    )
    # Measured (scripts/bench_infer.py): on 2 CPU cores batch 1 in one process is fastest, since decoding
    # workers compete with the network for the cores; a GPU wants batches and parallel decoding.
    on_cpu = predictor.device.type == "cpu"
    workers = args.workers if args.workers is not None else (0 if on_cpu else min(4, os.cpu_count() or 1))
    failed = run_batch(
        args.inputs,
        args.output,
        predictor,
        quiet=args.quiet,
        batch_size=args.batch_size or (1 if on_cpu else 16),
        num_workers=workers,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {args.output}/predictions.csv ({failed} failed)"
        + ("" if predictor.trained else " -- UNTRAINED model: masks are not meaningful")
    )
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fracseg", description="Bone-fracture segmentation on X-rays.")
    parser.add_argument("--version", action="version", version=f"fracseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="convert a dataset into masks + MONAI datalists")
    prep_sub = prep.add_subparsers(dest="dataset", required=True)
    fa = prep_sub.add_parser("fracatlas", help="FracAtlas release layout (CC BY 4.0)")
    fa.add_argument(
        "root", help="FracAtlas root folder (with images/, Annotations/, Utilities/, dataset.csv)"
    )
    fa.add_argument("--out", required=True, help="output folder for masks/, datalist.json, report.json")
    fa.add_argument(
        "--cache-size",
        type=int,
        default=0,
        help="also cache pre-processed arrays at this square resolution (e.g. 512)",
    )
    fa.add_argument("--quiet", action="store_true", help="no progress bar")
    fa.set_defaults(func=_cmd_prepare)

    info = sub.add_parser("info", help="read files and print their metadata as JSON lines")
    info.add_argument("files", nargs="+")
    info.set_defaults(func=_cmd_info)

    infer = sub.add_parser("infer", help="segment files/folders: masks, overlays, predictions.csv")
    infer.add_argument("inputs", nargs="+", help="files or folders (searched recursively)")
    infer.add_argument("--output", "-o", required=True, help="output folder")
    infer.add_argument(
        "--weights", default=None, help="generator checkpoint (default: the bundle's model.pt)"
    )
    infer.add_argument("--device", default="cpu")
    infer.add_argument("--threshold", type=float, default=None, help="default: the bundle's")
    infer.add_argument("--batch-size", type=int, default=4, help="images per network call")
    infer.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="decoding worker processes (0: decode in the main process)",
    )
    infer.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")
    infer.add_argument("--quiet", action="store_true", help="no progress bar")
    infer.set_defaults(func=_cmd_infer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fracseg`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except FracsegError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
