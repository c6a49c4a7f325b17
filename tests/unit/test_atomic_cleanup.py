"""Start-up clean-up removes only this program's own temporaries; one run at a time per output folder."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from fracseg.io import TEMP_PREFIX, FolderBusyError, atomic_path, folder_lock, remove_stale_temporaries
from tests.helpers.lock_holder import hold_lock

REPO = Path(__file__).resolve().parents[2]
USER_FILES = (".thesis.tmp.docx", "notes/.todo.tmp", "notes/.cache.tmpdata", "notes/x.tmp", ".a.b.tmp.png")


def _user_files(folder: Path) -> None:
    for name in USER_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"the user's own {name}")


def test_temporaries_carry_the_reserved_prefix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "sub" / "a.jpg_mask.png") as tmp:
        assert tmp.name.startswith(TEMP_PREFIX) and tmp.name.endswith("a.jpg_mask.png")
        assert tmp.parent == tmp_path / "sub"
    with atomic_path(tmp_path / ("n" * 250 + ".png")) as tmp:  # a long name still fits in 255 bytes
        tmp.write_bytes(b"x")
        assert len(tmp.name) <= 255
    assert (tmp_path / ("n" * 250 + ".png")).read_bytes() == b"x"


def test_clean_up_removes_only_our_temporaries(tmp_path: Path) -> None:
    _user_files(tmp_path)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    stale = [
        tmp_path / f"{TEMP_PREFIX}k1ll3d-a_mask.png",
        tmp_path / "deep" / "er" / f"{TEMP_PREFIX}x-b.json",
    ]
    for path in stale:
        path.write_bytes(b"partial")
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / f"{TEMP_PREFIX}other-run.png").write_bytes(b"not ours to judge")
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)  # links are not followed
    assert remove_stale_temporaries(tmp_path) == 2
    assert not any(p.exists() for p in stale)
    for name in USER_FILES:
        assert (tmp_path / name).read_text() == f"the user's own {name}"
    assert (outside / f"{TEMP_PREFIX}other-run.png").exists()


def test_a_second_run_is_refused_and_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        with (
            pytest.raises(FolderBusyError, match=rf"another fracseg run \(pid {holder.pid}\)"),
            folder_lock(out),
        ):
            pass
        assert (out / f"{TEMP_PREFIX}inflight-x_mask.png").exists()  # the holder's write is untouched
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    while True:  # kill -9 leaves no stale lock: the kernel drops it with the process
        try:
            with folder_lock(out), folder_lock(out):  # re-entrant in one process
                assert remove_stale_temporaries(out) == 1
            break
        except FolderBusyError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
