"""The app's DICOMweb datastore against servers that misbehave, without Orthanc: one that accepts
connections and never answers (slow), one that answers garbage, and none at all (down). Each search must
end in bounded time with an error naming the server, the cached images must stay usable, and an image
that is not cached must be refused with 503, not hang."""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tests.helpers.monailabel_server import REPO, free_port

pytestmark = pytest.mark.integration

APP = REPO / "monai_app"
TIMEOUT = (1.0, 1.0)


@pytest.fixture(scope="module")
def datastore_module():
    sys.path.insert(0, str(APP))
    try:
        import lib.dicomweb_datastore

        yield lib.dicomweb_datastore
    finally:
        sys.path.remove(str(APP))


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """Accepts TCP connections on loopback and never sends a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/dicom-web"
    finally:
        sock.close()


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"\x00not json{"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _garbage_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def _no_server() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}/dicom-web"


@pytest.mark.parametrize(
    "server", [_silent_server, _garbage_server, _no_server], ids=["slow", "garbage", "down"]
)
def test_misbehaving_server_gives_a_clear_error_in_bounded_time(datastore_module, server, tmp_path) -> None:
    with server() as url:
        store = datastore_module.DicomwebDatastore(
            url, str(tmp_path / "cache"), timeout=TIMEOUT, auto_reload=False
        )
        start = time.monotonic()
        assert store.sync(force=True) == []
        elapsed = time.monotonic() - start
        assert elapsed < 8, elapsed  # 2 attempts x (1 s connect + 1 s read) + 0.5 s back-off, plus slack
        assert store.last_error and url in store.last_error and "QIDO-RS search failed" in store.last_error
        assert store.list_images() == []  # listing still answers (from the cache), without a new search
        assert store.json()["dicomweb"]["error"] == store.last_error
        with pytest.raises(datastore_module.RequestRejected) as refused:
            store.image_path("1.2.3.4")
        assert refused.value.status_code == 503 and "not cached" in refused.value.detail


class _EmptyQido(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(204)  # QIDO-RS: no match
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_search_is_narrowed_to_the_configured_studies_and_modalities(datastore_module, tmp_path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyQido)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        store = datastore_module.DicomwebDatastore(
            url, str(tmp_path / "cache"), studies=("1.2.3", "4.5.6"), timeout=TIMEOUT, auto_reload=False
        )
        assert store.sync(force=True) == [] and store.last_error is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert sorted(_EmptyQido.paths) == [
        f"/dicom-web/studies/{study}/series?Modality={modality}"
        for study in ("1.2.3", "4.5.6")
        for modality in ("CR", "DX")
    ]
