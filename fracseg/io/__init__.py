"""Readers and writers: files in, 2D X-ray arrays plus metadata out."""

from fracseg.io.atomic import (
    TEMP_PREFIX,
    atomic_path,
    is_temporary,
    remove_stale_temporaries,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from fracseg.io.dicom import read_dicom
from fracseg.io.digest import file_sha256
from fracseg.io.folder_lock import FolderBusyError, folder_lock
from fracseg.io.limits import DEFAULT_MAX_PIXELS
from fracseg.io.meta import ImageFormat, XrayImage, XrayMeta
from fracseg.io.raster import read_raster
from fracseg.io.reader import SUPPORTED_SUFFIXES, is_supported_file, read_xray
from fracseg.io.volume import read_volume

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "TEMP_PREFIX",
    "FolderBusyError",
    "ImageFormat",
    "XrayImage",
    "XrayMeta",
    "atomic_path",
    "file_sha256",
    "folder_lock",
    "is_supported_file",
    "is_temporary",
    "read_dicom",
    "read_raster",
    "read_volume",
    "read_xray",
    "remove_stale_temporaries",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
