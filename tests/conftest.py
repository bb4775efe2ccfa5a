"""Shared fixtures. Every test run compiles the Numba kernels into a fresh cache directory,
so a stale cache can never hide a kernel change."""
import os
import tempfile
from pathlib import Path

os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="tinyllm-numba-")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("TINYLLM_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


GOLDEN = _shared_dir() / "golden"


@pytest.fixture(scope="session")
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN}; set TINYLLM_SHARED to the shared/ folder")
    return GOLDEN


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M Q4_K_M file (assembled from the demo package on first use)."""
    from tinyllm.default_model import default_model_path

    return default_model_path()
