"""Batch inference over files and folders: masks, overlays, ``predictions.csv`` and a JSON summary.

Output contract: an input found inside a folder goes to the same relative sub-folder under the output
folder; an input given as a file goes straight into it. One bad file is recorded in the ``error``
column and never stops the batch.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fracseg.errors import FracsegError
from fracseg.inference.outputs import write_mask_png, write_overlay_png
from fracseg.inference.predictor import Predictor
from fracseg.io import (
    ImageFormat,
    is_supported_file,
    remove_stale_temporaries,
    write_csv_atomic,
    write_json_atomic,
)
from fracseg.io.dicom_seg import write_dicom_seg

logger = logging.getLogger(__name__)

#: Hidden folder of per-image completion records (what makes a run resumable).
RECORDS_DIR = ".fracseg-records"
CSV_COLUMNS = ("image", "fracture_score", "fracture_present", "mask_pixels", "regions", "seconds", "error")


@dataclass(frozen=True)
class InputFile:
    """A file to process and the output stem (relative path without suffix) it maps to."""

    path: Path
    out_stem: Path


def file_stem(path: Path) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one); names without a suffix stay whole."""
    name = path.name
    for suffix in (".nii.gz",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], exclude: str | os.PathLike[str] | None = None
) -> list[InputFile]:
    """Expand files, folders (recursively, sorted) and quoted globs (``"pacs/**/*.dcm"``) into
    :class:`InputFile`s; missing paths are kept so they surface as error rows. Files under ``exclude``
    (the output folder) are skipped; a glob match keeps its path below the glob's fixed folders."""
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[InputFile] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists() and glob.has_magic(str(raw)):  # a quoted glob: expand it like a shell would
            # Outputs keep the matches' paths below the glob's fixed leading folders, so equal file names
            # in different folders (PACS exports) cannot collide.
            fixed = list(itertools.takewhile(lambda p: not glob.has_magic(p), path.parts))
            base = Path(*fixed) if fixed else Path()
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            for match in matches:
                if match.is_file() and (skip is None or not match.resolve().is_relative_to(skip)):
                    rel = match.relative_to(base)
                    found.append(InputFile(match, rel.parent / file_stem(match)))
            if matches:
                continue
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file() and is_supported_file(p))
            for file in candidates:
                if skip is not None and file.resolve().is_relative_to(skip):
                    continue
                rel = file.relative_to(path)
                found.append(InputFile(file, rel.parent / file_stem(file)))
        else:
            found.append(InputFile(path, Path(file_stem(path))))
    return found


