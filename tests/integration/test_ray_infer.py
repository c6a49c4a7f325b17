"""``fracseg infer --ray``: a local 2-worker Ray gives the single-process answers, and loses nothing when a
worker is killed mid-run.

The generated folder holds 16 FracAtlas images re-encoded at other sizes and formats (PNG and JPEG, two
sub-folders) plus one corrupt file; it runs with ``--no-mirror`` (one network pass per image) under the
private local Ray that ``--ray`` starts (loopback only, checked while it runs), a worker killed mid-run.
The sample folder (JPEG and DICOM) runs with the shipped settings on a Ray cluster started beforehand.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracseg.cli import main
from fracseg.inference.records import RECORDS_DIR
from fracseg.io.atomic import is_temporary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
FAST = ["--no-mirror"]
#: What may differ between two runs of the same image: the time it took.
VOLATILE = {"seconds"}
#: Images in the generated folder (half fractured), besides its one corrupt file.
GENERATED = 16


def _rows(output: Path) -> dict[str, dict[str, str]]:
    with (output / "predictions.csv").open(newline="") as f:
        return {r["image"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)}


def _assert_same_outputs(a: Path, b: Path) -> None:
    rows_a, rows_b = _rows(a), _rows(b)
    assert rows_a == rows_b
    for row in rows_a.values():
        if row["error"]:
            continue
        for suffix in ("_mask.png", "_overlay.png"):
            name = row["mask"].removesuffix("_mask.png") + suffix
            assert np.array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name))), name


def _temporaries(output: Path) -> list[Path]:
    return [p for p in output.rglob("*") if is_temporary(p.name)]


@pytest.fixture(scope="module")
def generated(shared_data, tmp_path_factory) -> Path:
    """16 re-encoded FracAtlas images in two sub-folders, and one truncated file."""
    root = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(7)
    sources = sorted((shared_data / "fracatlas" / "images" / "Fractured").glob("*.jpg"))[: GENERATED // 2]
    sources += sorted((shared_data / "fracatlas" / "images" / "Non_fractured").glob("*.jpg"))[
        : GENERATED // 2
    ]
    for i, src in enumerate(sources):
        image = Image.open(src).convert("L")
        scale = float(rng.uniform(0.6, 1.2))
        image = image.resize((max(32, int(image.width * scale)), max(32, int(image.height * scale))))
        folder = root / ("png" if i % 2 else "jpeg")
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{src.stem}.{'png' if i % 2 else 'jpg'}")
    good = (root / "jpeg" / f"{sources[0].stem}.jpg").read_bytes()
    (root / "jpeg" / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    return root


def _infer_here(inputs: list[Path], output: Path, *extra: str) -> int:
    """``fracseg infer`` without Ray, in this process: the console script's ``main``, without paying for a
    fresh interpreter's torch/monai imports."""
    return main(["infer", *map(str, inputs), "-o", str(output), "--quiet", *extra])


@pytest.fixture(scope="module")
def single_process(generated, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    assert _infer_here([generated], out, *FAST) == 1  # the corrupt file, and only it
    return out


@pytest.fixture(scope="module")
def plain_samples(tmp_path_factory) -> Path:
    """The samples (JPEG and DICOM) in one process with the shipped settings (mirror, fp32)."""
    out = tmp_path_factory.mktemp("plain")
    assert _infer_here([SAMPLES], out) == 0
    return out


def _ray_processes() -> dict[int, str]:
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(("ray::", "raylet", "gcs_server")) or "/ray/core/src/ray/" in cmdline:
                found[int(proc.name)] = cmdline
    return found


def _listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets that ``pids`` listen on (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)]


