"""Spatial domain decomposition (nnpes.distributed).

The multi-device numbers come from tests/distributed/checks.py, run once in a child process with
8 forced host devices (the ``distributed_checks`` fixture of conftest.py); the tolerances are
here. The plan's pure functions and the refusals run in this process.
"""

from __future__ import annotations

import ase.build
import numpy as np
import pytest
from helpers import TINY_CUTOFF, TINY_MODELS

import nnpes
from nnpes.distributed.plan import choose_grid, estimate, face_widths, grown, overflowed
from nnpes.errors import ConfigError, ModelError

DEVICES = (1, 2, 4, 8)


@pytest.mark.parametrize("system", ["copper", "water"])
@pytest.mark.parametrize("devices", DEVICES)
def test_energy_forces_stress_equal_one_device(distributed_checks, system, devices):
    got = distributed_checks["static"][f"{system}/{devices}"]
    assert int(np.prod(got["grid"])) == devices
    for key in ("energy", "forces", "stress"):
        assert got[key] < 1e-10, (key, got)


def test_cell_narrower_than_the_halo(distributed_checks):
    """A 3.6 Å cell, 7 Å halo: ghosts are images of images (two hops per axis on one device)."""
    for devices in (1,):
        got = distributed_checks["static"][f"small_cell/{devices}"]
        assert max(got["hops"]) >= 2
        assert max(got["energy"], got["forces"], got["stress"]) < 1e-10, got


def test_nve_trajectory_equals_one_device(distributed_checks):
    got = distributed_checks["nve"]
    assert got["atoms"] >= 1500
    assert got["rebuilds"] >= 1  # the halo lists were rebuilt (and atoms migrated) during the run
    assert got["max_position_difference_a"] < 1e-8, got
    assert got["max_energy_difference_ev"] < 1e-8 * got["atoms"], got


def test_migration_and_overflow_recovered(distributed_checks):
    """Atoms drift across domain boundaries on 2 devices whose capacities start too small: every
    capacity that overflowed is grown, the chunk recomputed, and the trajectory equals a run on
    one device with room to spare. The run is Langevin NVT: its noise is drawn per atom, so the
    trajectory does not depend on the device count either."""
    got = distributed_checks["migration"]
    assert got["migrated"] > 0 and got["rebuilds"] > 1
    assert got["reallocations"] >= 1  # an overflow during the run, not only at the start
    start, final = got["start_plan"], got["final_plan"]
    assert final["migrate"] > start["migrate"] and final["pairs"] > start["pairs"]
    assert all(f > s for f, s in zip(final["ghosts"], start["ghosts"]))
    assert got["every_atom_present"]
    assert got["moved_a"] > 1.0  # the drift and the thermostat did move the atoms
    assert got["max_position_difference_a"] < 1e-9, got


def test_cli_md_devices(distributed_checks):
    got = distributed_checks["cli"]
    assert got["exit"] == 0
    assert got["summary"]["backend"] == "distributed" and got["summary"]["steps"] == 20
    assert got["frames"] == 3  # steps 0, 10, 20


def test_multihost_processes(distributed_checks):
    """Two processes joined by jax.distributed (2 host devices each), one mesh of 4 domains."""
    got = distributed_checks["multihost"]
    assert got["processes"] == 2 and got["devices"] == 4
    assert max(got["energy"], got["forces"], got["stress"]) < 1e-10, got


# --- the plan, in this process --------------------------------------------------------------------


def test_choose_grid_prefers_the_least_ghost_volume():
    cube = np.eye(3) * 40.0
    assert sorted(choose_grid(8, face_widths(cube), 7.0, 1.0)) == [2, 2, 2]
    slab = np.diag([160.0, 20.0, 20.0])
    assert choose_grid(4, face_widths(slab), 7.0, 1.0) == (4, 1, 1)
    with pytest.raises(ConfigError, match="cannot be cut into 64 domains"):
        choose_grid(64, face_widths(np.eye(3) * 3.0), 7.0, 1.0)


def test_plan_estimate_and_growth():
    cell = np.eye(3) * 30.0
    plan = estimate(cell, 2700, 4, cutoff=5.0, skin=1.0, hops_of_model=2, grid=(4, 1, 1))
    assert plan.halo == 11.0 and plan.hops == (2, 1, 1)  # domains 7.5 Å wide: the halo reaches 2 domains
    assert plan.owned >= 2700 / 4 and plan.local > plan.owned
    needed = dict(plan.capacities(), pairs=plan.pairs * 3, jumped=0, migrated=0)
    assert overflowed(plan, needed) == ["pairs"]
    bigger = grown(plan, needed)
    assert bigger.pairs >= 3 * plan.pairs and bigger.owned == plan.owned
    with pytest.raises(ConfigError, match="grid"):
        estimate(cell, 2700, 4, 5.0, 1.0, 2, grid=(3, 1, 1))


def test_refusals():
    """Electrostatics, open boundaries and too many devices are refused with one line."""
    from nnpes.distributed import decompose
    from nnpes.electrostatics import Electrostatics

    model = TINY_MODELS["deepsets"]()
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    charged = nnpes.Potential.create(model, (29,), TINY_CUTOFF, terms=(Electrostatics(),))
    with pytest.raises(ModelError, match="short-range potentials only"):
        decompose(charged, atoms, 1)
    plain = nnpes.Potential.create(model, (29,), TINY_CUTOFF)
    molecule = atoms.copy()
    molecule.pbc = False
    with pytest.raises(ModelError, match="periodic in all three directions"):
        decompose(plain, molecule, 1)
    with pytest.raises(ModelError, match="available"):
        decompose(plain, atoms, 64, grid=(4, 4, 4))
