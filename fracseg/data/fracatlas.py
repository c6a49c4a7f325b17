"""FracAtlas (Abedeen et al., Sci Data 10:521, 2023; CC BY 4.0) -> masks + MONAI datalists.

Works on the public release layout unchanged (and on any subset that keeps it)::

    ROOT/images/Fractured/*.jpg, ROOT/images/Non_fractured/*.jpg
    ROOT/Annotations/COCO JSON/COCO_fracture_masks.json
    ROOT/Utilities/Fracture Split/train.csv, valid.csv[, test.csv]
    ROOT/dataset.csv

Output (``OUT``)::

    OUT/masks/<image_id>.png     uint8, 0 background / 1 fracture, in the displayed (EXIF-applied) frame
    OUT/datalist.json            MONAI datalist: training, validation[, test], negatives,
                                 negatives_train, negatives_valid, negatives_test, cv_fold0..cv_fold4
    OUT/report.json              counts and every problem found

Decisions: the image folder and the COCO polygons define "fractured" (``dataset.csv`` is known to be
wrong for IMG0003298; conflicts are reported, not silently fixed); unreadable images (truncated JPEGs)
are reported and left out of every list; negatives get an empty mask and a deterministic fold
(``sha256(image_id) % 5``; fold 0 is ``negatives_valid``, fold 1 ``negatives_test``, folds 2-4
``negatives_train``) because the official split covers fractured images only. ``negatives_test`` is never
trained on, so the withheld test split can be scored at image level (AUROC, specificity) without leakage.

Cross-validation (``cv_fold0`` .. ``cv_fold4``): every image of train+valid, fractured (``training`` and
``validation``) and non-fractured (``negatives_train`` and ``negatives_valid``), falls in fold
``sha256("cv:" + image_id) % 5``, hashed per image and so per class (stratified up to hashing noise) and
the same on the full release, whose ``test`` and ``negatives_test`` stay out of every fold. The hash is
salted so that it is independent of the negatives' split hash (unsalted, fold 1 would hold none).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fracseg.data.rasterize import check_polygon, polygon_points, rasterize_polygons
from fracseg.errors import DatasetError, ImageReadError
from fracseg.io import atomic_path, read_xray, write_json_atomic

logger = logging.getLogger(__name__)

COCO_PATH = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"
SPLIT_DIR = Path("Utilities") / "Fracture Split"
DATASET_CSV = Path("dataset.csv")
FRACTURED_DIR = Path("images") / "Fractured"
NON_FRACTURED_DIR = Path("images") / "Non_fractured"
#: Official splits (file stem -> datalist key). ``test`` is optional: withheld from development subsets.
SPLITS = {"train": "training", "valid": "validation", "test": "test"}
BODY_PARTS = ("hand", "leg", "hip", "shoulder", "mixed")
FLAG_COLUMNS = (*BODY_PARTS, "hardware", "multiscan", "frontal", "lateral", "oblique")
NEGATIVE_FOLDS = 5
#: Held-out negative folds; every other fold is ``negatives_train``.
NEGATIVE_FOLD_KEYS = {0: "negatives_valid", 1: "negatives_test"}
#: k of the k-fold cross-validation over train+valid (datalist keys ``cv_fold0`` .. ``cv_fold{k-1}``).
CV_FOLDS = 5
#: Version of what ``prepare_fracatlas`` writes; an older preparation is redone by ``ensure_prepared``.
PREPARE_FORMAT = 2
CITATION = (
    "FracAtlas: Abedeen et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4; "
    "data doi:10.6084/m9.figshare.22363012; CC BY 4.0"
)


@dataclass
class PrepareReport:
    """Everything ``prepare_fracatlas`` found; written to ``report.json`` and summarised on the console."""

    root: str
    out: str
    counts: dict[str, int] = field(default_factory=dict)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    polygons_outside: list[dict[str, Any]] = field(default_factory=list)
    label_conflicts: list[dict[str, str]] = field(default_factory=list)
    size_mismatches: list[dict[str, Any]] = field(default_factory=list)
    missing_images: list[dict[str, str]] = field(default_factory=list)
    degenerate_polygons: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "out": self.out,
            "counts": dict(sorted(self.counts.items())),
            "unreadable": self.unreadable,
            "polygons_outside": self.polygons_outside,
            "label_conflicts": self.label_conflicts,
            "size_mismatches": self.size_mismatches,
            "missing_images": self.missing_images,
            "degenerate_polygons": self.degenerate_polygons,
            "citation": CITATION,
        }

    def summary(self) -> str:
        """A short human-readable summary (what the CLI prints)."""
        c = self.counts
        lines = [f"FracAtlas preparation: {self.root} -> {self.out}"]
        splits = ", ".join(f"{k} {c[k]}" for k in ("training", "validation", "test") if k in c)
        lines.append(
            f"  fractured images: {c.get('fractured_images', 0)} ({splits}); "
            f"in no split: {c.get('fractured_unsplit', 0)}"
        )
        lines.append(
            f"  negatives: {c.get('negatives', 0)} usable "
            f"(train {c.get('negatives_train', 0)}, valid {c.get('negatives_valid', 0)}, "
            f"test {c.get('negatives_test', 0)})"
        )
        lines.append(
            f"  polygons: {c.get('polygons', 0)} rasterised; outside the image: "
            f"{len(self.polygons_outside)}; empty after rasterising: {c.get('empty_masks', 0)}"
            + (
                f"; degenerate, skipped: {len(self.degenerate_polygons)}"
                + "".join(
                    f"\n    - {d['image_id']} annotation {d['annotation_id']}: {d['reason']}"
                    for d in self.degenerate_polygons[:20]
                )
                if self.degenerate_polygons
                else ""
            )
        )
        lines.append(
            f"  unreadable files: {len(self.unreadable)}"
            + "".join(f"\n    - {u['image_id']}: {u['reason']}" for u in self.unreadable[:20])
            + ("\n    ..." if len(self.unreadable) > 20 else "")
        )
        lines.append(
            f"  label conflicts: {len(self.label_conflicts)}"
            + "".join(f"\n    - {x['image_id']}: {x['reason']}" for x in self.label_conflicts)
        )
        lines.append(
            f"  COCO size mismatches: {len(self.size_mismatches)}; missing images: {len(self.missing_images)}"
        )
        return "\n".join(lines)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _stem(image_id: str) -> str:
    return Path(image_id.strip()).stem


def _flag(row: dict[str, str] | None, column: str) -> int:
    if row is None:
        return 0
    try:
        return int(float(row.get(column, 0) or 0))
    except ValueError:
        return 0


def _body_part(row: dict[str, str] | None) -> str:
    parts = [p for p in BODY_PARTS if _flag(row, p)]
    if not parts:
        return "unknown"
    return parts[0] if len(parts) == 1 else "mixed"


class CocoPolygons(dict[str, list[tuple[int, list[float]]]]):
    """``image_id -> [(annotation_id, flat polygon), ...]`` with the COCO image sizes in ``sizes``."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[str, tuple[int | None, int | None]] = {}