def test_killed_worker_loses_nothing_and_resume_completes_the_rest(
    generated, single_process, tmp_path
) -> None:
    """The private Ray gives the single-process answers even with a worker killed mid-run. (A separate run
    of the samples under the private Ray was merged into this test and test_ray_cluster_by_address: the
    samples with the shipped settings run there under Ray, the private instance runs here; each run costs
    three interpreters' torch/monai imports.)"""
    out = tmp_path / "ray"
    before = set(_ray_processes())
    cmd = [sys.executable, "-m", "fracseg", "infer", str(generated), "-o", str(out), "--quiet", *FAST]
    run = subprocess.Popen(
        [*cmd, "--ray", "--workers", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None
    addresses: list[str] = []
    deadline = time.monotonic() + 600
    try:
        while run.poll() is None and time.monotonic() < deadline:
            workers = {p: c for p, c in _ray_processes().items() if p not in before}
            records = list((out / RECORDS_DIR).rglob("*.json")) if (out / RECORDS_DIR).exists() else []
            if killed is None and len(records) >= 3:
                addresses = _listening_addresses(set(workers))
                killed = next(p for p, c in workers.items() if c.startswith("ray::InferenceWorker"))
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)  # each poll reads every /proc/<pid>/cmdline: not a busy loop on 2 cores
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert killed is not None, "the run ended before a worker could be killed"
    assert run.returncode == 1, stderr[-3000:]  # the corrupt file
    assert "Ray: 2 worker(s)" in stderr and "Ray worker died" in stderr
    # Ray's own servers listened on loopback only.
    assert addresses and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addresses), (
        addresses
    )

    # Every image answered once, as in one process (the same rows, masks and overlays, the same error);
    # nothing half-written is left behind.
    _assert_same_outputs(single_process, out)
    rows = _rows(out)
    assert len(rows) == GENERATED + 1
    assert [r["image"] for r in rows.values() if r["error"]] == [str(generated / "jpeg" / "corrupt.jpg")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == GENERATED + 1 and summary["failed"] == 1
    assert _temporaries(out) == []
    assert len(list((out / RECORDS_DIR).rglob("*.json"))) == GENERATED
    assert len(list(out.rglob("*_mask.png"))) == GENERATED

    # Resume: lose three images' results; the rerun redoes those three only.
    lost = sorted((out / RECORDS_DIR).rglob("*.json"))[:3]
    for record in lost:
        record.unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / RECORDS_DIR).rglob("*.json")}
    rerun = subprocess.run(
        [*cmd, "--ray", "--workers", "2"], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert rerun.returncode == 1, rerun.stderr[-3000:]
    assert f"{GENERATED - 3} of {GENERATED + 1} inputs already done" in rerun.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert all(p.exists() for p in lost)
    _assert_same_outputs(single_process, out)
    for _ in range(100):  # the private Ray stops with the run (its processes take a moment to exit)
        if not {p for p in _ray_processes() if p not in before}:
            break
        time.sleep(0.1)
    assert not {p for p in _ray_processes() if p not in before}


def test_ray_cluster_by_address(plain_samples, tmp_path) -> None:
    """``ray start --head`` (in a private network namespace: loopback only), then ``--ray ADDRESS``: the run
    joins that cluster instead of starting its own, with the single-process answers; ``ray stop`` after.
    It runs the samples (JPEG and DICOM, shipped settings: mirror, fp32): the generated inputs, sub-folders
    and the corrupt file are the killed-worker test's, under the private Ray."""
    ray_cli = Path(sys.executable).parent / "ray"
    out = tmp_path / "cluster"
    infer = [sys.executable, "-m", "fracseg", "infer", str(SAMPLES), "-o", str(out), "--quiet"]
    script = " && ".join(
        [
            "ip link set lo up",
            f"{ray_cli} start --head --port 6379 --num-cpus 2 --include-dashboard false "
            "--disable-usage-stats",
            f"({' '.join(infer)} --ray 127.0.0.1:6379 --workers 2; echo infer-exit=$? >&2)",
            f"{ray_cli} stop --force",
        ]
    )
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "infer-exit=0" in proc.stderr, proc.stderr[-3000:]
    assert "Ray: 2 worker(s)" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr  # it joined the running cluster
    _assert_same_outputs(plain_samples, out)
    assert len(_rows(out)) == 5
