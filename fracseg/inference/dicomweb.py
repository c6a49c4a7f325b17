"""DICOMweb as input and output of batch inference: QIDO-RS search, WADO-RS download, STOW-RS upload.

Works with any DICOMweb server (tested against Orthanc with its DICOMweb plugin). Instances are
downloaded once into ``<output>/.dicomweb/<study>/<series>/<sop>.dcm`` (atomic writes, skipped when
already there), so an interrupted run resumes without downloading again; results land in
``<output>/<study>/<series>/<sop>_mask.png`` etc. With ``stow``, the DICOM SEG objects and the SRs of
their findings go back to the server with STOW-RS.
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


#: Seconds to connect to the server and seconds to wait for each read (a bound on every request).
DEFAULT_TIMEOUT = (5.0, 60.0)


def _session_with_timeout(timeout: float | tuple[float, float]) -> Any:
    """A ``requests`` session whose requests time out after ``timeout`` unless told otherwise."""
    import requests

    class _Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super().request(*args, **kwargs)

    return _Session()


def connect(url: str, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, attempts: int = 3) -> Any:
    """A ``dicomweb_client`` client for ``url`` (e.g. ``http://127.0.0.1:8042/dicom-web``).

    Every request gives up after ``timeout`` (connect, read) seconds and is tried ``attempts`` times
    (0.5 s, 1 s, ... apart), so a server that is down or stalls yields an error in bounded time instead of
    a hang (``dicomweb_client``'s own default is 5 attempts over 30 s).
    """
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url.rstrip("/"), session=_session_with_timeout(timeout))
    client.set_http_retry_params(
        retry=attempts > 1, max_attempts=max(attempts, 1), wait_exponential_multiplier=250
    )
    return client


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


def find_instances(client: Any, query: DicomwebQuery) -> list[tuple[str, str, str, str]]:
    """``(study, series, sop, modality)`` of every instance of the matching series, in series order.

    Raises:
        DicomwebError: a search failed (the server is named with the reason).
    """
    found = []
    for study, series, modality in find_series(client, query):
        try:
            instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
        except Exception as exc:
            raise DicomwebError(
                f"{query.url}: QIDO-RS instance search of series {series} failed: {exc}"
            ) from exc
        found.extend((study, series, _value(item, SOP_UID), modality) for item in instances or [])
        logger.info("series %s (%s): %d instance(s)", series, modality, len(instances or []))
    return found


def fetch_instance(client: Any, url: str, study: str, series: str, sop: str, path: Path) -> Path:
    """WADO-RS retrieve one instance into ``path`` (atomically); an existing ``path`` is kept as is.

    Raises:
        DicomwebError: the retrieve failed (the server and the instance are named with the reason).
    """
    if not path.exists():
        try:
            dataset = client.retrieve_instance(
                study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop
            )
        except Exception as exc:
            raise DicomwebError(f"{url}: WADO-RS retrieve of {sop} failed: {exc}") from exc
        with atomic_path(path) as tmp:
            dataset.save_as(tmp, write_like_original=False)
    return path


def download(client: Any, query: DicomwebQuery, output: Path) -> list[InputFile]:
    """Fetch the matching instances into the cache under ``output``; return them as batch inputs."""
    cache = output / CACHE_DIR
    files: list[InputFile] = []
    for study, series, sop, _ in find_instances(client, query):
        try:
            path = fetch_instance(
                client, query.url, study, series, sop, cache / study / series / f"{sop}.dcm"
            )
        except DicomwebError as exc:  # one bad instance must not stop the batch
            logger.error("%s", exc)
            continue
        files.append(InputFile(path, Path(study) / series / sop))
    return files


def store_dataset(client: Any, url: str, dataset: Any) -> None:
    """STOW-RS one dataset.

    Raises:
        DicomwebError: the server refused it or could not be reached (named with the reason).
    """
    try:
        client.store_instances(datasets=[dataset])
    except Exception as exc:
        raise DicomwebError(f"{url}: STOW-RS of {dataset.SOPInstanceUID} failed: {exc}") from exc


def store_segs(client: Any, seg_paths: Sequence[Path], url: str) -> int:
    """STOW-RS the SEG files to the server, each with the SR of its findings written beside it
    (:func:`fracseg.io.dicom_sr.sr_path_for`); returns how many results (SEG and its SR) were stored
    completely. Failures are logged per file."""
    from fracseg.io.dicom_sr import sr_path_for

    stored = 0
    for seg_path in seg_paths:
        sr_path = sr_path_for(seg_path)
        complete = True
        for path in (seg_path, sr_path) if sr_path.exists() else (seg_path,):
            try:
                store_dataset(client, url, pydicom.dcmread(path))
            except Exception as exc:
                logger.error("STOW-RS of %s failed: %s", path, exc)
                complete = False
        stored += complete
    return stored