def read_coco_polygons(root: str | Path) -> tuple[CocoPolygons, list[dict[str, str]]]:
    """The fracture polygons of a FracAtlas root, by image id, in annotation-id order.

    Every polygon is one ground-truth instance (as in the FracAtlas YOLO/COCO baselines). Returns the
    polygons and the problems found: ``kind`` "missing" (annotation of an unknown image), "conflict"
    (RLE instead of polygons; ignored) or "degenerate" (fewer than 3 vertices, an odd number of
    coordinates or non-numbers; skipped, with ``annotation_id``).
    """
    coco = json.loads((Path(root) / COCO_PATH).read_text(encoding="utf-8"))
    coco_images = {img["id"]: img for img in coco.get("images", [])}
    polygons = CocoPolygons()
    for img in coco_images.values():
        polygons.sizes[_stem(img["file_name"])] = (img.get("height"), img.get("width"))
    problems: list[dict[str, str]] = []
    for ann in sorted(coco.get("annotations", []), key=lambda a: a["id"]):
        img = coco_images.get(ann["image_id"])
        if img is None:
            problems.append(
                {
                    "kind": "missing",
                    "image_id": f"coco image id {ann['image_id']}",
                    "reason": f"annotation {ann['id']} refers to an unknown COCO image",
                }
            )
            continue
        segs = ann.get("segmentation") or []
        if not isinstance(segs, list):
            problems.append(
                {
                    "kind": "conflict",
                    "image_id": _stem(img["file_name"]),
                    "reason": f"annotation {ann['id']} is RLE, not polygons; ignored",
                }
            )
            continue
        for flat in segs:
            try:
                polygon_points(flat)
            except (ValueError, TypeError) as exc:
                problems.append(
                    {
                        "kind": "degenerate",
                        "image_id": _stem(img["file_name"]),
                        "annotation_id": ann["id"],
                        "reason": str(exc) if isinstance(exc, ValueError) else f"not numbers ({exc})",
                    }
                )
                continue
            polygons.setdefault(_stem(img["file_name"]), []).append((ann["id"], flat))
    return polygons, problems


