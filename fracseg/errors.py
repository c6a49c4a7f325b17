"""Project exception types.

Every failure that a user can cause with their input surfaces as a :class:`FracsegError` subclass whose
message names the file and the reason, so batch tools can log it, record it and go on.
"""

from __future__ import annotations

import os


class FracsegError(Exception):
    """Base class of all errors raised deliberately by fracseg."""


class ImageReadError(FracsegError):
    """A file could not be turned into a 2D X-ray image.

    Args:
        path: the file that failed.
        reason: a short, human-readable reason ("truncated JPEG", "DICOM without pixel data", ...).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep the two-argument constructor picklable (DataLoader workers)
        return (type(self), (self.path, self.reason))


class DatasetError(FracsegError):
    """A dataset root does not have the expected layout or content."""


def find_fracseg_error(exc: BaseException) -> FracsegError | None:
    """The :class:`FracsegError` behind ``exc``, following ``__cause__``/``__context__``.

    MONAI's ``apply_transform`` wraps every exception raised inside a transform in a ``RuntimeError``;
    callers use this to recover the project error (file name and reason) from such a wrapper.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, FracsegError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
