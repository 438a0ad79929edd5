"""The MACE family end to end: trained by ``nnpes train`` from YAML, saved, loaded with
``nnpes.load``, and the same energy and forces from the ASE calculator and the jax-md adaptor."""

from __future__ import annotations

import os

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
from jax_md import space

import nnpes
from nnpes.md import energy_neighbor_list

TINY_MACE = {
    "family": "mace",
    "cutoff": 4.0,
    "channels": 4,
    "l_max": 2,
    "hidden_l_max": 1,
    "correlation": 3,
    "num_layers": 2,
    "num_basis": 4,
    "radial_features": [8],
    "readout_features": 4,
}


def test_mace_trains_from_yaml_and_serves_calculator_and_jax_md(tmp_path, tiny_config, write, run_train, ethanol10):
    workdir = str(tmp_path / "run")
    cfg = tiny_config(model=TINY_MACE, training={"max_steps": 20})
    cfg["model"] = dict(TINY_MACE)
    out = run_train(write(cfg), workdir)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = list(f)
    assert len(rows) > 2, "no training steps were logged"

    potential = nnpes.load(workdir).astype("float64")
    assert type(potential.model).__name__ == "MACE" and potential.model.correlation == 3

    atoms = ase.io.read(ethanol10, index=3)
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(energy) and np.all(np.isfinite(forces)) and np.abs(forces).max() > 0

    displacement, _ = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(potential, displacement, None, atoms.numbers)
    positions = jnp.asarray(atoms.positions)
    e_md, grad = jax.jit(jax.value_and_grad(energy_fn))(positions, neighbor_fn.allocate(positions))
    assert abs(float(e_md) - energy) < 1e-9 * abs(energy)
    np.testing.assert_allclose(-np.asarray(grad), forces, atol=1e-9)
