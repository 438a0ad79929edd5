"""Session-wide test set-up.

* float64 (``jax_enable_x64``) is switched on once, in ``pytest_configure``, before any test
  module is imported and before any JAX array exists. Library code passes explicit dtypes, so
  float32 paths still run in float32.
* ``debug_nans``: with it, a NaN produced by any JAX operation raises ``FloatingPointError``
  naming the primitive. A module opts in with
  ``pytestmark = pytest.mark.usefixtures("debug_nans")``. It is not on for the whole session
  because it also raises on arrays that hold NaN on purpose (``jnp.asarray`` of a NaN
  placeholder for a missing label, a test that checks NaN-loss detection).
* ``tests/distributed/checks.py`` (the multi-device checks, in a child process with 8 forced
  host devices) is started as soon as collection ends when ``test_distributed.py`` is selected,
  and its tests are moved to the end of the session, so its compilations run on the second core
  while the other tests run (under pytest-xdist, as CI runs the suite, the worker that gets them
  starts it and runs them first);
  ``distributed_checks`` waits for it (no polling) and returns its JSON.
* ``shared_data`` is the reference-data directory ``../shared/data`` next to the repository;
  tests that need it are skipped when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_configure(config):
    # no persistent compilation cache in ~/.cache while testing (tests of the cache set their own)
    os.environ.setdefault("NNPES_NO_COMPILE_CACHE", "1")
    jax.config.update("jax_enable_x64", True)


DISTRIBUTED_DEVICES = 8
DISTRIBUTED_TIMEOUT_S = 3600  # a hung child fails the test instead of the whole CI run


def _xdist_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def pytest_collection_modifyitems(config, items):
    """The multi-device tests last: their child process then runs alongside all the others. Under
    pytest-xdist (``-n 2 --dist loadfile``) they come first instead: the worker that gets them
    starts the child and waits for it while the other worker runs the rest."""
    items.sort(key=lambda item: (Path(str(item.fspath)).name == "test_distributed.py") != _xdist_worker())


def pytest_collection_finish(session):
    if _xdist_worker():  # every worker collects everything: the one that runs the tests starts it
        return
    if any(Path(str(item.fspath)).name == "test_distributed.py" for item in session.items):
        _start_distributed_checks(session.config)


def _start_distributed_checks(config) -> None:
    out = Path(tempfile.mkdtemp(prefix="nnpes-distributed-"))
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DISTRIBUTED_DEVICES}",
    }
    env["JAX_PLATFORMS"] = "cpu"
    log = open(out / "log.txt", "w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests" / "distributed" / "checks.py"), str(out / "checks.json")],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
    )  # fmt: skip
    config.stash[_DISTRIBUTED] = (proc, out, log)


_DISTRIBUTED = pytest.StashKey()


@pytest.fixture(scope="session")
def distributed_checks(request) -> dict:
    """The JSON of tests/distributed/checks.py (started at the end of collection, or now)."""
    if _DISTRIBUTED not in request.config.stash:
        _start_distributed_checks(request.config)
    proc, out, log = request.config.stash[_DISTRIBUTED]
    proc.wait(timeout=DISTRIBUTED_TIMEOUT_S)
    log.close()
    if proc.returncode != 0:
        pytest.fail(f"tests/distributed/checks.py failed ({proc.returncode}):\n{(out / 'log.txt').read_text()[-4000:]}")
    return json.loads((out / "checks.json").read_text())


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


def pytest_sessionfinish(session):
    """Stop the distributed checks' child if no test waited for it (deselected, interrupted)."""
    started = session.config.stash.get(_DISTRIBUTED, None)
    if started is not None and started[0].poll() is None:
        started[0].kill()
        started[0].wait()


@pytest.fixture(scope="session")
def trained_ensemble(tmp_path_factory) -> str:
    """A small DeepSets ensemble (4 members) trained for 400 steps on the 90 + 10 rMD17 ethanol
    frames shipped in the package (rMD17 samples ethanol MD at 500 K), calibrated on the 10:
    its model directory. Shared by the uncertainty, MD-alarm and export tests (~20 s once)."""
    from importlib import resources

    from nnpes.data.io import read_frames
    from nnpes.models import DeepSets
    from nnpes.train import fit

    frames = read_frames(str(resources.files("nnpes.data") / "files" / "ethanol_train.xyz"))
    workdir = tmp_path_factory.mktemp("ensemble")
    model = DeepSets(num_basis=8, embed_features=8, phi_features=(16, 16), rho_features=(16,))
    config = {"training": {"max_steps": 400, "batch_size": 4, "progress": False}, "optimizer": {"learning_rate": 0.01}}
    result = fit(model, frames[:90], frames[90:], cutoff=4.0, workdir=workdir, config=config, ensemble=4)
    return result.model_dir
