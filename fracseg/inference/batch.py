"""Batch inference over files and folders: masks, overlays, ``predictions.csv`` and a JSON summary.

Output contract: an input found inside a folder goes to the same relative sub-folder under the output
folder; an input given as a file goes straight into it; colliding names are made distinct
(:mod:`fracseg.inference.inputs`). One bad file is recorded in the ``error`` column, its outputs are
removed, and it never stops the batch. One run at a time writes into an output folder
(:func:`fracseg.io.folder_lock.folder_lock`), which is what makes the start-up clean-up of temporary
files safe.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fracseg.errors import FracsegError
from fracseg.inference.inputs import (
    InputFile,
    check_output_folder,
    collect_inputs,
    file_stem,
    plan_inputs,
)
from fracseg.inference.outputs import write_mask_png, write_overlay_png
from fracseg.inference.predictor import Predictor
from fracseg.inference.records import (
    RECORDS_DIR,
    input_identity,
    matches,
    read_record,
    record_path,
    write_record,
)
from fracseg.io import (
    ImageFormat,
    folder_lock,
    remove_stale_temporaries,
    write_csv_atomic,
    write_json_atomic,
)
from fracseg.io.dicom_seg import write_dicom_seg
from fracseg.io.dicom_sr import ModelInfo, sr_path_for, write_dicom_sr

if TYPE_CHECKING:
    from fracseg.inference.ray_batch import RayOptions

logger = logging.getLogger(__name__)

__all__ = [
    "CSV_COLUMNS",
    "RECORDS_DIR",
    "InputFile",
    "check_output_folder",
    "collect_inputs",
    "file_stem",
    "input_datalist",
    "output_stems",
    "plan_inputs",
    "run_batch",
    "seg_path",
    "write_predictions",
]

#: ``mask`` is the mask's path relative to the output folder; the overlay and SEG share its stem.
CSV_COLUMNS = (
    "image",
    "fracture_score",
    "fracture_present",
    "mask_pixels",
    "regions",
    "seconds",
    "error",
    "mask",
)


def input_datalist(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, str]]:
    """MONAI datalist (``[{"image": path}, ...]``) for files, folders, or a datalist JSON (its ``testing``
    list, else ``validation``): what ``bundle/configs/inference.json`` iterates over. Files and folders
    are expanded as by ``fracseg infer`` (each file once, ``output_dir`` not read back)."""
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if len(items) == 1 and str(items[0]).endswith(".json"):
        content = json.loads(Path(items[0]).read_text(encoding="utf-8"))
        key = next((k for k in ("testing", "test", "validation") if k in content), None)
        if key is None:
            raise FracsegError(f"{items[0]}: datalist has no testing/test/validation list")
        return [{"image": str(Path(items[0]).parent / e["image"])} for e in content[key]]
    return [{"image": str(f.path)} for f in plan_inputs(items, output_dir)]


def output_stems(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """``{input path as a string: output stem}`` for ``inputs``, as ``fracseg infer`` names the results
    (what the bundle's :class:`~fracseg.inference.transforms.SaveResultsd` writes under)."""
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if len(items) == 1 and str(items[0]).endswith(".json"):
        items = [e["image"] for e in input_datalist(items)]
    return {str(f.path): f.out_stem for f in plan_inputs(items, output_dir)}


class _PrepareDataset(Dataset):
    """Decode and pre-process inputs in DataLoader workers; a bad file becomes an error record."""

    def __init__(self, files: Sequence[InputFile], predictor: Predictor) -> None:
        self.files = list(files)
        self.prepare = predictor.prepare

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return load_input(self.files[index], self.prepare)


def load_input(item: InputFile, prepare: Any) -> dict[str, Any]:
    """Read and pre-process one input with ``prepare`` (:meth:`Predictor.prepare`); a bad file becomes an
    ``error`` message instead of an exception."""
    start = time.perf_counter()
    identity = input_identity(item.path)  # before reading: a later change makes the record stale
    try:
        prepared, error = prepare(item.path), ""
    except Exception as exc:  # whatever a reader raises costs this image only
        prepared, error = None, error_message(item, exc)
    return {
        "file": item,
        "identity": identity,
        "prepared": prepared,
        "error": error,
        "seconds": time.perf_counter() - start,
    }


def predict_and_write(
    predictor: Predictor, output: Path, item: InputFile, settings: dict[str, Any]
) -> dict[str, Any]:
    """One input start to finish, as :func:`run_batch` does it with batch size 1: read, predict, write every
    output and the resume record; returns the ``predictions.csv`` row (an ``error`` row for a bad file,
    whose outputs are removed). What a Ray worker runs (:mod:`fracseg.inference.ray_batch`)."""
    loaded = load_input(item, predictor.prepare)
    if loaded["error"]:
        return failed_row(output, item, loaded["error"], loaded["seconds"])
    start = time.perf_counter()
    image = loaded["prepared"]["image"].as_tensor()
    probability = predictor.infer(image[None], [tuple(loaded["prepared"]["original"].shape[-2:])])[0]
    try:
        return _finish_and_write(
            predictor, output, loaded, probability, time.perf_counter() - start, settings
        )
    except Exception as exc:  # finishing or writing one image must never stop the batch
        return _error_row(item, error_message(item, exc), 0.0)


def error_message(item: InputFile, exc: BaseException) -> str:
    """One line naming the input once, then the reason (the exception type too when it is unexpected)."""
    text = str(exc)
    if isinstance(exc, FracsegError):
        return text if text.startswith(str(item.path)) else f"{item.path}: {text}"
    return f"{item.path}: {type(exc).__name__}: {text}"


def output_paths(output: Path, item: InputFile) -> tuple[Path, Path]:
    """Where the mask and overlay PNGs of ``item`` are written."""
    base = output / item.out_stem
    return base.parent / f"{base.name}_mask.png", base.parent / f"{base.name}_overlay.png"


def seg_path(output: Path, item: InputFile) -> Path:
    """Where the DICOM SEG of ``item`` is written."""
    base = output / item.out_stem
    return base.parent / f"{base.name}_seg.dcm"


def sr_path(output: Path, item: InputFile) -> Path:
    """Where the DICOM SR of ``item``'s findings is written (beside its SEG)."""
    return sr_path_for(seg_path(output, item))


def _mask_column(item: InputFile) -> str:
    return (item.out_stem.parent / f"{item.out_stem.name}_mask.png").as_posix()


def _complete(output: Path, item: InputFile, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result row when this very input was fully written with the same settings, else None."""
    record = read_record(output, item)
    if not matches(record, input_identity(item.path), settings):
        return None
    if not all(p.exists() for p in output_paths(output, item)):
        return None
    if record.get("dicom_seg") and not (seg_path(output, item).exists() and sr_path(output, item).exists()):
        return None
    return record["row"]


def _discard_outputs(output: Path, item: InputFile) -> None:
    """Remove whatever is stored under ``item``'s stem, so a failed image leaves no result behind."""
    for path in (
        *output_paths(output, item),
        seg_path(output, item),
        sr_path(output, item),
        record_path(output, item),
    ):
        path.unlink(missing_ok=True)


def _finish_and_write(
    predictor: Predictor,
    output: Path,
    loaded: dict[str, Any],
    probability: Any,
    infer_seconds: float,
    settings: dict[str, Any],
) -> dict[str, Any]:
    start = time.perf_counter()
    item: InputFile = loaded["file"]
    try:
        pred = predictor.finish(loaded["prepared"], probability)
        mask_path, overlay_path = output_paths(output, item)
        write_mask_png(mask_path, pred.mask)
        write_overlay_png(overlay_path, pred.image, pred.mask, normalized=True)  # already in [0, 1]
        seg_written = False
        if settings.get("dicom_seg") and pred.meta.get("format") == ImageFormat.DICOM:
            write_dicom_seg(item.path, pred.mask, seg_path(output, item))
            model = ModelInfo.of(predictor)  # the findings, referencing the SEG
            write_dicom_sr(item.path, seg_path(output, item), pred.decision, model, sr_path(output, item))
            seg_written = True
        else:  # a SEG/SR of an earlier run (other settings) would no longer match this mask
            seg_path(output, item).unlink(missing_ok=True)
            sr_path(output, item).unlink(missing_ok=True)
        row = {
            "image": str(item.path),
            "fracture_score": round(pred.fracture_score, 6),
            "fracture_present": int(pred.fracture_present),
            "mask_pixels": int(pred.mask.sum()),
            "regions": len(pred.decision.regions),
            "seconds": round(loaded["seconds"] + infer_seconds + time.perf_counter() - start, 4),
            "error": "",
            "mask": _mask_column(item),
        }
        # The record is written last: its presence means every output of the image is complete.
        write_record(output, item, row, settings, loaded["identity"], seg_written)
    except BaseException:
        _discard_outputs(output, item)
        raise
    return row


def _warn_replaced(output: Path, item: InputFile) -> None:
    record = read_record(output, item)
    previous = (record or {}).get("input") or {}
    if previous.get("path") and previous["path"] != os.path.realpath(item.path):
        logger.warning(
            "%s: replaces the results of %s stored under %s",
            item.path,
            previous["path"],
            output / item.out_stem,
        )


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    predictor: Predictor,
    quiet: bool = False,
    batch_size: int = 4,
    num_workers: int = 0,
    overwrite: bool = False,
    dicom_seg: bool = False,
    files: Sequence[InputFile] | None = None,
    ray: RayOptions | None = None,
) -> int:
    """Predict every input; return the number of failed files.

    Decoding runs in ``num_workers`` DataLoader workers, the network sees batches of ``batch_size``, and
    PNG encoding/writing runs in a background thread, so the three overlap. Inputs whose outputs are
    complete (same input path, size and mtime; same weights, decision rule and size) are skipped unless
    ``overwrite``; ``predictions.csv`` is rebuilt from the per-image records, so a run killed at any point
    resumes where it stopped. With ``dicom_seg``, every DICOM input also gets ``<stem>_seg.dcm``
    (:mod:`fracseg.io.dicom_seg`). ``files`` (already collected inputs, e.g. from DICOMweb) is processed
    in addition to ``inputs``. With ``ray``, the images are spread over a pool of Ray workers
    (:func:`fracseg.inference.ray_batch.predict_on_ray`) instead of this process: same planning, outputs,
    records and ``predictions.csv``.

    Raises:
        FracsegError: unusable output folder, or another run holds it.
    """
    output = Path(output)
    check_output_folder(inputs, output)
    with folder_lock(output):
        if stale := remove_stale_temporaries(output):
            logger.info("removed %d partial files left by an interrupted run", stale)
        return _run_locked(
            plan_inputs(inputs, output, files or ()),
            output,
            predictor,
            quiet=quiet,
            batch_size=batch_size,
            num_workers=num_workers,
            overwrite=overwrite,
            dicom_seg=dicom_seg,
            ray=ray,
        )


def _run_locked(
    files: list[InputFile],
    output: Path,
    predictor: Predictor,
    *,
    quiet: bool,
    batch_size: int,
    num_workers: int,
    overwrite: bool,
    dicom_seg: bool,
    ray: RayOptions | None = None,
) -> int:
    settings = {**predictor.settings(), "dicom_seg": dicom_seg}
    rows: dict[InputFile, dict[str, Any]] = {}
    todo: list[InputFile] = []
    for item in files:
        done = None if overwrite else _complete(output, item, settings)
        if done is None:
            _warn_replaced(output, item)
            todo.append(item)
        else:
            rows[item] = done
    if len(todo) < len(files):
        logger.info(
            "%d of %d inputs already done in %s (use --overwrite to redo them)",
            len(files) - len(todo),
            len(files),
            output,
        )
    if ray is not None:
        from fracseg.inference.ray_batch import predict_on_ray

        rows.update(predict_on_ray(todo, output, settings, ray, quiet=quiet))
    else:
        _predict_here(todo, output, predictor, rows, settings, quiet, batch_size, num_workers)
    ordered = [rows[item] for item in files]
    failed = sum(1 for r in ordered if r["error"])
    write_predictions(output, ordered, {"skipped_already_done": len(files) - len(todo), **settings})
    return failed


def _predict_here(
    todo: list[InputFile],
    output: Path,
    predictor: Predictor,
    rows: dict[InputFile, dict[str, Any]],
    settings: dict[str, Any],
    quiet: bool,
    batch_size: int,
    num_workers: int,
) -> None:
    """In this process: decoding in DataLoader workers, batched network calls, writing in a thread."""
    loader = DataLoader(
        _PrepareDataset(todo, predictor),
        batch_size=max(1, batch_size),
        num_workers=num_workers,
        collate_fn=list,
        shuffle=False,
    )
    bar = tqdm(total=len(todo), desc="fracseg infer", unit="img", disable=quiet)
    pending: list[tuple[InputFile, Future]] = []
    with ThreadPoolExecutor(max_workers=1) as writer:
        for batch in loader:
            good = [b for b in batch if not b["error"]]
            for b in batch:
                if b["error"]:
                    logger.error("%s", b["error"])
                    rows[b["file"]] = failed_row(output, b["file"], b["error"], b["seconds"])
            if good:
                start = time.perf_counter()
                probs = predictor.infer(
                    torch.stack([b["prepared"]["image"].as_tensor() for b in good]),
                    [tuple(b["prepared"]["original"].shape[-2:]) for b in good],
                )
                share = (time.perf_counter() - start) / len(good)
                for b, prob in zip(good, probs, strict=True):
                    future = writer.submit(_finish_and_write, predictor, output, b, prob, share, settings)
                    pending.append((b["file"], future))
            bar.update(len(batch))
        for item, future in pending:
            try:
                rows[item] = future.result()
            except Exception as exc:  # finishing or writing one image must never stop the batch
                message = error_message(item, exc)
                logger.error("%s", message)
                rows[item] = _error_row(item, message, 0.0)
    bar.close()


def write_predictions(output: Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    """``predictions.csv`` (:data:`CSV_COLUMNS`) and ``summary.json`` for ``rows``; atomic.

    The one writer of the output contract, shared by ``fracseg infer`` and the bundle's inference config.
    """
    write_csv_atomic(output / "predictions.csv", CSV_COLUMNS, rows)
    write_json_atomic(
        output / "summary.json",
        {
            "images": len(rows),
            "failed": sum(1 for r in rows if r.get("error")),
            "fracture_present": sum(int(r.get("fracture_present") or 0) for r in rows),
            **summary,
        },
    )


def failed_row(output: Path, item: InputFile, error: str, seconds: float = 0.0) -> dict[str, Any]:
    """Remove whatever ``item`` has stored under ``output`` and return its ``predictions.csv`` error row:
    how every path (this process, a Ray worker, the Ray driver) records an input that failed."""
    _discard_outputs(output, item)
    return _error_row(item, error, seconds)


def _error_row(item: InputFile, error: str, seconds: float) -> dict[str, Any]:
    return {"image": str(item.path), "seconds": round(seconds, 4), "error": error}
