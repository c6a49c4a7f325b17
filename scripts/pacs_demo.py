"""The PACS in the loop on one workstation: Orthanc (DICOMweb) with the sample CR/DX and the MONAI Label
app started against it, nothing fetched from the internet. ``make pacs-demo`` runs it.

Orthanc binds every interface, so it runs inside a private network namespace (``unshare --net``) with the
app; only the app is brought out, on ``127.0.0.1:PORT`` of this machine, through a relay over a UNIX
socket (a UNIX socket is a file, so it crosses namespaces; nothing else does). Ctrl+C (or SIGTERM) stops
the relay, the app and Orthanc. Orthanc's configuration is ``deploy/orthanc/orthanc.json``; its storage
and the app's cache live under ``--work``. Sample images: FracAtlas, CC BY 4.0 (Abedeen et al. 2023).

Before the app starts, ``fracseg infer --dicomweb ... --stow`` segments the samples in Orthanc and stores
each result back in the image's study: the DICOM SEG (series "fracseg fracture mask") and the SR of the
findings (series "fracseg fracture findings"; output and log under ``--work``/infer). With ``--ohif DIST``
(``make ohif`` installs it; ``make pacs-demo`` passes it when present), OHIF (``scripts/ohif_server.py``,
DICOMweb forwarded to the same Orthanc) is brought out the same way on ``127.0.0.1:OHIF_PORT``: the sample
CR's SEG and SR, and the SEGs saved from the app, can be viewed there over their CR/DX.

Usage: ``python scripts/pacs_demo.py [--port 8000] [--work outputs/pacs-demo] [--ohif DIST]
[--ohif-port 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deploy" / "orthanc" / "orthanc.json"
SAMPLES = REPO / "data" / "samples"
ORTHANC_PORT = 8042
APP_PORT = 8000  # inside the namespace
OHIF_PORT = 3000  # inside the namespace
logger = logging.getLogger("pacs_demo")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _relay(listen: dict, connect: dict) -> None:
    """Forward every connection accepted on ``listen`` to ``connect`` (``asyncio`` server/connection args)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if "path" in connect:
                up_reader, up_writer = await asyncio.open_unix_connection(**connect)
            else:
                up_reader, up_writer = await asyncio.open_connection(**connect)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    if "path" in listen:
        server = await asyncio.start_unix_server(handle, **listen)
    else:
        server = await asyncio.start_server(handle, **listen)
    async with server:
        await server.serve_forever()


