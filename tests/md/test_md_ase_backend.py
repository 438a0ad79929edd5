"""The ASE path (nnpes.md.calculator, nnpes.md.ase_backend): optimisers, energy conservation,
small periodic cells that jax-md cannot run."""

from __future__ import annotations

import numpy as np
import pytest
from ase.optimize import BFGS

import nnpes
from nnpes.md import BoxTooSmallError, MDOptions, run_ase, run_md, simulation


def test_bfgs_with_calculator_lowers_energy(chno_potential, ethanol):
    atoms = ethanol.copy()
    atoms.calc = nnpes.Calculator(chno_potential, dtype="float64")
    before = atoms.get_potential_energy()
    BFGS(atoms, logfile=None, maxstep=0.02).run(fmax=0.01, steps=5)  # a random model: short steps
    assert atoms.get_potential_energy() < before


def test_ase_velocity_verlet_conserves_energy(chno_potential, ethanol):
    result = run_ase(chno_potential, ethanol, 200, MDOptions(ensemble="nve", dt_fs=0.25, dtype="float64", every=5))
    assert result.backend == "ase"
    assert np.ptp(result.etot) / len(ethanol) < 1e-4
    assert abs(result.drift_mev_per_atom_per_ps()) < 1.0


def test_small_periodic_cell_runs_on_ase_path(chno_potential, ethanol):
    atoms = ethanol.copy()
    atoms.set_cell([7.0, 7.0, 7.0])  # narrower than 2·(4 + 1) Å: jax-md's minimum image cannot
    atoms.pbc = True
    atoms.center()
    result = run_md(chno_potential, atoms, 20, MDOptions(ensemble="nvt", dt_fs=0.5, dtype="float64", every=10))
    assert result.backend == "ase"
    assert np.all(np.isfinite(result.pressure_bar)) and np.all(result.volume_a3 == pytest.approx(343.0))
    with pytest.raises(BoxTooSmallError):
        simulation(chno_potential, atoms, MDOptions(dtype="float64"))
