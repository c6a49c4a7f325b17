"""Serve a prebuilt OHIF viewer (``@ohif/app``'s ``dist/``) with fracseg's configuration on loopback, and
forward ``/dicom-web/`` to a local Orthanc on the same origin (so the browser needs no CORS).

Usage: ``python scripts/ohif_server.py DIST --orthanc http://127.0.0.1:8042 [--port 3000]``.
``DIST`` comes from ``npm pack @ohif/app@VERSION`` (never committed); ``app-config.js`` is replaced by
``deploy/ohif/app-config.js``. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import mimetypes
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deploy" / "ohif" / "app-config.js"
FORWARDED = ("/dicom-web/", "/wado")
logger = logging.getLogger("ohif_server")


def make_handler(dist: Path, orthanc: str) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler serving ``dist`` (single-page app: unknown paths get ``index.html``) and
    forwarding DICOMweb requests to ``orthanc``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type")}
            request = urllib.request.Request(orthanc + self.path, headers=headers, method="GET")
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    body, code = response.read(), response.status
                    content_type = response.headers.get("Content-Type", "application/octet-stream")
            except urllib.error.HTTPError as exc:
                body, code = exc.read(), exc.code
                content_type = exc.headers.get("Content-Type", "text/plain")
            except OSError as exc:
                body, code, content_type = f"Orthanc unreachable: {exc}".encode(), 502, "text/plain"
            self._send(code, body, content_type)

        def do_GET(self) -> None:
            if self.path.startswith(FORWARDED):
                self._forward()
                return
            path = self.path.split("?", 1)[0].lstrip("/")
            if path == "app-config.js":
                self._send(200, CONFIG.read_bytes(), "application/javascript")
                return
            target = (dist / path).resolve()
            if not path or not target.is_relative_to(dist) or not target.is_file():
                target = dist / "index.html"
            content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if target.suffix == ".wasm":
                content_type = "application/wasm"
            self._send(200, target.read_bytes(), content_type)

        def log_message(self, fmt: str, *args: object) -> None:
            logger.debug(fmt, *args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", type=Path, help="OHIF's dist/ folder (from npm pack @ohif/app)")
    parser.add_argument("--orthanc", default="http://127.0.0.1:8042")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dist = args.dist.resolve()
    if not (dist / "index.html").is_file():
        parser.error(f"{dist}: no index.html (expected @ohif/app's dist/ folder)")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", args.port), make_handler(dist, args.orthanc.rstrip("/"))
    )
    logger.info("OHIF on http://127.0.0.1:%d, DICOMweb forwarded to %s", args.port, args.orthanc)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
