"""DICOMweb as input and output of batch inference: QIDO-RS search, WADO-RS download, STOW-RS upload.

Works with any DICOMweb server (tested against Orthanc with its DICOMweb plugin). Instances are
downloaded once into ``<output>/.dicomweb/<study>/<series>/<sop>.dcm`` (atomic writes, skipped when
already there), so an interrupted run resumes without downloading again; results land in
``<output>/<study>/<series>/<sop>_mask.png`` etc. With ``stow``, the DICOM SEG objects go back to the
server with STOW-RS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from fracseg.errors import FracsegError
from fracseg.inference.batch import InputFile
from fracseg.io import atomic_path

logger = logging.getLogger(__name__)

CACHE_DIR = ".dicomweb"
DEFAULT_MODALITIES = ("CR", "DX")
#: DICOM JSON tags used from QIDO-RS results.
STUDY_UID, SERIES_UID, SOP_UID, MODALITY = "0020000D", "0020000E", "00080018", "00080060"


class DicomwebError(FracsegError):
    """The DICOMweb server could not be searched, read or written."""


@dataclass(frozen=True)
class DicomwebQuery:
    """What to fetch: every series of the given modalities, narrowed to studies/series when given."""

    url: str
    modalities: Sequence[str] = DEFAULT_MODALITIES
    studies: Sequence[str] = field(default_factory=tuple)
    series: Sequence[str] = field(default_factory=tuple)


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def connect(url: str) -> Any:
    """A ``dicomweb_client`` client for ``url`` (e.g. ``http://127.0.0.1:8042/dicom-web``)."""
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url.rstrip("/"))


def find_series(client: Any, query: DicomwebQuery) -> list[tuple[str, str, str]]:
    """``(study, series, modality)`` of every matching series, sorted, each once."""
    found: set[tuple[str, str, str]] = set()
    studies = list(query.studies) or [None]
    try:
        for study in studies:
            for modality in query.modalities:
                results = client.search_for_series(
                    study_instance_uid=study, search_filters={"Modality": modality}
                )
                for item in results or []:
                    series = _value(item, SERIES_UID)
                    if query.series and series not in query.series:
                        continue
                    found.add(
                        (_value(item, STUDY_UID) or str(study), series, _value(item, MODALITY) or modality)
                    )
    except Exception as exc:  # requests/HTTP errors: name the server and stop before doing anything
        raise DicomwebError(f"{query.url}: QIDO-RS search failed: {exc}") from exc
    return sorted(found)


def download(client: Any, query: DicomwebQuery, output: Path) -> list[InputFile]:
    """Fetch the matching instances into the cache under ``output``; return them as batch inputs."""
    cache = output / CACHE_DIR
    files: list[InputFile] = []
    for study, series, modality in find_series(client, query):
        folder = cache / study / series
        try:
            instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
        except Exception as exc:
            raise DicomwebError(
                f"{query.url}: QIDO-RS instance search of series {series} failed: {exc}"
            ) from exc
        for item in instances or []:
            sop = _value(item, SOP_UID)
            path = folder / f"{sop}.dcm"
            if not path.exists():
                try:
                    dataset = client.retrieve_instance(
                        study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop
                    )
                except Exception as exc:  # one bad instance must not stop the batch
                    logger.error("%s: WADO-RS retrieve of %s failed: %s", query.url, sop, exc)
                    continue
                with atomic_path(path) as tmp:
                    dataset.save_as(tmp, write_like_original=False)
            files.append(InputFile(path, Path(study) / series / sop))
        logger.info("series %s (%s): %d instance(s)", series, modality, len(instances or []))
    return files


def store_segs(client: Any, seg_paths: Sequence[Path], url: str) -> int:
    """STOW-RS the SEG files to the server; returns how many were stored. Failures are logged per file."""
    stored = 0
    for path in seg_paths:
        try:
            client.store_instances(datasets=[pydicom.dcmread(path)])
            stored += 1
        except Exception as exc:
            logger.error("%s: STOW-RS of %s failed: %s", url, path, exc)
    return stored
