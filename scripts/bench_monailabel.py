"""MONAI Label app speed: ``/infer`` round trips, and a bounded loopback load test.

Starts the app as ``make serve`` does (on a free 127.0.0.1 port, a temporary datastore seeded with
``data/samples``, plus the 1576x1976 JPEG-lossless CR DICOM of the shared data uploaded through the API)
and measures, one request at a time:

- ``fracture`` on a 454x373 JPEG and on the CR DICOM (stored as NIfTI), ``fracture_interactive`` on the
  JPEG with 3 points: round trip of ``POST /infer/{model}?output=image`` (request to the last byte of
  the mask), p50 and p95;
- the baseline, measured in the same run: the same file through ``fracseg``'s :class:`Predictor` in
  this process (what ``fracseg infer`` does per image, without HTTP and MONAI Label).

Then the load test: ``--clients`` threads for ``--seconds`` seconds, each sending ``fracture`` and
``fracture_interactive`` (1-3 random points) requests on the JPEG samples back to back; every
non-200 answer counts as an error. Prints tables and exits 1 on any error.

    taskset -c 1 python scripts/bench_monailabel.py [--repeats 20] [--clients 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fracseg.inference import Predictor  # noqa: E402
from fracseg.precision import cpu_description  # noqa: E402
from tests.helpers.monailabel_server import running_server  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
JPEG = "IMG0000288"  # 454x373
DICOM = "CR-ModalitySequenceLUT"  # 1576x1976, JPEG lossless


def percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def infer(url: str, model: str, image: str, params: dict | None = None) -> requests.Response:
    return requests.post(
        f"{url}/infer/{model}",
        params={"image": image, "output": "image"},
        data={"params": json.dumps(params or {})},
        timeout=600,
    )


def round_trips(url: str, model: str, image: str, params: dict | None, repeats: int) -> list[float]:
    for _ in range(2):  # warm-up: network loaded, caches filled
        infer(url, model, image, params).raise_for_status()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = infer(url, model, image, params)
        response.raise_for_status()
        times.append(time.perf_counter() - start)
    return times


def baseline(predictor: Predictor, path: Path, repeats: int) -> list[float]:
    predictor.predict(path)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(path)
        times.append(time.perf_counter() - start)
    return times


def load_test(url: str, images: list[str], sizes: dict[str, tuple[int, int]], clients: int, seconds: float):
    """(latencies, errors, requests) of ``clients`` threads sending mixed requests for ``seconds``."""
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            image = rng.choice(images)
            height, width = sizes[image]
            if rng.random() < 0.5:
                model, params = "fracture", {}
            else:
                points = [[rng.randrange(width), rng.randrange(height), 0] for _ in range(rng.randint(1, 3))]
                model, params = "fracture_interactive", {"foreground": points[:-1], "background": points[-1:]}
            start = time.perf_counter()
            try:
                response = infer(url, model, image, params)
                ok, detail = response.status_code == 200, f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                ok, detail = False, repr(exc)
            with lock:
                latencies.append(time.perf_counter() - start)
                if not ok:
                    errors.append(f"{model} {image}: {detail}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def wait_for_scoring(url: str, timeout: float = 600.0) -> None:
    """Wait until the start-up scoring task (a separate process) has finished, so it does not share the
    CPU with the measurements."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/scoring/", timeout=60)
        if status.status_code == 200 and status.json().get("status") in ("DONE", "ERROR", "STOPPED"):
            return
        time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args()

    torch.set_num_threads(1)
    print(f"CPU: {cpu_description()}; torch threads per process: 1 (server and this process)")
    with tempfile.TemporaryDirectory() as work, running_server(Path(work)) as server:
        dicom = args.shared / "dicom" / f"{DICOM}.dcm"
        with open(dicom, "rb") as fh:
            requests.put(
                f"{server.url}/datastore/image",
                params={"image": DICOM},
                files={"file": (dicom.name, fh)},
                timeout=600,
            ).raise_for_status()
        objects = requests.get(f"{server.url}/datastore/?output=all", timeout=60).json()["objects"]
        info = {k: v["image"]["info"] for k, v in objects.items()}
        sizes = {k: (int(v["height"]), int(v["width"])) for k, v in info.items()}
        wait_for_scoring(server.url)
        predictor = Predictor(weights=server.model_dir / "models" / "model.pt", bundle=server.model_dir)

        height, width = sizes[JPEG]
        three = {"foreground": [[width // 2, height // 2, 0], [width // 3, height // 3, 0]]}
        three["background"] = [[width // 4, 2 * height // 3, 0]]
        cases = [
            ("fracture, 454x373 JPEG", "fracture", JPEG, None, ROOT / "data" / "samples" / f"{JPEG}.jpg"),
            ("fracture, 1576x1976 CR DICOM", "fracture", DICOM, None, dicom),
            ("fracture_interactive, JPEG, 3 points", "fracture_interactive", JPEG, three, None),
        ]
        print(f"\n/infer round trips, {args.repeats} sequential requests each (after 2 warm-up requests)")
        print(f"{'case':<40} {'p50 s':>7} {'p95 s':>7} {'baseline p50 s':>15} {'ratio':>6}")
        for name, model, image, params, source in cases:
            p50, p95 = percentiles(round_trips(server.url, model, image, params, args.repeats))
            if source is not None:
                base = statistics.median(baseline(predictor, source, args.repeats))
                print(f"{name:<40} {p50:>7.3f} {p95:>7.3f} {base:>15.3f} {p50 / base:>6.2f}")
            else:
                print(f"{name:<40} {p50:>7.3f} {p95:>7.3f} {'':>15} {'':>6}")
        print(
            "baseline: fracseg Predictor.predict on the original file in this process (fracseg infer's path)"
        )

        jpegs = [k for k, v in info.items() if v["name"].endswith(".jpg")]
        latencies, errors = load_test(server.url, jpegs, sizes, args.clients, args.seconds)
        p50, p95 = percentiles(latencies)
        print(f"\nload test: {args.clients} clients, {args.seconds:.0f} s, fracture and fracture_interactive")
        print(f"{'requests':>9} {'errors':>7} {'req/s':>7} {'p50 s':>7} {'p95 s':>7}")
        rate = len(latencies) / args.seconds
        print(f"{len(latencies):>9} {len(errors):>7} {rate:>7.2f} {p50:>7.3f} {p95:>7.3f}")
        for error in errors[:10]:
            print("ERROR", error)
        alive = requests.get(f"{server.url}/info/", timeout=60).status_code == 200
        print(f"server still answering /info/ after the load test: {alive}")
    return 1 if errors or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
