"""A float32 ``nnpes md`` run, as users start it (``jax_enable_x64`` off), prints no JAX warning.

jax-md's kinetic energy (``jax_md.util.high_precision_sum``) asks ``jnp.sum`` for float64, which
jax truncates to float32 with a UserWarning when x64 is off. The test session runs with x64 on
(tests/conftest.py), so the runs happen in a fresh interpreter with UserWarnings turned into
errors: Nosé–Hoover NVT on a molecule and NPT in a periodic box, both on jax-md (the
integrators that sum kinetic energies inside jax-md), with a cheap pair model.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ase.io
import pytest
from md_models import random_gas

SCRIPT = """
import sys
import jax
assert not jax.config.jax_enable_x64, "this check needs x64 off"
import nnpes.cli
common = ["--steps", "4", "--every", "2", "--dtype", "float32", "--backend", "jax-md"]
status = [
    nnpes.cli.main(["md", "model", "h2o.xyz", "--thermostat", "nose-hoover", *common]),
    nnpes.cli.main(["md", "model", "gas.xyz", "--ensemble", "npt", *common]),
]
sys.exit(max(status))
"""


@pytest.fixture(scope="module")
def workdir(pair_potential, tmp_path_factory):
    root = tmp_path_factory.mktemp("md_float32")
    pair_potential.save(root / "model")
    ase.io.write(root / "h2o.xyz", ase.Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    ase.io.write(root / "gas.xyz", random_gas(16, side=9.0))
    return root


def test_float32_md_without_x64_prints_no_jax_warning(workdir):
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["NNPES_NO_COMPILE_CACHE"] = "1"
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", SCRIPT],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning" not in done.stderr.lower(), done.stderr
    summaries = [line for line in done.stdout.splitlines() if line.strip()]  # rich leaves a blank line
    assert [line.split(":")[0] for line in summaries] == ["nvt (jax-md)", "npt (jax-md)"]
