"""``fracseg`` command line: ``prepare``, ``info``, ``infer``, ``evaluate``.

Thin: the work happens in the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fracseg import __version__
from fracseg.errors import FracsegError

if TYPE_CHECKING:
    from fracseg.inference import Predictor

logger = logging.getLogger("fracseg")


@contextmanager
def _progress_bar(desc: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar for the duration of the block, as the ``progress(done, total)`` callback the library
    functions take."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="img", disable=quiet)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()


def _cmd_prepare(args: argparse.Namespace) -> int:
    from fracseg.data import load_datalist, prepare_fracatlas
    from fracseg.data.cache import build_cache

    with _progress_bar("prepare", args.quiet) as progress:
        report = prepare_fracatlas(args.root, args.out, progress=progress)
    print(report.summary())
    if args.cache_size:
        from pathlib import Path

        datalist = Path(args.out) / "datalist.json"
        keys = [k for k in ("training", "validation", "negatives") if report.counts.get(k)]
        items = load_datalist(datalist, keys)
        with _progress_bar(f"cache {args.cache_size}px", args.quiet) as progress:
            folder = build_cache(items, Path(args.out) / "cache", args.cache_size, progress=progress)
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


def _predictor_kwargs(args: argparse.Namespace) -> dict:
    """The :class:`~fracseg.inference.Predictor` arguments of the model options (also what each Ray
    worker builds its own predictor from)."""
    from pathlib import Path

    from fracseg.inference import DEFAULT_BUNDLE

    bundle = Path(args.bundle) if args.bundle else DEFAULT_BUNDLE
    return {
        "weights": args.weights or bundle / "models" / "model.pt",
        "device": args.device,
        "threshold": args.threshold,
        "bundle": bundle,
        "precision": args.precision,
        "mirror": args.mirror,
    }


def _predictor(args: argparse.Namespace) -> Predictor:
    from fracseg.inference import Predictor

    return Predictor(**_predictor_kwargs(args))


def _cmd_infer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracseg.inference.batch import check_output_folder, plan_inputs, run_batch, seg_path
    from fracseg.io import folder_lock

    if not args.inputs and not args.dicomweb:
        raise FracsegError("nothing to do: give input files/folders and/or --dicomweb URL")
    check_output_folder(args.inputs, args.output)  # before the model loads: a wrong --output fails at once
    with folder_lock(args.output):  # held through download, batch and STOW; one run per output folder
        remote: list = []
        client = None
        if args.dicomweb:
            from fracseg.inference import dicomweb

            client = dicomweb.connect(args.dicomweb)
            query = dicomweb.DicomwebQuery(
                url=args.dicomweb,
                modalities=args.modality,
                studies=args.study or (),
                series=args.series or (),
            )
            remote = dicomweb.download(client, query, Path(args.output))
            print(
                f"DICOMweb {args.dicomweb}: {len(remote)} instance(s) of modality {'/'.join(args.modality)}"
            )
        predictor = _predictor(args)
        ray_options = None
        if args.ray is not None:
            from fracseg.inference.ray_batch import RayOptions

            ray_options = RayOptions(
                address=args.ray or None,
                workers=args.workers,
                cpus_per_worker=args.cpus_per_worker,
                predictor_kwargs=_predictor_kwargs(args),
            )
        # Measured (scripts/bench_infer.py): on 2 CPU cores batch 1 in one process is fastest, since
        # decoding workers compete with the network for the cores; a GPU wants batches and parallel decoding.
        on_cpu = predictor.device.type == "cpu"
        workers = args.workers if args.workers is not None else (0 if on_cpu else min(4, os.cpu_count() or 1))
        if ray_options is not None:
            workers = 0  # --workers counts Ray workers here
        failed = run_batch(
            args.inputs,
            args.output,
            predictor,
            quiet=args.quiet,
            batch_size=args.batch_size or (1 if on_cpu else 16),
            num_workers=workers,
            overwrite=args.overwrite,
            dicom_seg=args.dicom_seg or args.stow,
            files=remote,
            ray=ray_options,
        )
        if args.stow and client is not None:
            fetched = {item.path for item in remote}
            planned = [item for item in plan_inputs(args.inputs, args.output, remote) if item.path in fetched]
            segs = [p for p in (seg_path(Path(args.output), item) for item in planned) if p.exists()]
            stored = dicomweb.store_segs(client, segs, args.dicomweb)
            print(
                f"STOW-RS: stored {stored} of {len(segs)} DICOM SEG object(s) "
                f"and their SRs on {args.dicomweb}"
            )
            failed += len(segs) - stored
    print(
        f"wrote {args.output}/predictions.csv ({failed} failed)"
        + ("" if predictor.trained else " -- UNTRAINED model: masks are not meaningful")
    )
    return 1 if failed else 0


def _cmd_evaluate_cv(args: argparse.Namespace) -> int:
    from fracseg.evaluation.crossval import evaluate_cv
    from fracseg.evaluation.report import format_interval

    with _progress_bar("cross-validation", args.quiet) as progress:
        count = [0]

        def tick() -> None:
            count[0] += 1
            progress(count[0], None)  # type: ignore[arg-type]  # total unknown

        metrics = evaluate_cv(
            args.root, args.cv, args.output, folds=args.folds, prepared=args.prepared, limit=args.limit,
            device=args.device, bundle=args.bundle, progress=tick,
        )  # fmt: skip
    m = metrics["cross_fitted"]
    px, img, inst = m["pixel"], m["image"], m["instance"]
    lines = [
        f"cross-validation over folds {metrics['folds']}"
        + ("" if metrics["complete"] else " (NOT all folds: partial figures)")
        + f": {m['fractured_images']} fractured + {m['non_fractured_images']} non-fractured held-out images",
        "cross-fitted (rule and view chosen on the other folds), 95% bootstrap intervals:",
        f"  Dice mean {px['dice']['mean']:.3f} ({format_interval(m['ci95'], 'dice_mean')})",
        f"  AUROC {img['auroc']:.3f} ({format_interval(m['ci95'], 'auroc')})",
        f"  sensitivity {img['sensitivity']:.3f} ({format_interval(m['ci95'], 'sensitivity')}), "
        f"specificity {img['specificity']:.3f} ({format_interval(m['ci95'], 'specificity')})",
        f"  false-positive regions per non-fractured image {inst['fp_regions_per_non_fractured_image']:.2f}, "
        f"mask AP50 {inst['mask_ap50']:.3f}",
        "  views chosen per fold: " + ", ".join(f"{k}: {v['view']}" for k, v in metrics["choices"].items()),
    ]
    for view, block in metrics["cross_fitted_by_view"].items():
        lines.append(
            f"  {view} alone: Dice {block['pixel']['dice']['mean']:.3f}, "
            f"AUROC {block['image']['auroc']:.3f}, "
            f"sens/spec {block['image']['sensitivity']:.3f}/{block['image']['specificity']:.3f}"
        )
    lines.append(f"release rule (chosen on all out-of-fold predictions): {metrics['release_rule']}")
    lines.append(f"wrote {args.output}/metrics.json, per_image.csv")
    print("\n".join(lines))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fracseg.evaluation import evaluate
    from fracseg.evaluation.report import format_interval

    if args.cv:
        return _cmd_evaluate_cv(args)
    predictor = _predictor(args)
    with _progress_bar(f"evaluate {args.split}", args.quiet) as progress:
        metrics = evaluate(
            args.root,
            args.split,
            args.output,
            predictor,
            prepared=args.prepared,
            calibrate_rule=args.calibrate,
            limit=args.limit,
            progress=progress,
        )
    px, img, inst = metrics["pixel"], metrics["image"], metrics["instance"]
    print(
        f"{args.split}: {metrics['fractured_images']} fractured + {metrics['non_fractured_images']} "
        f"non-fractured images, {len(metrics['errors'])} unreadable\n"
        f"  Dice mean {px['dice']['mean']:.3f} (median {px['dice']['median']:.3f}), "
        f"IoU {px['iou']['mean']:.3f}, "
        f"precision {px['precision']['mean']:.3f}, recall {px['recall']['mean']:.3f}, "
        f"HD95 median {px['hd95']['median']:.1f} px\n"
        f"  instances hit {inst['hit_instances']}/{inst['gt_instances']}, mask AP50 {inst['mask_ap50']:.3f}, "
        f"FP regions/non-fractured image {inst['fp_regions_per_non_fractured_image']:.2f}\n"
        f"  image level: AUROC {img['auroc']:.3f} (95% CI {format_interval(metrics['ci95'], 'auroc')}), "
        f"sensitivity {img['sensitivity']:.3f}, "
        f"specificity {img['specificity']:.3f}\n"
        f"  wrote {args.output}/metrics.json, per_image.csv, report.md, report.html"
    )
    if "calibration" in metrics:
        cal = metrics["calibration"]
        print(
            f"  calibration (this split): threshold {cal['threshold']}, min_region_pixels "
            f"{cal['min_region_pixels']}, score_top_pixels "
            f"{cal['score_top_pixels']}, score_threshold {cal['score_threshold']:.4f}"
        )
        fit = cal["crossfit"]["cross_fitted"]
        ci = fit["ci95"]
        print(
            f"  cross-fitted (each of folds {cal['crossfit']['folds']} decided by the rule chosen on the "
            f"others), 95% CI:\n"
            f"    Dice mean {fit['pixel']['dice']['mean']:.3f} ({format_interval(ci, 'dice_mean')}), "
            f"AUROC {fit['image']['auroc']:.3f} ({format_interval(ci, 'auroc')}), "
            f"sensitivity {fit['image']['sensitivity']:.3f} ({format_interval(ci, 'sensitivity')}), "
            f"specificity {fit['image']['specificity']:.3f} ({format_interval(ci, 'specificity')}), "
            f"FP regions/non-fractured image {fit['instance']['fp_regions_per_non_fractured_image']:.2f}"
        )
    if not predictor.trained:
        print("  -- UNTRAINED model: these numbers are not meaningful")
    return 0


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle", default=None, help="bundle folder: network, weights and thresholds (default: bundle/)"
    )
    parser.add_argument(
        "--weights", default=None, help="generator checkpoint (default: <bundle>/models/model.pt)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        default=None,
        choices=("auto", "bf16", "fp32"),
        help="auto: bf16 autocast + channels_last where the device computes bf16 natively, else fp32 "
        "(env FRACSEG_PRECISION overrides auto); default: the bundle's inference.json 'precision'",
    )
    parser.add_argument(
        "--mirror",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="average with the left-right mirrored image (twice the network time); default: the bundle's "
        "inference.json 'mirror', which its decision rule was calibrated with",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="pixel threshold (default: the bundle's)"
    )


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
    infer.add_argument("inputs", nargs="*", help="files or folders (searched recursively)")
    infer.add_argument("--output", "-o", required=True, help="output folder")
    _model_arguments(infer)
    infer.add_argument(
        "--batch-size", type=int, default=None, help="images per network call (default: 1 on CPU, 16 on GPU)"
    )
    infer.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding worker processes (0: in the main process; default: 0 on CPU, 4 on GPU); with --ray: "
        "Ray workers (default: one per --cpus-per-worker CPUs of the cluster, one per GPU with --device "
        "cuda)",
    )
    infer.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="spread the images over Ray workers, each loading the model once: a cluster's address "
        "(ray start --head prints it; 'auto' finds one on this machine), or none for a private Ray on "
        "this machine (loopback only, stopped at the end)",
    )
    infer.add_argument(
        "--cpus-per-worker",
        type=int,
        default=1,
        help="with --ray: CPUs reserved by each Ray worker, and its torch threads (default: 1)",
    )
    infer.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")
    infer.add_argument(
        "--dicom-seg",
        action="store_true",
        help="also write a DICOM SEG (<stem>_seg.dcm) and an SR of its findings (<stem>_sr.dcm) "
        "for each DICOM input",
    )
    infer.add_argument("--quiet", action="store_true", help="no progress bar")
    web = infer.add_argument_group("DICOMweb input (QIDO-RS/WADO-RS) and output (STOW-RS)")
    web.add_argument("--dicomweb", metavar="URL", help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    web.add_argument("--study", action="append", metavar="UID", help="only this study (repeatable)")
    web.add_argument("--series", action="append", metavar="UID", help="only this series (repeatable)")
    web.add_argument(
        "--modality", nargs="+", default=["CR", "DX"], help="series modalities to fetch (default: CR DX)"
    )
    web.add_argument(
        "--stow", action="store_true", help="send the DICOM SEG and SR results back with STOW-RS"
    )
    infer.set_defaults(func=_cmd_infer)

    ev = sub.add_parser("evaluate", help="score the model on a FracAtlas split: metrics.json + report")
    ev.add_argument("root", help="FracAtlas root folder (release layout; the full release's test.csv works)")
    ev.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    ev.add_argument("--output", "-o", required=True, help="output folder")
    ev.add_argument("--prepared", default=None, help="preparation folder (default: <output>/prepared)")
    _model_arguments(ev)
    ev.add_argument(
        "--calibrate",
        action="store_true",
        help="also choose thresholds on this split and record them in metrics.json (valid only)",
    )
    ev.add_argument("--limit", type=int, default=None, help="first N fractured + N non-fractured images")
    ev.add_argument(
        "--cv",
        default=None,
        metavar="CV_DIR",
        help="cross-validation: each fold model in CV_DIR/fold<k> (scripts/train_cv.py) scores its held-out "
        "fold; rule and view chosen on the other folds; prints and writes the cross-fitted figures",
    )
    ev.add_argument(
        "--folds", type=int, nargs="+", default=None, help="with --cv: folds to use (default: all trained)"
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fracseg`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # per-attribute chatter of the DICOM libraries
        for name in ("highdicom", "dicomweb_client"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except FracsegError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
