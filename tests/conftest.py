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


#: The longest test files (seconds on a 2-core EPYC, one thread per worker), run first: ``make test`` hands
#: whole files to two workers in collection order (``--dist loadfile``), so a long file collected last
#: would run alone at the end while the other worker idles. Order only; every file still runs.
LONGEST_FIRST = (
    "tests/integration/test_bundle.py",  # ~340 s: tiny trainings, resume, DDP, bundle vs CLI
    "tests/integration/test_ray_infer.py",  # ~160 s: three Ray clusters
    "tests/integration/test_ohif_loop.py",  # ~100 s: Orthanc, the app, Chromium, OHIF
    "tests/integration/test_gpu_release.py",  # ~95 s: the GPU script rehearsed on the CPU
    "tests/integration/test_infer_cli.py",  # ~85 s
    "tests/integration/test_dicomweb.py",  # ~75 s: Orthanc round trip
    "tests/integration/test_prepare_shared.py",  # ~60 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under ``tests/integration`` must carry the ``integration`` mark, so that ``make test-fast``
    (``-m "not integration"``) is the unit tier: an unmarked one fails collection instead of slowing it.
    The files in ``LONGEST_FIRST`` are moved to the front (the others keep their order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
    unmarked = sorted(
        {
            item.nodeid.split("::")[0]
            for item in items
            if "integration" in Path(str(item.path)).parts and item.get_closest_marker("integration") is None
        }
    )
    if unmarked:
        raise pytest.UsageError(f"integration tests without pytest.mark.integration: {', '.join(unmarked)}")
