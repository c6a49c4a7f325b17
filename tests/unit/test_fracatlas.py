"""FracAtlas preparation on a synthetic layout that carries every known quirk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fracseg.data import (
    cv_fold,
    cv_fold_keys,
    cv_items,
    ensure_prepared,
    load_datalist,
    negative_fold,
    prepare_fracatlas,
)
from fracseg.data.cache import LoadCachedd, build_cache, cache_key, cache_settings
from fracseg.errors import DatasetError
from fracseg.io import TEMP_PREFIX
from fracseg.transforms import preprocessing
from tests.helpers.fracatlas_layout import make_layout


@pytest.fixture()
def prepared(tmp_path):
    root = make_layout(tmp_path / "FracAtlas")
    out = tmp_path / "out"
    report = prepare_fracatlas(root, out)
    return root, out, report


def _mask(out, image_id):
    return np.asarray(Image.open(out / "masks" / f"{image_id}.png"))


def test_datalists_follow_the_official_split_and_include_test(prepared) -> None:
    _, out, report = prepared
    dl = json.loads((out / "datalist.json").read_text())
    assert [e["image_id"] for e in dl["training"]] == ["F1", "F2", "F3"]
    assert [e["image_id"] for e in dl["validation"]] == ["F4", "F6"]
    assert [e["image_id"] for e in dl["test"]] == ["F5"]
    assert [e["image_id"] for e in dl["negatives"]] == ["N1", "N2"]  # N3 is truncated
    folds = dl["negatives_train"] + dl["negatives_valid"] + dl["negatives_test"]
    assert sorted(e["image_id"] for e in folds) == ["N1", "N2"]
    assert all(e["fold"] == negative_fold(e["image_id"]) for e in dl["negatives"])
    assert dl["licence"] == "CC BY 4.0" and "FracAtlas" in dl["reference"]
    assert report.counts["training"] == 3 and report.counts["test"] == 1 and report.counts["negatives"] == 2


def test_cv_folds_cover_train_and_valid_only_each_image_once(prepared) -> None:
    _, out, _ = prepared
    dl = json.loads((out / "datalist.json").read_text())
    in_folds = [e["image_id"] for k in range(5) for e in dl[f"cv_fold{k}"]]
    negatives_test = {e["image_id"] for e in dl["negatives_test"]}
    expected = {e["image_id"] for e in dl["training"] + dl["validation"]} | (
        {e["image_id"] for e in dl["negatives"]} - negatives_test
    )
    assert sorted(in_folds) == sorted(expected)  # the official test split and negatives_test: in no fold
    for k in range(5):
        assert all(e["cv_fold"] == k == cv_fold(e["image_id"]) for e in dl[f"cv_fold{k}"])
    assert all(e["cv_fold"] == -1 for e in dl["test"] + dl["negatives_test"])


def test_cv_fold_is_a_fixed_salted_hash_independent_of_the_negative_split() -> None:
    # pinned values: a fold must not move between machines, releases or subsets
    assert [cv_fold(f"IMG{i:07d}") for i in range(8)] == [2, 1, 2, 2, 4, 4, 1, 2]
    assert cv_fold("IMG0000004.jpg") == cv_fold("IMG0000004")  # the id, with or without extension
    ids = [f"IMG{i:07d}" for i in range(4000)]
    pairs = {(negative_fold(i), cv_fold(i)) for i in ids}
    assert len(pairs) == 25  # every negative split meets every cv fold
    counts = np.bincount([cv_fold(i) for i in ids], minlength=5)
    assert counts.min() > 700 and counts.max() < 900


def test_cv_items_hold_out_one_fold(prepared) -> None:
    _, out, _ = prepared
    datalist = out / "datalist.json"
    all_items = {e["image_id"]: e for e in cv_items(datalist, -1)}
    for fold in range(5):
        train_keys, held_keys = cv_fold_keys(fold)
        assert held_keys == [f"cv_fold{fold}"] and f"cv_fold{fold}" not in train_keys
        held = cv_items(datalist, fold, held_out=True)
        train = cv_items(datalist, fold)
        assert {e["image_id"] for e in held}.isdisjoint(e["image_id"] for e in train)
        assert {e["image_id"] for e in held} | {e["image_id"] for e in train} == set(all_items)
        assert len(train) + len(held) == len(all_items)
    assert cv_items(datalist, -1, held_out=True) == []
    with pytest.raises(ValueError, match="out of range"):
        cv_fold_keys(5)


def test_negative_share_weights_draw_that_share_of_non_fractured_crops() -> None:
    import torch
    from torch.utils.data import WeightedRandomSampler

    from fracseg.data import negative_share_weights

    items = [{"fractured": True}] * 30 + [{"fractured": False}] * 270
    weights = negative_share_weights(items, 0.25)
    assert sum(weights) == pytest.approx(1.0)
    torch.manual_seed(0)
    drawn = list(WeightedRandomSampler(weights, num_samples=4000, replacement=True))
    share = sum(not items[i]["fractured"] for i in drawn) / len(drawn)
    assert 0.22 < share < 0.28
    # every negative can be drawn: over many epochs all of them are seen
    many = WeightedRandomSampler(weights, num_samples=40000, replacement=True)
    assert len({i for i in many if not items[i]["fractured"]}) == 270
    torch.manual_seed(0)
    assert list(WeightedRandomSampler(weights, num_samples=4000, replacement=True)) == drawn
    assert negative_share_weights(items[:30], 0.25) == [1 / 30] * 30
    with pytest.raises(ValueError, match="no fractured"):
        negative_share_weights(items[30:], 0.25)
    with pytest.raises(ValueError, match="negative_share"):
        negative_share_weights(items, 1.0)


def test_an_older_preparation_without_cv_folds_is_redone(prepared) -> None:
    root, out, _ = prepared
    path = out / "datalist.json"
    old = json.loads(path.read_text())
    for k in range(5):
        old.pop(f"cv_fold{k}")
    old.pop("format")
    path.write_text(json.dumps(old))
    ensure_prepared(root, out)
    assert "cv_fold0" in json.loads(path.read_text())


def test_entries_carry_body_part_flags_and_sizes(prepared) -> None:
    _, out, _ = prepared
    entries = {e["image_id"]: e for e in load_datalist(out / "datalist.json", ["training", "negatives"])}
    assert (
        entries["F1"]["body_part"] == "hand" and entries["F1"]["hand"] == 1 and entries["F1"]["polygons"] == 2
    )
    assert entries["F2"]["hardware"] == 1 and entries["F2"]["lateral"] == 1
    assert (entries["F2"]["height"], entries["F2"]["width"]) == (40, 60)
    assert entries["N2"]["fractured"] == 0 and entries["N2"]["body_part"] == "leg"
    assert (out / "masks" / "N2.png").exists() and _mask(out, "N2").shape == (40, 20)
    assert _mask(out, "N2").max() == 0


def test_masks_are_drawn_in_the_exif_upright_frame_with_label_one(prepared) -> None:
    root, out, _ = prepared
    mask = _mask(out, "F2")
    expected = np.zeros((40, 60), np.uint8)
    expected[5:15, 10:20] = 1
    np.testing.assert_array_equal(mask, expected)
    raw = Image.open(root / "images" / "Fractured" / "F2.jpg")
    assert raw.size == (40, 60)  # stored sideways; the mask follows the displayed frame
    f1 = _mask(out, "F1")
    assert f1.shape == (48, 64) and f1.sum() == 200 and set(np.unique(f1)) == {0, 1}


def test_report_lists_outside_polygons_unreadable_files_and_label_conflicts(prepared) -> None:
    _, out, report = prepared
    assert [p["image_id"] for p in report.polygons_outside] == ["F3"]
    assert report.polygons_outside[0]["max_outside_px"] == pytest.approx(5.0)
    assert _mask(out, "F3").sum() == 64
    assert [u["image_id"] for u in report.unreadable] == ["N3"]
    assert "truncated" in report.unreadable[0]["reason"]
    conflicts = {c["image_id"]: c["reason"] for c in report.label_conflicts}
    assert list(conflicts) == ["F6"] and "dataset.csv fractured=0" in conflicts["F6"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["counts"]["unreadable"] == 1 and saved["label_conflicts"][0]["image_id"] == "F6"
    text = report.summary()
    assert "unreadable files: 1" in text and "N3" in text and "label conflicts: 1" in text


def test_preparation_is_deterministic(tmp_path) -> None:
    root = make_layout(tmp_path / "FracAtlas")
    prepare_fracatlas(root, tmp_path / "a")
    prepare_fracatlas(root, tmp_path / "a")  # re-run in place
    prepare_fracatlas(root, tmp_path / "b")
    a = (tmp_path / "a" / "datalist.json").read_text().replace(str(tmp_path / "a"), "OUT")
    b = (tmp_path / "b" / "datalist.json").read_text().replace(str(tmp_path / "b"), "OUT")
    assert a == b
    for name in ("F1", "F2", "N1"):
        assert (tmp_path / "a" / "masks" / f"{name}.png").read_bytes() == (
            tmp_path / "b" / "masks" / f"{name}.png"
        ).read_bytes()
    assert not list((tmp_path / "a").rglob(f"{TEMP_PREFIX}*"))


def test_release_without_test_csv_writes_no_test_list(tmp_path) -> None:
    root = make_layout(tmp_path / "FracAtlas", with_test=False)
    prepare_fracatlas(root, tmp_path / "out")
    assert "test" not in json.loads((tmp_path / "out" / "datalist.json").read_text())


def test_not_a_fracatlas_root_names_what_is_missing(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"COCO_fracture_masks\.json"):
        prepare_fracatlas(tmp_path, tmp_path / "out")


def test_load_datalist_errors_name_the_key(prepared) -> None:
    _, out, _ = prepared
    with pytest.raises(DatasetError, match="no list 'nope'"):
        load_datalist(out / "datalist.json", "nope")


def test_cache_is_keyed_by_settings_and_matches_the_pipeline(prepared) -> None:
    _, out, _ = prepared
    items = load_datalist(out / "datalist.json", ["training"])
    folder = build_cache(items, out / "cache", spatial_size=32)
    assert folder.name == cache_key(cache_settings(32)) != cache_key(cache_settings(64))
    cached = LoadCachedd(keys=["image", "label"], cache_dir=folder)(dict(items[1]))
    direct = preprocessing(label_key="label", spatial_size=32)(
        {"image": items[1]["image"], "label": items[1]["label"]}
    )
    np.testing.assert_allclose(cached["image"], direct["image"], atol=1e-3)  # float16 storage
    np.testing.assert_array_equal(cached["label"], direct["label"])
    assert cached["label"].sum() > 0
    mtime = (folder / "F1.npz").stat().st_mtime_ns
    build_cache(items, out / "cache", spatial_size=32)  # resumes: existing files kept
    assert (folder / "F1.npz").stat().st_mtime_ns == mtime


def _add_annotations(root, image_id: str, polygons: list[list[float]], size: tuple[int, int]) -> None:
    """Append a COCO image (``size`` = width, height) with ``polygons`` to the layout's COCO file."""
    path = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    coco = json.loads(path.read_text())
    ids = [img["id"] for img in coco["images"] if img["file_name"] == f"{image_id}.jpg"]
    if ids:
        image = ids[0]
    else:
        image = max(img["id"] for img in coco["images"]) + 1
        coco["images"].append(
            {"id": image, "width": size[0], "height": size[1], "file_name": f"{image_id}.jpg"}
        )
    for flat in polygons:
        ann = max(a["id"] for a in coco["annotations"]) + 1
        coco["annotations"].append(
            {"id": ann, "image_id": image, "category_id": 0, "iscrowd": 0, "segmentation": [flat]}
        )
    path.write_text(json.dumps(coco))


