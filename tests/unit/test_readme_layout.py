"""The README's "Layout" section names every top-level folder and every file under scripts/ and studies/,
so a new folder or tool cannot arrive without a line that says what it is; and its links resolve."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
#: folders of a working copy that are never part of the tree (build outputs, caches, environments)
NOT_TREE = {".git", ".venv", "outputs", "runs", "prepared", "node_modules", "__pycache__"}


def _layout_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    return match.group(1)


def _tracked_top_level_folders() -> set[str]:
    """Top-level folders holding at least one file git knows (tracked, or new and not ignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is on disk
        return {
            p.name
            for p in REPO.iterdir()
            if p.is_dir()
            and p.name not in NOT_TREE
            and not p.name.endswith(".egg-info")
            and not p.name.startswith((".pytest", ".ruff"))
        }
    # a file deleted in the working tree but still in the index is not part of the tree any more
    return {path.split("/")[0] for path in listed if "/" in path and (REPO / path).exists()}


def _files(folder: str) -> list[str]:
    return sorted(
        p.name
        for p in (REPO / folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix != ".pyc"
    )


def test_every_top_level_folder_is_in_the_layout() -> None:
    layout = _layout_section()
    folders = _tracked_top_level_folders()
    assert {"fracseg", "scripts", "studies", "bundle"} <= folders
    missing = sorted(f for f in folders if not re.search(rf"(^|\s){re.escape(f)}/", layout, flags=re.M))
    assert not missing, f"README.md's Layout section does not name these folders: {missing}"


def test_every_script_and_study_is_in_the_layout() -> None:
    layout = _layout_section()
    names = [f"{folder}/{name}" for folder in ("scripts", "studies") for name in _files(folder)]
    assert any(n.startswith("scripts/") for n in names) and any(n.startswith("studies/") for n in names)
    missing = [n for n in names if not re.search(rf"\b{re.escape(n.split('/')[1])}\b", layout)]
    assert not missing, f"README.md's Layout section does not name: {missing}"


def test_studies_are_not_mixed_into_scripts() -> None:
    """One-off studies live in studies/; scripts/ keeps the tools a user runs."""
    studies = set(_files("studies"))
    assert not studies & set(_files("scripts"))
    assert all(name.endswith(".py") for name in studies)


GUIDES = sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("docs/*.md"))


@pytest.mark.parametrize("doc", ["README.md", "bundle/docs/README.md", *GUIDES])
def test_relative_links_resolve(doc: str) -> None:
    path = REPO / doc
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
    broken = [link for link in links if "://" not in link and not (path.parent / link).exists()]
    assert not broken, f"{doc} links to missing files: {broken}"


def test_readme_stays_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150
