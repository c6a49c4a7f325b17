"""Which files a batch processes and where each one's results go.

Output names: an input found inside a folder keeps its path below that folder, an input given as a file
goes straight into the output folder, and its results are ``<stem>_mask.png``, ``<stem>_overlay.png``
and ``<stem>_seg.dcm``. Every input gets its own stem:

- the same file given more than once (directly, through a folder or a glob) is processed once;
- inputs whose stems collide (``a.jpg``, ``a.png`` and ``a.dcm`` in one folder; names are compared
  case-insensitively, as on macOS and Windows file systems) keep their extension in the stem
  (``a.jpg_mask.png``, ``a.png_mask.png``, ``a.dcm_seg.dcm``);
- inputs that still collide (``sub1/x.jpg`` and ``sub2/x.jpg`` given as files) also get ``~`` and the
  first 8 hex digits of the SHA-256 of their absolute path (``x.jpg~1f0c2a9b_mask.png``), which stays the
  same from run to run.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fracseg.errors import FracsegError
from fracseg.io import is_supported_file


@dataclass(frozen=True)
class InputFile:
    """A file to process and the output stem (relative path without suffix) it maps to."""

    path: Path
    out_stem: Path


def file_stem(path: Path) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one); names without a suffix stay whole."""
    name = path.name
    for suffix in (".nii.gz",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def _is_candidate(path: Path) -> bool:
    """A regular file a folder scan picks up, or a dangling symbolic link (reported as an error row)."""
    if not is_supported_file(path):
        return False
    return path.is_file() or (path.is_symlink() and not path.exists())


def _outside(path: Path, skip: Path | None) -> bool:
    if skip is None:
        return True
    try:
        return not path.resolve().is_relative_to(skip)
    except (OSError, RuntimeError):  # symlink loops: let the reader report the file
        return True


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], exclude: str | os.PathLike[str] | None = None
) -> list[InputFile]:
    """Expand files, folders (recursively, sorted) and quoted globs (``"pacs/**/*.dcm"``) into
    :class:`InputFile`s; missing paths and dangling links are kept so they surface as error rows. Files
    under ``exclude`` (the output folder) are skipped; a glob match keeps its path below the glob's fixed
    folders. Stems are not yet unique: see :func:`plan_inputs`."""
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[InputFile] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists() and not path.is_symlink() and glob.has_magic(str(raw)):  # a quoted glob
            # Outputs keep the matches' paths below the glob's fixed leading folders, so equal file names
            # in different folders (PACS exports) cannot collide.
            fixed = list(itertools.takewhile(lambda p: not glob.has_magic(p), path.parts))
            base = Path(*fixed) if fixed else Path()
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            for match in matches:
                if (match.is_file() or match.is_symlink()) and not match.is_dir() and _outside(match, skip):
                    rel = match.relative_to(base)
                    found.append(InputFile(match, rel.parent / file_stem(match)))
            if matches:
                continue
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if _is_candidate(p)):
                if _outside(file, skip):
                    rel = file.relative_to(path)
                    found.append(InputFile(file, rel.parent / file_stem(file)))
        else:
            found.append(InputFile(path, Path(file_stem(path))))
    return found


def _identity_key(path: Path) -> str:
    """Same key for the same file however it was named (relative, absolute, through symlinks)."""
    try:
        return os.path.realpath(path) if path.exists() else os.path.abspath(path)
    except (OSError, RuntimeError):
        return os.path.abspath(path)


def _stem_key(stem: Path) -> str:
    return stem.as_posix().casefold()


def unique_output_stems(files: Sequence[InputFile]) -> list[InputFile]:
    """Drop repeated inputs (the first occurrence wins) and give colliding stems distinct names (module
    docstring). Idempotent: a planned list comes back unchanged."""
    seen: set[str] = set()
    kept: list[InputFile] = []
    for item in files:
        key = _identity_key(item.path)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    stems = [item.out_stem for item in kept]
    counts = Counter(_stem_key(s) for s in stems)
    for i, item in enumerate(kept):
        if counts[_stem_key(stems[i])] > 1:
            stems[i] = stems[i].parent / item.path.name  # keep the extension
    counts = Counter(_stem_key(s) for s in stems)
    for i, item in enumerate(kept):
        if counts[_stem_key(stems[i])] > 1:
            digest = hashlib.sha256(os.path.abspath(item.path).encode("utf-8", "surrogateescape")).hexdigest()
            stems[i] = stems[i].parent / f"{stems[i].name}~{digest[:8]}"
    taken: set[str] = set()
    for i, stem in enumerate(stems):  # a guard for the unthinkable (equal hash prefixes): number them
        candidate, n = stem, 2
        while _stem_key(candidate) in taken:
            candidate, n = stem.parent / f"{stem.name}~{n}", n + 1
        taken.add(_stem_key(candidate))
        stems[i] = candidate
    return [
        item if item.out_stem == stem else replace(item, out_stem=stem)
        for item, stem in zip(kept, stems, strict=True)
    ]


def check_output_folder(
    inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], option: str = "--output"
) -> None:
    """Refuse an output folder that cannot work, before anything slow (loading the model) happens.

    Raises:
        FracsegError: ``output`` exists and is not a folder, or it is (or contains) an input folder, whose
            images would all be skipped as results of an earlier run.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise FracsegError(f"{option} {out}: exists and is not a folder")
    if out.is_symlink() and not out.exists():
        raise FracsegError(f"{option} {out}: is a broken symbolic link")
    resolved = out.resolve()
    for raw in inputs:
        path = Path(raw)
        if not path.is_dir():
            continue
        folder = path.resolve()
        if folder == resolved or folder.is_relative_to(resolved):
            where = "is" if folder == resolved else "contains"
            raise FracsegError(
                f"{option} {out} {where} the input folder {path}: its images would be taken for results "
                "and skipped; choose an output folder outside the inputs (one inside an input folder is fine)"
            )


def plan_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None,
    extra: Sequence[InputFile] = (),
) -> list[InputFile]:
    """:func:`collect_inputs` (skipping the output folder) plus ``extra`` (e.g. DICOMweb downloads), each
    input once, with distinct output stems."""
    return unique_output_stems([*collect_inputs(inputs, exclude=output), *extra])
