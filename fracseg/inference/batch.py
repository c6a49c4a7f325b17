"""Batch inference over files and folders: masks, overlays, ``predictions.csv`` and a JSON summary.

Output contract: an input found inside a folder goes to the same relative sub-folder under the output
folder; an input given as a file goes straight into it. One bad file is recorded in the ``error``
column and never stops the batch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy import ndimage
from tqdm import tqdm

from fracseg.errors import FracsegError
from fracseg.inference.outputs import write_mask_png, write_overlay_png
from fracseg.inference.predictor import Predictor
from fracseg.io import is_supported_file, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("image", "fracture_score", "fracture_present", "mask_pixels", "regions", "seconds", "error")


@dataclass(frozen=True)
class InputFile:
    """A file to process and the output stem (relative path without suffix) it maps to."""

    path: Path
    out_stem: Path


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[InputFile]:
    """Expand files and folders (recursively, sorted) into :class:`InputFile`s; missing paths are kept
    so they surface as error rows."""
    found: list[InputFile] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and is_supported_file(p)):
                rel = file.relative_to(path)
                found.append(InputFile(file, rel.parent / _stem(file)))
        else:
            found.append(InputFile(path, Path(_stem(path))))
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


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    predictor: Predictor,
    quiet: bool = False,
) -> int:
    """Predict every input; return the number of failed files."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    files = collect_inputs(inputs)
    rows: list[dict[str, object]] = []
    failed = 0
    for item in _progress(files, quiet):
        start = time.perf_counter()
        row: dict[str, object] = {"image": str(item.path), "error": ""}
        try:
            pred = predictor.predict(item.path)
            base = output / item.out_stem
            write_mask_png(base.parent / f"{base.name}_mask.png", pred.mask)
            write_overlay_png(base.parent / f"{base.name}_overlay.png", pred.image, pred.mask)
            _, regions = ndimage.label(pred.mask)
            row.update(
                fracture_score=round(pred.fracture_score, 6),
                fracture_present=int(pred.mask.any()),
                mask_pixels=int(pred.mask.sum()),
                regions=int(regions),
            )
        except FracsegError as exc:
            failed += 1
            row["error"] = str(exc)
            logger.error("%s", exc)
        row["seconds"] = round(time.perf_counter() - start, 4)
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS})
    write_text_atomic(output / "predictions.csv", buffer.getvalue())
    write_json_atomic(
        output / "summary.json",
        {
            "images": len(rows),
            "failed": failed,
            "fracture_present": sum(int(r.get("fracture_present", 0) or 0) for r in rows),
            "trained_model": predictor.trained,
            "threshold": predictor.threshold,
        },
    )
    return failed


def _progress(files: list[InputFile], quiet: bool) -> Iterable[InputFile]:
    return tqdm(files, desc="fracseg infer", unit="img", disable=quiet)
