"""fracseg.io.file_sha256: the digest the predictor, the MONAI Label app and the export script record."""

from __future__ import annotations

import re
from pathlib import Path

from fracseg.io import file_sha256

REPO = Path(__file__).resolve().parents[2]


def test_known_digests(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert file_sha256(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    text = tmp_path / "abc.txt"
    text.write_bytes(b"abc")
    assert file_sha256(str(text)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_shipped_weights_match_the_digest_their_readme_records() -> None:
    """bundle/models/README.md names the weights' sha256: a new release that forgets to update it fails."""
    recorded = re.search(r"sha256 `([0-9a-f]{64})`", (REPO / "bundle" / "models" / "README.md").read_text())
    assert recorded, "bundle/models/README.md records no sha256"
    assert file_sha256(REPO / "bundle" / "models" / "model.pt") == recorded.group(1)
