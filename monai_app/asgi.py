"""The ASGI app ``make serve`` runs: MONAI Label's FastAPI app with safer defaults.

``monailabel start_server --uvicorn_app monai_app.asgi:app`` serves this object. MONAI Label's own
defaults are open: CORS allows every origin (with credentials) unless ``MONAI_LABEL_CORS_ORIGINS`` is
set. Here, without that setting no CORS headers are sent, so only pages served by the app itself (the
correction page) and non-browser clients (3D Slicer) can call it; with it, exactly the listed origins
are allowed. Request bodies above :data:`MAX_BODY_BYTES` are refused with 413 before they are read.
Binding to 127.0.0.1 is the ``--host`` of ``make serve``; authentication is MONAI Label's
(``MONAI_LABEL_AUTH_ENABLE``), see docs/monailabel.md, "Hardening and deployment".
"""

from __future__ import annotations

import logging
from typing import Any

from monailabel.app import app
from monailabel.config import settings
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

logger = logging.getLogger(__name__)

#: Largest request body (an image upload: the datastore's own limit is 128 MiB, plus form overhead).
MAX_BODY_BYTES = 130 * 1024 * 1024


class BodySizeLimit:
    """ASGI middleware: 413 for a request whose ``Content-Length`` exceeds ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                size = length.decode(errors="replace")[:20]
                detail = f"request body of {size} bytes is above the limit of {self.max_bytes:,}"
                response = JSONResponse({"detail": detail}, status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _configure(application: Any) -> None:
    origins = [str(o).rstrip("/") for o in settings.MONAI_LABEL_CORS_ORIGINS]
    application.user_middleware[:] = [m for m in application.user_middleware if m.cls is not CORSMiddleware]
    if origins:
        application.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    application.add_middleware(BodySizeLimit)
    logger.info("CORS origins: %s", origins or "none (same origin only)")


_configure(app)

__all__ = ["app"]
