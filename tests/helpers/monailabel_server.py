"""Start the fracseg MONAI Label app the way ``make serve`` does, on a free loopback port, for tests,
benchmarks and the load test: ``python -m monailabel.main start_server`` (what the ``monailabel``
script runs) with ``--uvicorn_app monai_app.asgi:app``, its own datastore and bundle copy."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running app: its URL, folders and log file."""

    url: str
    datastore: Path
    model_dir: Path
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and the task processes it started (its process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # task subprocesses left behind in the group
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(
    work: Path,
    seed_dir: Path | None = REPO / "data" / "samples",
    timeout: float = 180.0,
    env: dict | None = None,
    studies: str | None = None,
    conf: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Run the app under ``work`` (datastore, bundle copy, log) until the block ends.

    Args:
        work: folder for ``datastore/``, ``model/`` and ``server.log``.
        seed_dir: folder the datastore is seeded from (``None``: no seeding).
        timeout: seconds to wait for ``/info/`` to answer.
        env: extra environment variables (e.g. ``MONAI_LABEL_CORS_ORIGINS``).
        studies: ``--studies`` (default: ``work/datastore``), e.g. a DICOMweb URL.
        conf: further ``--conf`` settings of the app.
    """
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    server = Server(
        url=f"http://127.0.0.1:{port}",
        datastore=work / "datastore",
        model_dir=work / "model",
        log=work / "server.log",
        process=None,  # type: ignore[arg-type]
    )
    python_bin = str(Path(sys.executable).parent)
    environment = {
        **os.environ,
        "PATH": python_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"),
        **(env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        str(REPO / "monai_app"),
        "--studies",
        studies or str(server.datastore),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--uvicorn_app",
        "monai_app.asgi:app",
        "--conf",
        "model_dir",
        str(server.model_dir),
        "--conf",
        "seed_dir",
        str(seed_dir) if seed_dir else "",
    ]
    for key, value in (conf or {}).items():
        command += ["--conf", key, value]
    with open(server.log, "wb") as log:
        server.process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {server.process.returncode}:\n{server.log_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{server.url}/info/", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer in {timeout:.0f} s:\n{server.log_text()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(server.process)
