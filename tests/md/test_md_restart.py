"""Recorded times: one frame per recorded step (ASE's observers fire at step 0 in ways that differ
between ASE versions), and a run started from a frame of a written trajectory continues its clock
(``atoms.info["time_fs"]``) on both backends."""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pytest

from nnpes.errors import DataError
from nnpes.md import MDConfig, run_ase, run_md

OPTIONS = MDConfig(ensemble="nvt", thermostat="nose-hoover", dt_fs=0.5, every=5, dtype="float64", seed=3)


@pytest.fixture(scope="module")
def water_molecule():
    return ase.Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


@pytest.mark.parametrize("steps", [10, 12, 3])
def test_ase_backend_records_each_step_once(pair_potential, water_molecule, tmp_path, steps):
    result = run_ase(pair_potential, water_molecule, steps, OPTIONS)
    expected_steps = sorted({*range(0, steps + 1, OPTIONS.every), steps})
    np.testing.assert_allclose(result.time_fs, np.asarray(expected_steps) * OPTIONS.dt_fs)
    result.write_thermo(tmp_path / "thermo.csv")
    thermo = np.genfromtxt(tmp_path / "thermo.csv", delimiter=",", names=True)
    assert len(np.unique(thermo["time_fs"])) == len(thermo) == len(expected_steps)


@pytest.mark.parametrize("backend", ["jax-md", "ase"])
def test_restart_from_written_trajectory_continues_the_clock(pair_potential, water_molecule, tmp_path, backend):
    first = run_md(pair_potential, water_molecule, 10, OPTIONS, backend=backend)
    first.write_trajectory(tmp_path / "traj.xyz")
    restart = ase.io.read(tmp_path / "traj.xyz", index=-1)
    assert restart.info["time_fs"] == pytest.approx(5.0)
    second = run_md(pair_potential, restart, 10, OPTIONS, backend=backend)
    np.testing.assert_allclose(second.time_fs, 5.0 + np.array([0.0, 2.5, 5.0]))
    np.testing.assert_allclose(second.positions[0], first.positions[-1], atol=1e-6)  # extxyz keeps 8 digits
    np.testing.assert_allclose(second.velocities[0], first.velocities[-1], rtol=1e-6, atol=1e-9)
    second.write_trajectory(tmp_path / "traj.xyz", append=True)
    times = [a.info["time_fs"] for a in ase.io.read(tmp_path / "traj.xyz", index=":")]
    np.testing.assert_allclose(times, [0.0, 2.5, 5.0, 5.0, 7.5, 10.0])


def test_start_time_that_is_not_a_number_is_a_one_line_data_error(pair_potential, water_molecule):
    atoms = water_molecule.copy()
    atoms.info["time_fs"] = "yesterday"
    with pytest.raises(DataError, match="ase.Atoms: info key 'time_fs' is not a finite number: 'yesterday'"):
        run_md(pair_potential, atoms, 10, OPTIONS)