def input_datalist(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[dict[str, str]]:
    """MONAI datalist (``[{"image": path}, ...]``) for files, folders, or a datalist JSON (its ``testing``
    list, else ``validation``): what ``bundle/configs/inference.json`` iterates over."""
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if len(items) == 1 and str(items[0]).endswith(".json"):
        content = json.loads(Path(items[0]).read_text(encoding="utf-8"))
        key = next((k for k in ("testing", "test", "validation") if k in content), None)
        if key is None:
            raise FracsegError(f"{items[0]}: datalist has no testing/test/validation list")
        return [{"image": str(Path(items[0]).parent / e["image"])} for e in content[key]]
    return [{"image": str(f.path)} for f in collect_inputs(items)]


class _PrepareDataset(Dataset):
    """Decode and pre-process inputs in DataLoader workers; a bad file becomes an error record."""

    def __init__(self, files: Sequence[InputFile], predictor: Predictor) -> None:
        self.files = list(files)
        self.prepare = predictor.prepare

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            prepared, error = self.prepare(self.files[index].path), ""
        except FracsegError as exc:
            prepared, error = None, str(exc)
        return {
            "file": self.files[index],
            "prepared": prepared,
            "error": error,
            "seconds": time.perf_counter() - start,
        }


def _record_path(output: Path, item: InputFile) -> Path:
    return output / RECORDS_DIR / item.out_stem.parent / f"{item.out_stem.name}.json"


def _outputs(output: Path, item: InputFile) -> tuple[Path, Path]:
    base = output / item.out_stem
    return base.parent / f"{base.name}_mask.png", base.parent / f"{base.name}_overlay.png"


def seg_path(output: Path, item: InputFile) -> Path:
    """Where the DICOM SEG of ``item`` is written."""
    base = output / item.out_stem
    return base.parent / f"{base.name}_seg.dcm"


def _complete(output: Path, item: InputFile, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result row when ``item`` was fully written with the same settings, else None."""
    record = _record_path(output, item)
    if not record.exists() or not all(p.exists() for p in _outputs(output, item)):
        return None
    try:
        content = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if content.get("settings") != settings:
        return None
    if content.get("dicom_seg") and not seg_path(output, item).exists():
        return None
    return content["row"]


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
    pred = predictor.finish(loaded["prepared"], probability)
    mask_path, overlay_path = _outputs(output, item)
    write_mask_png(mask_path, pred.mask)
    write_overlay_png(overlay_path, pred.image, pred.mask, normalized=True)  # already in [0, 1]
    seg_written = False
    if settings.get("dicom_seg") and pred.meta.get("format") == ImageFormat.DICOM:
        write_dicom_seg(item.path, pred.mask, seg_path(output, item))
        seg_written = True
    row = {
        "image": str(item.path),
        "fracture_score": round(pred.fracture_score, 6),
        "fracture_present": int(pred.fracture_present),
        "mask_pixels": int(pred.mask.sum()),
        "regions": len(pred.decision.regions),
        "seconds": round(loaded["seconds"] + infer_seconds + time.perf_counter() - start, 4),
        "error": "",
    }
    # The record is written last: its presence means mask and overlay are complete.
    write_json_atomic(
        _record_path(output, item), {"row": row, "settings": settings, "dicom_seg": seg_written}
    )
    return row


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
) -> int:
    """Predict every input; return the number of failed files.

    Decoding runs in ``num_workers`` DataLoader workers, the network sees batches of ``batch_size``, and
    PNG encoding/writing runs in a background thread, so the three overlap. Inputs whose outputs are
    complete (same weights, threshold and size) are skipped unless ``overwrite``; ``predictions.csv`` is
    rebuilt from the per-image records, so a run killed at any point resumes where it stopped. With
    ``dicom_seg``, every DICOM input also gets ``<stem>_seg.dcm`` (:mod:`fracseg.io.dicom_seg`).
    ``files`` (already collected inputs, e.g. from DICOMweb) is processed in addition to ``inputs``.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if stale := remove_stale_temporaries(output):
        logger.info("removed %d partial files left by an interrupted run", stale)
    files = [*collect_inputs(inputs, exclude=output), *(files or [])]
    settings = {**predictor.settings(), "dicom_seg": dicom_seg}
    rows: dict[InputFile, dict[str, Any]] = {}
    todo: list[InputFile] = []
    for item in files:
        done = None if overwrite else _complete(output, item, settings)
        if done is None:
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
                    rows[b["file"]] = _error_row(b["file"], b["error"], b["seconds"])
            if good:
                start = time.perf_counter()
                probs = predictor.infer(torch.stack([b["prepared"]["image"].as_tensor() for b in good]))
                share = (time.perf_counter() - start) / len(good)
                for b, prob in zip(good, probs, strict=True):
                    future = writer.submit(_finish_and_write, predictor, output, b, prob, share, settings)
                    pending.append((b["file"], future))
            bar.update(len(batch))
        for item, future in pending:
            try:
                rows[item] = future.result()
            except (FracsegError, OSError, ValueError) as exc:
                logger.error("%s: %s", item.path, exc)
                rows[item] = _error_row(item, f"{item.path}: {exc}", 0.0)
    bar.close()
    ordered = [rows[item] for item in files]
    failed = sum(1 for r in ordered if r["error"])
    write_predictions(output, ordered, {"skipped_already_done": len(files) - len(todo), **settings})
    return failed


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


def _error_row(item: InputFile, error: str, seconds: float) -> dict[str, Any]:
    return {"image": str(item.path), "seconds": round(seconds, 4), "error": error}
