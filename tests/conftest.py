"""Shared test set-up: where ../shared lives, and skips with a reason when it is absent."""

from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# The app under test must not phone home, and its job folders go to a fresh place (checked for leftovers).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["SYNCFIX_TEMP_DIR"] = tempfile.mkdtemp(prefix="syncfix-test-jobs-")


def _is_local(host: object) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback or str(host) == "0.0.0.0"
    except ValueError:
        return False


def _no_network(event: str, args: tuple) -> None:
    """Every test runs with no request leaving the machine: a lookup or connection elsewhere fails loudly."""
    if event == "socket.getaddrinfo" and not _is_local(args[0]):
        raise RuntimeError(f"test tried to resolve {args[0]!r}: no request may leave 127.0.0.1")
    if event == "socket.connect" and isinstance(args[1], tuple) and not _is_local(args[1][0]):
        raise RuntimeError(f"test tried to connect to {args[1]!r}: no request may leave 127.0.0.1")


sys.addaudithook(_no_network)

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
def dev_dir() -> Path:
    """The development set of real clips (``../shared/fixtures/dev``)."""
    return _need(FIXTURES / "dev" / "MANIFEST.tsv").parent


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
