"""Session-wide test set-up.

* float64 (``jax_enable_x64``) is switched on once, in ``pytest_configure``, before any test
  module is imported and before any JAX array exists. Library code passes explicit dtypes, so
  float32 paths still run in float32.
* ``debug_nans``: with it, a NaN produced by any JAX operation raises ``FloatingPointError``
  naming the primitive. A module opts in with
  ``pytestmark = pytest.mark.usefixtures("debug_nans")``. It is not on for the whole session
  because it also raises on arrays that hold NaN on purpose (``jnp.asarray`` of a NaN
  placeholder for a missing label, a test that checks NaN-loss detection).
* ``shared_data`` is the reference-data directory ``../shared/data`` next to the repository;
  tests that need it are skipped when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_configure(config):
    # no persistent compilation cache in ~/.cache while testing (tests of the cache set their own)
    os.environ.setdefault("NNPES_NO_COMPILE_CACHE", "1")
    jax.config.update("jax_enable_x64", True)


@pytest.fixture
def debug_nans():
    """Run the test with ``jax_debug_nans`` on: any NaN a JAX operation produces raises."""
    with jax.debug_nans(True):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference-data directory (README.md indexes it); skips the test when absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA
