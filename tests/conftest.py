"""Shared fixtures for the fracseg test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Repository root (this file is ``<root>/tests/conftest.py``).
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder, ``../shared/data`` relative to the repository root.

    CI always provides it, so a missing folder is a failure, not a skip.
    """
    root = REPO_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        pytest.fail(f"shared data folder not found at {root} (expected ../shared/data beside the repository)")
    return root


@pytest.fixture(scope="session")
def prepared_shared(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ensure_prepared`` of the shared FracAtlas once per test process (masks of 2,656 images, ~15 s on
    one core), for the in-process ``fracseg evaluate`` tests (``--prepared``). Tests must not modify it."""
    from fracseg.data import ensure_prepared

    out = tmp_path_factory.mktemp("prepared_shared")
    ensure_prepared(shared_data / "fracatlas", out)
    return out


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two workers on two cores) each worker and every process it
    starts computes on one thread: two workers with two OpenMP threads each spin against each other (three
    bundle resume tests took 250 s so, 144 s with one thread each, 190 s in one process)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under ``tests/integration`` must carry the ``integration`` mark, so that ``make test-fast``
    (``-m "not integration"``) is the unit tier: an unmarked one fails collection instead of slowing it."""
    unmarked = sorted(
        {
            item.nodeid.split("::")[0]
            for item in items
            if "integration" in Path(str(item.path)).parts and item.get_closest_marker("integration") is None
        }
    )
    if unmarked:
        raise pytest.UsageError(f"integration tests without pytest.mark.integration: {', '.join(unmarked)}")