def test_degenerate_polygons_are_skipped_and_reported(tmp_path) -> None:
    root = make_layout(tmp_path / "FracAtlas")
    # F1 (64x48) gets a 2-vertex "polygon", one with an odd number of coordinates and one of strings.
    _add_annotations(root, "F1", [[1, 1, 9, 9], [1, 1, 9, 1, 9], [None, "x", 1, 2, 3, 4]], (64, 48))
    out = tmp_path / "out"
    report = prepare_fracatlas(root, out)
    saved = json.loads((out / "report.json").read_text())
    assert saved["counts"]["degenerate_polygons"] == 3 == len(report.degenerate_polygons)
    assert [d["image_id"] for d in saved["degenerate_polygons"]] == ["F1"] * 3
    assert "at least 3" in saved["degenerate_polygons"][0]["reason"]
    assert "degenerate, skipped: 3" in report.summary()
    # F1's two valid rectangles are still drawn; every image got its mask.
    assert _mask(out, "F1").sum() == 200 and saved["counts"]["polygons"] == 7
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == [
        "F1",
        "F2",
        "F3",
        "F4",
        "F5",
        "F6",
        "N1",
        "N2",
    ]


def test_a_missing_image_is_counted_once_with_every_reason(tmp_path) -> None:
    root = make_layout(tmp_path / "FracAtlas")
    split = root / "Utilities" / "Fracture Split" / "train.csv"
    split.write_text(split.read_text() + "F9.jpg\n")  # in a split, with polygons, but no image file
    _add_annotations(root, "F9", [[1, 1, 5, 1, 5, 5]], (30, 30))
    report = prepare_fracatlas(root, tmp_path / "out")
    missing = [m for m in report.missing_images if m["image_id"] == "F9"]
    assert len(missing) == 1 and len(report.missing_images) == 1
    assert "split csv" in missing[0]["reason"] and "polygons" in missing[0]["reason"]
    assert report.counts["missing_images"] == 1
    assert "missing images: 1" in report.summary()
