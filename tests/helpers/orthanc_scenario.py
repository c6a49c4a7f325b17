"""Run inside a fresh network namespace (``unshare --net``): a real Orthanc with DICOMweb on loopback,
``fracseg infer --dicomweb ... --stow`` against it, then what the server holds afterwards.

Usage: ``unshare --net python orthanc_scenario.py WORKDIR SHARED_DATA``. Writes ``WORKDIR/result.json``.
The namespace has only its own loopback, so Orthanc (which binds every interface) is reachable from
nothing outside it; Orthanc's DICOM port is disabled. Orthanc is stopped however the scenario ends.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.helpers.dicom_factory import make_dataset  # noqa: E402

PORT = 8042
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _http(method: str, path: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def _interfaces() -> list[str]:
    """Network interfaces of this namespace (``ip`` asks the kernel; /sys may show the host's)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip())


def _upload(work: Path, shared: Path, files: Sequence[Path] = ()) -> dict[str, str]:
    """Two CRs (one has no file meta, so re-save it), a DX and a CT that the default filter must skip;
    ``files`` replace the two CRs. Each file sent is kept as ``work/upload*.dcm``; returns SOP -> modality."""
    sent = {}
    files = files or [
        REPO / "data" / "samples" / "IMG0003766_CR.dcm",
        shared / "dicom" / "CR-MONO1-10-chest.dcm",
    ]
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path, force=True)
        if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = work / f"upload{i}.dcm"
        ds.save_as(out, write_like_original=False)
        sent[ds.SOPInstanceUID] = ds.Modality
    rng = np.random.default_rng(0)
    for modality, sop_class, sop in (
        ("DX", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.826.0.1.3680043.8.498.77.1"),
        ("CT", CT_STORAGE, "1.2.826.0.1.3680043.8.498.77.2"),
    ):
        ds = make_dataset(
            rng.integers(0, 4000, (96, 80), dtype=np.uint16), modality=modality, sop_class=sop_class
        )
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SeriesInstanceUID = sop + ".0"
        out = work / f"upload_{modality}.dcm"
        ds.save_as(out, write_like_original=False)
        sent[sop] = modality
    for path in sorted(work.glob("upload*.dcm")):
        _http("POST", "/instances", path.read_bytes())
    return sent


@contextlib.contextmanager
def running_orthanc(work: Path) -> Iterator[subprocess.Popen]:
    """Orthanc with DICOMweb on port 8042 (storage in ``work/orthanc-db``, log ``work/orthanc.log``) until
    the block ends; stopped however it ends. Run it inside ``unshare --net`` (it binds every interface).
    Entering it again with the same ``work`` restarts the server on the same storage."""
    storage = work / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "fracseg-test",
        "HttpPort": PORT,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("a")
    server = subprocess.Popen(
        [shutil.which("Orthanc") or "Orthanc", str(work / "orthanc.json")], stdout=log, stderr=log
    )
    try:
        for _ in range(100):
            try:
                _http("GET", "/system")
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("Orthanc did not start: see orthanc.log")
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def main(work: Path, shared: Path) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result: dict = {"interfaces": _interfaces()}
    with running_orthanc(work):
        result["sent"] = _upload(work, shared)
        url = f"http://127.0.0.1:{PORT}/dicom-web"
        out = work / "out"
        cmd = [
            sys.executable,
            "-m",
            "fracseg",
            "infer",
            "--dicomweb",
            url,
            "--stow",
            "-o",
            str(out),
            "--quiet",
        ]
        first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
        result["first"] = {"code": first.returncode, "stdout": first.stdout, "stderr": first.stderr[-3000:]}
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
        result["second"] = {
            "code": second.returncode,
            "stdout": second.stdout,
            "stderr": second.stderr[-3000:],
        }
        # The same query through Ray workers, SEGs written but not sent: the test compares the answers.
        ray_cmd = [*cmd[:6], "-o", str(work / "out_ray"), "--quiet", "--dicom-seg", "--ray", "--workers", "2"]
        ray = subprocess.run(ray_cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
        result["ray"] = {"code": ray.returncode, "stdout": ray.stdout, "stderr": ray.stderr[-3000:]}
        series = json.loads(_http("GET", "/dicom-web/series?Modality=SEG"))
        result["seg_series_on_server"] = len(series)
        segs = []
        for s in series:
            study = s["0020000D"]["Value"][0]
            uid = s["0020000E"]["Value"][0]
            for inst in json.loads(_http("GET", f"/dicom-web/studies/{study}/series/{uid}/instances")):
                sop = inst["00080018"]["Value"][0]
                meta = json.loads(
                    _http("GET", f"/dicom-web/studies/{study}/series/{uid}/instances/{sop}/metadata")
                )
                ref = meta[0]["00081115"]["Value"][0]["0008114A"]["Value"][0]["00081155"]["Value"][0]
                segs.append({"study": study, "sop": sop, "references": ref})
        result["segs_on_server"] = segs
        srs = []
        for s in json.loads(_http("GET", "/dicom-web/series?Modality=SR")):
            study, uid = s["0020000D"]["Value"][0], s["0020000E"]["Value"][0]
            for inst in json.loads(_http("GET", f"/dicom-web/studies/{study}/series/{uid}/instances")):
                sop = inst["00080018"]["Value"][0]
                path = f"/dicom-web/studies/{study}/series/{uid}/instances/{sop}/metadata"
                meta = json.loads(_http("GET", path))[0]
                evidence = [
                    item["00081155"]["Value"][0]
                    for key in ("0040A375", "0040A385")  # current requested / pertinent other evidence
                    for study_item in meta.get(key, {}).get("Value", [])
                    for series_item in study_item["00081115"]["Value"]
                    for item in series_item["00081199"]["Value"]
                ]
                srs.append({"study": study, "sop": sop, "evidence": evidence})
        result["srs_on_server"] = srs
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