def _wait(url: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _upload_samples() -> int:
    count = 0
    for path in sorted(SAMPLES.glob("*.dcm")):
        request = urllib.request.Request(
            f"http://127.0.0.1:{ORTHANC_PORT}/instances", data=path.read_bytes(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30):
            count += 1
    return count


def _segment_samples(work: Path) -> int:
    """``fracseg infer --dicomweb --stow`` over the samples in Orthanc (CR/DX): each gets its SEG and SR
    in its own study. Returns the exit code; the demo goes on either way (see ``infer/infer.log``)."""
    out = work / "infer"
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "fracseg", "infer", "--quiet", "--output", str(out)]
    command += ["--dicomweb", f"http://127.0.0.1:{ORTHANC_PORT}/dicom-web", "--stow"]
    with open(out / "infer.log", "ab") as log:
        code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        logger.warning("fracseg infer --stow failed (exit %d): see %s", code, out / "infer.log")
    else:
        logger.info("fracseg's SEG and SR of the samples stored in Orthanc (%s)", out / "infer.log")
    return code


async def _relays(pairs: list[tuple[dict, dict]]) -> None:
    await asyncio.gather(*(_relay(listen, connect) for listen, connect in pairs))


def inside(work: Path, socket_path: Path, ohif: Path | None) -> int:
    """In the namespace: Orthanc, the samples, the app (and OHIF), and the relays from the UNIX sockets."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    storage = work / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    config = json.loads(CONFIG.read_text())
    config["StorageDirectory"] = config["IndexDirectory"] = str(storage)
    (work / "orthanc.json").write_text(json.dumps(config, indent=1))
    started: list[subprocess.Popen] = []
    try:
        with open(work / "orthanc.log", "ab") as log:
            orthanc = subprocess.Popen(
                ["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=log, start_new_session=True
            )
        started.append(orthanc)
        _wait(f"http://127.0.0.1:{ORTHANC_PORT}/system", 30, orthanc)
        logger.info("Orthanc up (loopback of the namespace); %d sample DICOM(s) stored", _upload_samples())
        _segment_samples(work)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "monai_app")]
        command += ["--studies", f"http://127.0.0.1:{ORTHANC_PORT}/dicom-web", "--host", "127.0.0.1"]
        command += ["--port", str(APP_PORT), "--uvicorn_app", "monai_app.asgi:app"]
        command += [
            "--conf",
            "model_dir",
            str(work / "model"),
            "--conf",
            "dicomweb_cache",
            str(work / "cache"),
        ]
        with open(work / "app.log", "ab") as log:
            app = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append(app)
        _wait(f"http://127.0.0.1:{APP_PORT}/info/", 300, app)
        pairs = [({"path": str(socket_path)}, {"host": "127.0.0.1", "port": APP_PORT})]
        if ohif is not None:
            command = [sys.executable, str(REPO / "scripts" / "ohif_server.py"), str(ohif)]
            command += ["--port", str(OHIF_PORT), "--orthanc", f"http://127.0.0.1:{ORTHANC_PORT}"]
            with open(work / "ohif.log", "ab") as log:
                started.append(subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True))
            _wait(f"http://127.0.0.1:{OHIF_PORT}/app-config.js", 30, started[-1])
            ohif_socket = socket_path.with_name("ohif.sock")
            ohif_socket.unlink(missing_ok=True)
            pairs.append(({"path": str(ohif_socket)}, {"host": "127.0.0.1", "port": OHIF_PORT}))
        socket_path.unlink(missing_ok=True)
        asyncio.run(_relays(pairs))
    finally:
        for process in reversed(started):
            _stop(process)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="port of the app on 127.0.0.1")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "pacs-demo")
    parser.add_argument("--ohif", type=Path, help="OHIF's dist/ folder (make ohif); also serve OHIF")
    parser.add_argument("--ohif-port", type=int, default=3000, help="port of OHIF on 127.0.0.1")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    socket_path = work / "app.sock"
    if args.inside:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        return inside(work, socket_path, args.ohif.resolve() if args.ohif else None)
    if args.ohif is not None and not (args.ohif / "index.html").is_file():
        parser.error(f"{args.ohif}: no index.html (run `make ohif`)")
    socket_path.unlink(missing_ok=True)
    ohif_socket = socket_path.with_name("ohif.sock")
    ohif_socket.unlink(missing_ok=True)
    command = ["unshare", "--net", sys.executable, __file__, "--inside", "--work", str(work)]
    if args.ohif is not None:
        command += ["--ohif", str(args.ohif.resolve())]
    namespace = subprocess.Popen(command, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        deadline = time.monotonic() + 330
        while not socket_path.exists():
            if namespace.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the namespace did not start (exit {namespace.poll()}): see {work}/*.log")
            time.sleep(0.3)
        pairs = [({"host": "127.0.0.1", "port": args.port}, {"path": str(socket_path)})]
        if args.ohif is not None:
            pairs.append(({"host": "127.0.0.1", "port": args.ohif_port}, {"path": str(ohif_socket)}))
            logger.info("OHIF: http://127.0.0.1:%d", args.ohif_port)
        logger.info(
            "app: http://127.0.0.1:%d (correction page /fracseg/); Ctrl+C stops everything", args.port
        )
        asyncio.run(_relays(pairs))
    except KeyboardInterrupt:
        pass
    finally:
        _stop(namespace)
        socket_path.unlink(missing_ok=True)
        ohif_socket.unlink(missing_ok=True)
        logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
