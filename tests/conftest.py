"""Shared test set-up: where ../shared lives, and skips with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SYNCFIX_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
GOLDEN = SHARED / "golden"
RANDOM_WEIGHTS = GOLDEN / "syncnet_v2_random.model"
RANDOM_WEIGHTS_SHA256 = "798f851f11f24f55c59a31d0b5681bcf76ffbe123e5fec059a548d9de2459b8c"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the shared fixtures beside the checkout "
                    "(../shared, or set SYNCFIX_SHARED)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _need(FIXTURES)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _need(GOLDEN)


@pytest.fixture(scope="session")
def random_weights() -> Path:
    return _need(RANDOM_WEIGHTS)


@pytest.fixture(scope="session")
def example_avi(fixtures_dir: Path) -> Path:
    return _need(fixtures_dir / "example.avi")


@pytest.fixture(scope="session")
def synced_avi(fixtures_dir: Path) -> Path:
    return _need(fixtures_dir / "synced_example.avi")


@pytest.fixture(scope="session")
def golden(golden_dir: Path):
    """Loader for a golden npz by stem, e.g. ``golden('example_model_level')``."""

    def load(stem: str) -> dict[str, np.ndarray]:
        with np.load(_need(golden_dir / f"{stem}.npz")) as data:
            return {k: data[k] for k in data.files}

    return load


@pytest.fixture(scope="session")
def embedder(random_weights: Path):
    """The real loading path (verify + fold) on the random golden weights, CPU."""
    import syncnet

    return syncnet.load_model(random_weights, device="cpu", download=False)
