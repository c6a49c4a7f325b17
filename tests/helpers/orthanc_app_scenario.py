"""Run inside a fresh network namespace (``unshare --net``): Orthanc with DICOMweb on loopback, the
MONAI Label app started against it (``--studies http://127.0.0.1:8042/dicom-web``), then what the app
answers and what the server holds.

Usage: ``unshare --net python orthanc_app_scenario.py WORKDIR SHARED_DATA``. Writes ``WORKDIR/result.json``,
the masks the app returned (``WORKDIR/masks/<sop>.*``), the labels sent (``WORKDIR/labels/<sop>.*``) and
the SEGs found on the server (``WORKDIR/segs/<referenced sop>.dcm``). Steps:

1. upload four CRs (MONOCHROME1, JPEG lossless, JPEG 2000, one without file meta), a DX and a CT;
2. start the app against the server; list the datastore; ``fracture`` inference on every image;
3. save a final label the way 3D Slicer does (``.nii.gz``) and the way the page does (``.png``);
4. stop Orthanc: save another label (kept locally, 502), list the datastore, infer an uncached id;
5. start Orthanc again: the next listing retries the STOW; the training datalist and the correction
   page's image endpoint; collect the SEGs on the server.

Everything started here (Orthanc, the app and its task processes) is stopped however the scenario ends.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import requests
import SimpleITK as sitk  # noqa: N813
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.helpers.dicom_factory import JPEG_2000, make_lossy_cr  # noqa: E402
from tests.helpers.monailabel_server import running_server  # noqa: E402
from tests.helpers.orthanc_scenario import PORT, _http, _interfaces, _upload, running_orthanc  # noqa: E402

URL = f"http://127.0.0.1:{PORT}/dicom-web"


def _put_label(app: str, image: str, path: Path) -> dict:
    start = time.monotonic()
    with open(path, "rb") as fh:
        reply = requests.put(
            f"{app}/datastore/label",
            params={"image": image, "tag": "final"},
            files={"label": (path.name, fh)},
            timeout=120,
        )
    return {"code": reply.status_code, "body": reply.text[-2000:], "seconds": time.monotonic() - start}


def _label_files(work: Path, image: str, shape: tuple[int, int], rng: np.random.Generator) -> dict[str, Path]:
    """A rectangle mask as Slicer's ``.nii.gz`` (ITK size (W, H, 1)) and as the page's 0/255 PNG."""
    mask = np.zeros(shape, dtype=np.uint8)
    r, c = int(rng.integers(0, shape[0] // 2)), int(rng.integers(0, shape[1] // 2))
    mask[r : r + shape[0] // 4, c : c + shape[1] // 3] = 1
    folder = work / "labels"
    folder.mkdir(exist_ok=True)
    nii, png = folder / f"{image}.nii.gz", folder / f"{image}.png"
    sitk.WriteImage(sitk.GetImageFromArray(mask[None]), str(nii), True)
    Image.fromarray(mask * 255).save(png)
    return {"nii": nii, "png": png}


def _upload_jpeg2000(work: Path) -> dict[str, str]:
    """A CR stored as irreversible JPEG 2000 (a FracAtlas sample's pixels), as lossy archives hold them."""
    from fracseg.io import read_xray

    pixels = (read_xray(REPO / "data" / "samples" / "IMG0004068.jpg").array * 255).round().astype(np.uint8)
    ds = make_lossy_cr(pixels, JPEG_2000, method="ISO_15444_1")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77.3"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77.3.0"
    path = work / "upload_J2K.dcm"
    ds.save_as(path, write_like_original=False)
    _http("POST", "/instances", path.read_bytes())
    return {ds.SOPInstanceUID: "CR"}


def _segs_on_server(work: Path) -> list[dict]:
    folder = work / "segs"
    folder.mkdir(exist_ok=True)
    segs = []
    for series in json.loads(_http("GET", "/dicom-web/series?Modality=SEG")):
        study = series["0020000D"]["Value"][0]
        uid = series["0020000E"]["Value"][0]
        for inst in json.loads(_http("GET", f"/dicom-web/studies/{study}/series/{uid}/instances")):
            sop = inst["00080018"]["Value"][0]
            orthanc_id = json.loads(_http("POST", "/tools/lookup", sop.encode()))[0]["ID"]
            data = _http("GET", f"/instances/{orthanc_id}/file")
            ds = pydicom.dcmread(io.BytesIO(data))
            ref = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
            (folder / f"{ref}.dcm").write_bytes(data)
            segs.append({"study": study, "series": uid, "sop": sop, "references": ref})
    return segs


def main(work: Path, shared: Path) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result: dict = {"interfaces": _interfaces()}
    files = [
        REPO / "data" / "samples" / "IMG0003766_CR.dcm",
        shared / "dicom" / "CR-ModalitySequenceLUT.dcm",
        shared / "dicom" / "CR-MONO1-10-chest.dcm",
    ]
    rng = np.random.default_rng(0)
    orthanc = running_orthanc(work)
    orthanc.__enter__()
    try:
        result["sent"] = _upload(work, shared, files)
        result["sent"].update(_upload_jpeg2000(work))
        conf = {"dicomweb_cache": str(work / "cache"), "dicomweb_timeout": "10"}
        with running_server(work / "app", seed_dir=None, studies=URL, conf=conf) as app:
            objects = requests.get(f"{app.url}/datastore/", params={"output": "all"}, timeout=60).json()
            result["listed"] = sorted(objects["objects"])
            result["dicomweb"] = objects["dicomweb"]
            masks = work / "masks"
            masks.mkdir()
            result["infer"] = {}
            for image in result["listed"]:
                reply = requests.post(
                    f"{app.url}/infer/fracture", params={"image": image, "output": "image"}, timeout=300
                )
                result["infer"][image] = reply.status_code
                data = reply.content
                (masks / (image + (".nii.gz" if data[:2] == b"\x1f\x8b" else ".png"))).write_bytes(data)

            sizes = {
                k: (v["image"]["info"]["height"], v["image"]["info"]["width"])
                for k, v in objects["objects"].items()
            }
            cr = [k for k in result["listed"] if result["sent"][k] == "CR"]
            dx = [k for k in result["listed"] if result["sent"][k] == "DX"]
            saved = {cr[0]: "nii", dx[0]: "png"}  # Slicer's upload on a CR, the page's on the DX
            result["save"] = {}
            for image, kind in saved.items():
                label = _label_files(work, image, sizes[image], rng)[kind]
                result["save"][image] = {"kind": kind, **_put_label(app.url, image, label)}

            # the server goes down: the label is kept, the error is clear and quick
            orthanc.__exit__(None, None, None)
            orthanc = None
            down = cr[1]
            label = _label_files(work, down, sizes[down], rng)["nii"]
            result["save_down"] = {"image": down, **_put_label(app.url, down, label)}
            start = time.monotonic()
            listing = requests.get(f"{app.url}/datastore/", params={"output": "all"}, timeout=120)
            result["list_down"] = {
                "code": listing.status_code,
                "seconds": time.monotonic() - start,
                "dicomweb": listing.json().get("dicomweb"),
                "stow": listing.json()["objects"][down]["labels"]["final"]["info"].get("stow"),
            }
            start = time.monotonic()
            unknown = requests.post(
                f"{app.url}/infer/fracture", params={"image": "1.2.3.4", "output": "image"}, timeout=120
            )
            result["infer_down"] = {
                "code": unknown.status_code,
                "body": unknown.text[-1000:],
                "seconds": time.monotonic() - start,
            }

            # the server comes back: the next listing (after the retry interval) stores the SEG
            orthanc = running_orthanc(work)
            orthanc.__enter__()
            time.sleep(6)
            listing = requests.get(f"{app.url}/datastore/", params={"output": "all"}, timeout=120).json()
            result["list_back"] = {
                "dicomweb": listing.get("dicomweb"),
                "labels": {
                    k: v["labels"].get("final", {}).get("info") for k, v in listing["objects"].items()
                },
            }
            train = requests.get(f"{app.url}/datastore/", params={"output": "train"}, timeout=120).json()
            result["train_datalist"] = sorted(Path(item["image"]).name for item in train)
            page = requests.get(f"{app.url}/fracseg/api/image.png", params={"image": cr[0]}, timeout=60)
            result["page_image"] = {"code": page.status_code, "type": page.headers.get("content-type")}
            (work / "page_image.png").write_bytes(page.content)
            result["local_labels"] = sorted(p.name for p in (work / "cache" / "labels" / "final").glob("*"))
        result["segs_on_server"] = _segs_on_server(work)
        shutil.copy(work / "app" / "server.log", work / "server.log")
    finally:
        if orthanc is not None:
            orthanc.__exit__(None, None, None)
        (work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