def negative_fold(image_id: str) -> int:
    """Deterministic fold (0..4) of a non-fractured image, stable across machines and releases."""
    return int(hashlib.sha256(_stem(image_id).encode()).hexdigest(), 16) % NEGATIVE_FOLDS


def cv_fold(image_id: str, folds: int = CV_FOLDS) -> int:
    """Cross-validation fold (0..folds-1) of an image of train+valid, fixed by a salted hash of its id."""
    return int(hashlib.sha256(f"cv:{_stem(image_id)}".encode()).hexdigest(), 16) % folds


def cv_fold_keys(fold: int, folds: int = CV_FOLDS) -> tuple[list[str], list[str]]:
    """Datalist keys ``(training, held_out)`` of cross-validation fold ``fold``.

    ``fold < 0`` is the release run on all of train+valid: every fold trains and none is held out.
    """
    keys = [f"cv_fold{k}" for k in range(folds)]
    if fold < 0:
        return keys, []
    if fold >= folds:
        raise ValueError(f"cv fold {fold} out of range for {folds} folds")
    return [k for i, k in enumerate(keys) if i != fold], [keys[fold]]


def _write_mask(path: Path, mask: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(mask).save(tmp, format="PNG", optimize=False)


def check_layout(root: Path) -> None:
    """Raise :class:`DatasetError` naming what is missing when ``root`` is not a FracAtlas layout."""
    required = [COCO_PATH, SPLIT_DIR / "train.csv", SPLIT_DIR / "valid.csv", DATASET_CSV, FRACTURED_DIR]
    missing = [str(p) for p in required if not (root / p).exists()]
    if missing:
        raise DatasetError(f"{root}: not a FracAtlas release layout; missing {', '.join(missing)}")


def prepare_fracatlas(
    root: str | Path,
    out: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport:
    """Rasterise FracAtlas polygons into masks and write MONAI datalists. Deterministic and re-runnable.

    Args:
        root: FracAtlas root (release layout, see module docstring).
        out: output folder (created).
        progress: optional ``callback(done, total)`` called once per image.

    Returns:
        The :class:`PrepareReport`, also written to ``out/report.json``.
    """
    root = Path(root).resolve()
    out = Path(out).resolve()
    check_layout(root)
    report = PrepareReport(root=str(root), out=str(out))
    counts: dict[str, int] = defaultdict(int)

    polygons, problems = read_coco_polygons(root)
    by_name = polygons.sizes
    for problem in problems:
        if problem["kind"] == "degenerate":
            report.degenerate_polygons.append({k: v for k, v in problem.items() if k != "kind"})
            logger.warning(
                "%s annotation %s skipped: %s", *(problem[k] for k in ("image_id", "annotation_id", "reason"))
            )
            continue
        target = report.missing_images if problem["kind"] == "missing" else report.label_conflicts
        target.append({"image_id": problem["image_id"], "reason": problem["reason"]})

    table = {_stem(r["image_id"]): r for r in _read_csv(root / DATASET_CSV)}
    split_of: dict[str, str] = {}
    for split in SPLITS:
        csv_path = root / SPLIT_DIR / f"{split}.csv"
        if not csv_path.exists():
            continue
        for row in _read_csv(csv_path):
            image_id = _stem(row.get("image_id") or next(iter(row.values())))
            if image_id in split_of and split_of[image_id] != split:
                report.label_conflicts.append(
                    {"image_id": image_id, "reason": f"listed in both {split_of[image_id]} and {split}"}
                )
                continue
            split_of[image_id] = split

    fractured = sorted(p for p in (root / FRACTURED_DIR).glob("*") if p.is_file())
    negatives = (
        sorted(p for p in (root / NON_FRACTURED_DIR).glob("*") if p.is_file())
        if (root / NON_FRACTURED_DIR).exists()
        else []
    )
    fractured_ids = {p.stem for p in fractured}
    missing: dict[str, list[str]] = defaultdict(list)  # one entry per missing image, every reason in it
    for image_id in sorted(split_of):
        if image_id not in fractured_ids:
            missing[image_id].append(f"in a split csv ({split_of[image_id]}) but not in {FRACTURED_DIR}")
    for image_id in sorted(polygons):
        if image_id not in fractured_ids:
            missing[image_id].append("has polygons but no image in Fractured/")
    for image_id in sorted(missing):
        report.missing_images.append({"image_id": image_id, "reason": "; ".join(missing[image_id])})

    lists: dict[str, list[dict[str, Any]]] = defaultdict(list)
    total = len(fractured) + len(negatives)
    done = 0
    for path, is_fractured_dir in [(p, True) for p in fractured] + [(p, False) for p in negatives]:
        image_id = path.stem
        row = table.get(image_id)
        done += 1
        try:
            image = read_xray(path)
        except ImageReadError as exc:
            report.unreadable.append({"image_id": image_id, "path": str(path), "reason": exc.reason})
            logger.warning("%s", exc)
            if progress:
                progress(done, total)
            continue
        height, width = image.meta.original_size
        image_polys = polygons.get(image_id, [])
        coco_size = by_name.get(image_id)
        if coco_size is not None and coco_size != (height, width):
            report.size_mismatches.append(
                {"image_id": image_id, "coco": list(coco_size), "displayed": [height, width]}
            )
        for ann_id, flat in image_polys:
            check = check_polygon(flat, height, width)
            if check.outside:
                report.polygons_outside.append(
                    {
                        "image_id": image_id,
                        "annotation_id": ann_id,
                        "max_outside_px": round(check.max_outside, 2),
                    }
                )
        if row is None:
            report.label_conflicts.append({"image_id": image_id, "reason": "not listed in dataset.csv"})
        else:
            csv_fractured = _flag(row, "fractured")
            if csv_fractured != int(is_fractured_dir):
                report.label_conflicts.append(
                    {
                        "image_id": image_id,
                        "reason": f"dataset.csv fractured={csv_fractured} but the image is in "
                        f"{'Fractured' if is_fractured_dir else 'Non_fractured'}/ "
                        f"with {len(image_polys)} polygon(s); folder and polygons are used",
                    }
                )
        if is_fractured_dir and not image_polys:
            report.label_conflicts.append(
                {"image_id": image_id, "reason": "in Fractured/ without any polygon"}
            )
        if not is_fractured_dir and image_polys:
            report.label_conflicts.append(
                {"image_id": image_id, "reason": f"in Non_fractured/ with {len(image_polys)} polygon(s)"}
            )

        mask = rasterize_polygons([flat for _, flat in image_polys], height, width)
        if image_polys and not mask.any():
            counts["empty_masks"] += 1
        mask_path = out / "masks" / f"{image_id}.png"
        _write_mask(mask_path, mask)
        counts["polygons"] += len(image_polys)
        entry: dict[str, Any] = {
            "image": str(path),
            "label": str(mask_path),
            "image_id": image_id,
            "fractured": int(is_fractured_dir),
            "body_part": _body_part(row),
            "height": height,
            "width": width,
            "polygons": len(image_polys),
            "mask_pixels": int(mask.sum()),
            "fracture_count_csv": _flag(row, "fracture_count"),
            "fold": -1,  # negatives get 0..4 below; every entry has the same keys so batches collate
            "cv_fold": -1,  # images of train+valid get 0..4 below
        }
        entry.update({col: _flag(row, col) for col in FLAG_COLUMNS})
        if is_fractured_dir:
            counts["fractured_images"] += 1
            split = split_of.get(image_id)
            if split is None:
                counts["fractured_unsplit"] += 1
                lists["fractured_unsplit"].append(entry)
            else:
                if split != "test":
                    entry["cv_fold"] = cv_fold(image_id)
                lists[SPLITS[split]].append(entry)
        else:
            fold = negative_fold(image_id)
            entry["fold"] = fold
            if NEGATIVE_FOLD_KEYS.get(fold) != "negatives_test":
                entry["cv_fold"] = cv_fold(image_id)
            lists["negatives"].append(entry)
            lists[NEGATIVE_FOLD_KEYS.get(fold, "negatives_train")].append(entry)
        if entry["cv_fold"] >= 0:
            lists[f"cv_fold{entry['cv_fold']}"].append(entry)
        if progress:
            progress(done, total)

    datalist = {
        key: lists.get(key, [])
        for key in (
            "training",
            "validation",
            "negatives",
            "negatives_train",
            "negatives_valid",
            "negatives_test",
            *(f"cv_fold{k}" for k in range(CV_FOLDS)),
        )
    }
    if (root / SPLIT_DIR / "test.csv").exists():
        datalist["test"] = lists.get("test", [])
    if lists.get("fractured_unsplit"):
        datalist["fractured_unsplit"] = lists["fractured_unsplit"]
    for key, items in datalist.items():
        counts[key] = len(items)
    counts["images_found"] = total
    counts["unreadable"] = len(report.unreadable)
    counts["polygons_outside"] = len(report.polygons_outside)
    counts["degenerate_polygons"] = len(report.degenerate_polygons)
    counts["missing_images"] = len(report.missing_images)
    counts["label_conflicts"] = len(report.label_conflicts)
    report.counts = dict(counts)
    # Top-level strings as in the Medical Segmentation Decathlon's dataset.json.
    header = {"name": "FracAtlas", "licence": "CC BY 4.0", "reference": CITATION, "format": PREPARE_FORMAT}
    write_json_atomic(out / "datalist.json", {**header, **datalist})
    write_json_atomic(out / "report.json", report.to_dict())
    return report


def ensure_prepared(root: str | Path, out: str | Path) -> Path:
    """Prepare ``root`` into ``out`` unless ``out`` already holds a preparation of the same root.

    Used by the bundle's ``initialize`` step so ``--dataset_dir`` is the only thing a user must give.
    Returns the datalist path.
    """
    out = Path(out)
    report_path = out / "report.json"
    datalist = out / "datalist.json"
    if report_path.exists() and datalist.exists():
        try:
            previous = json.loads(report_path.read_text(encoding="utf-8")).get("root")
            fmt = json.loads(datalist.read_text(encoding="utf-8")).get("format")
        except (OSError, json.JSONDecodeError):
            previous = fmt = None
        if previous == str(Path(root).resolve()) and fmt == PREPARE_FORMAT:
            logger.info("using the existing preparation in %s", out)
            return datalist
    report = prepare_fracatlas(root, out)
    logger.info("%s", report.summary())
    return datalist
