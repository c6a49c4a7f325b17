"""Client errors of the app: an HTTP 4xx with a message that names the file or field and the reason.

MONAI Label's endpoints call the app and the datastore directly inside the request handler, so an
exception raised there reaches FastAPI unchanged; :class:`RequestRejected` is a FastAPI
``HTTPException``, which FastAPI answers with its status code and ``{"detail": message}``.
"""

from __future__ import annotations

from fastapi import HTTPException

BAD_REQUEST = 400
NOT_FOUND = 404
PAYLOAD_TOO_LARGE = 413
UNSUPPORTED_MEDIA_TYPE = 415
UNPROCESSABLE = 422


class RequestRejected(HTTPException):
    """A request the app refuses; ``str(exc)`` and ``exc.detail`` are the message for the client.

    Args:
        status_code: the HTTP status (4xx).
        detail: what was refused and why (file or field name first).
    """

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"
