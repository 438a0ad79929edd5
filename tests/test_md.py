"""Molecular dynamics: the jax-md adaptor agrees with the ASE calculator, overflow is repaired
without changing the trajectory, units give the right oscillator period, thermostats hold T,
NVE conserves energy, and the CLI writes what it promises.

Models are tiny and compiled functions are shared through module-scoped fixtures (2 CPU cores).
"""

from __future__ import annotations

import json

import ase
import ase.io
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.optimize import BFGS

import nnpes
from nnpes.errors import ModelError, NnpesError
from nnpes.models.radial import polynomial_envelope

from jax_md import quantity, space

from nnpes.md import BoxTooSmallError, MDOptions, energy_neighbor_list, run, run_ase, run_md, simulation
from nnpes.md.simulate import FS, KB

E0 = {1: -13.6, 6: -1029.5, 8: -2041.2}  # realistic magnitudes: totals must still agree to round-off


def tiny_nequip(l_max: int = 1):
    return nnpes.models.NequIP(channels=4, l_max=l_max, num_layers=1, num_basis=4, radial_features=(8,),
                               readout_features=4)


@pytest.fixture(scope="module")
def ethanol(shared_data):
    return ase.io.read(shared_data / "ci" / "rmd17_ethanol_train.xyz", 0)


@pytest.fixture(scope="module")
def water(shared_data):
    return ase.io.read(shared_data / "ci" / "water_10.xyz", 0)


@pytest.fixture(scope="module")
def chno_potential():
    return nnpes.Potential.create(tiny_nequip(), [1, 6, 8], cutoff=4.0, seed=1, scale=0.05, e0=E0,
                                  avg_num_neighbors=8.0)


@pytest.fixture(scope="module")
def water_potential():
    return nnpes.Potential.create(tiny_nequip(), [1, 8], cutoff=3.0, seed=2, scale=0.05, e0=E0,
                                  avg_num_neighbors=10.0)


def calculator_results(potential, atoms):
    atoms = atoms.copy()
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    stress = atoms.get_stress() if atoms.pbc.all() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def voigt_to_matrix(s):
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


# --- the adaptor equals the calculator ------------------------------------------------------------


def test_energy_and_forces_equal_calculator_molecule_free_space(chno_potential, ethanol):
    e_ref, f_ref, _ = calculator_results(chno_potential, ethanol)
    displacement, _ = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(chno_potential.astype("float64"), displacement, None,
                                                  ethanol.numbers)
    R = jnp.asarray(ethanol.positions)
    nbrs = neighbor_fn.allocate(R)
    energy, grad = jax.jit(jax.value_and_grad(energy_fn))(R, nbrs)
    assert abs(float(energy) - e_ref) < 1e-9 * abs(e_ref)  # reference energies included, float64 round-off
    np.testing.assert_allclose(-np.asarray(grad), f_ref, atol=1e-10)


def test_energy_forces_stress_equal_calculator_periodic_cubic(water_potential, water):
    e_ref, f_ref, s_ref = calculator_results(water_potential, water)
    side = water.cell.lengths()[0]
    displacement, _ = space.periodic(side)
    neighbor_fn, energy_fn = energy_neighbor_list(water_potential.astype("float64"), displacement, side,
                                                  water.numbers, dr_threshold=0.5)
    R = jnp.asarray(np.mod(water.positions, side))
    nbrs = neighbor_fn.allocate(R)
    energy, grad, jm_stress, pressure = jax.jit(lambda R, nbrs: (
        *jax.value_and_grad(energy_fn)(R, nbrs), quantity.stress(energy_fn, R, side, neighbor=nbrs),
        quantity.pressure(energy_fn, R, side, neighbor=nbrs)))(R, nbrs)
    assert abs(float(energy) - e_ref) < 1e-9 * abs(e_ref)
    np.testing.assert_allclose(-np.asarray(grad), f_ref, atol=1e-10)
    # jax-md's stress is −(1/V) ∂E/∂ε: the opposite sign to ASE's (positive = tensile)
    np.testing.assert_allclose(np.asarray(jm_stress), -voigt_to_matrix(s_ref), atol=1e-10)
    assert abs(float(pressure) + np.mean(s_ref[:3])) < 1e-10


def test_energy_forces_stress_equal_calculator_triclinic_fractional(water_potential, water):
    atoms = water.copy()
    L = atoms.cell.lengths()[0]
    atoms.set_cell([[L, 0, 0], [2.0, L, 0], [1.5, -1.0, L]], scale_atoms=False)  # rows; lower triangular
    atoms.wrap()
    e_ref, f_ref, s_ref = calculator_results(water_potential, atoms)
    box = jnp.asarray(atoms.cell[:].T)  # columns = lattice vectors (upper triangular)
    displacement, _ = space.periodic_general(box, fractional_coordinates=True)
    neighbor_fn, energy_fn = energy_neighbor_list(water_potential.astype("float64"), displacement, box,
                                                  atoms.numbers, dr_threshold=0.5, fractional_coordinates=True)
    frac = jnp.asarray(atoms.get_scaled_positions())
    nbrs = neighbor_fn.allocate(frac)
    energy, grad, jm_stress = jax.jit(lambda R, nbrs: (  # jax-md's transform: real-space gradient
        *jax.value_and_grad(energy_fn)(R, nbrs), quantity.stress(energy_fn, R, box, neighbor=nbrs)))(frac, nbrs)
    assert abs(float(energy) - e_ref) < 1e-9 * abs(e_ref)
    np.testing.assert_allclose(-np.asarray(grad), f_ref, atol=1e-10)
    np.testing.assert_allclose(np.asarray(jm_stress), -voigt_to_matrix(s_ref), atol=1e-10)


def test_pairs_beyond_cutoff_are_masked_whatever_the_skin(water_potential, water):
    side = water.cell.lengths()[0]
    displacement, _ = space.periodic(side)
    R = jnp.asarray(np.mod(water.positions, side))
    energies = []
    for skin in (0.2, 1.5):
        neighbor_fn, energy_fn = energy_neighbor_list(water_potential.astype("float64"), displacement, side,
                                                      water.numbers, dr_threshold=skin)
        energies.append(float(jax.jit(energy_fn)(R, neighbor_fn.allocate(R))))
    assert abs(energies[0] - energies[1]) < 1e-9 * abs(energies[0])


def test_energy_fn_differentiates_params_and_vmaps(chno_potential, ethanol):
    potential = chno_potential.astype("float64")
    displacement, _ = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(potential, displacement, None, ethanol.numbers)
    R = jnp.asarray(ethanol.positions)
    nbrs = neighbor_fn.allocate(R)
    params = potential.params
    direction = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(3), p.shape, p.dtype), params)
    batch = jnp.stack([R, R + 0.01 * jax.random.normal(jax.random.PRNGKey(4), R.shape)])

    @jax.jit
    def evaluate(p):  # one compilation: energy and its parameter gradient at R, energies of the batch
        e, g = jax.value_and_grad(lambda q: energy_fn(R, nbrs, params=q))(p)
        return e, g, jax.vmap(lambda b: energy_fn(b, nbrs, params=p))(batch)

    _, g, batched = evaluate(params)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
    h = 1e-5
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)  # noqa: E731
    fd = (evaluate(shifted(h))[0] - evaluate(shifted(-h))[0]) / (2 * h)
    assert abs(float(analytic) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))
    np.testing.assert_allclose(np.asarray(batched[1]), float(energy_fn(batch[1], nbrs)), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(batched[0]), float(evaluate(params)[0]), rtol=1e-13)


def test_box_narrower_than_twice_cutoff_plus_skin_raises_suggesting_supercell(water_potential):
    side = 7.0  # < 2·(3.0 + 1.0)
    displacement, _ = space.periodic(side)
    with pytest.raises(BoxTooSmallError, match="supercell"):
        energy_neighbor_list(water_potential, displacement, side, [8, 1, 1])


def test_unknown_element_is_a_one_line_model_error(water_potential):
    displacement, _ = space.free()
    with pytest.raises(ModelError, match="not known"):
        energy_neighbor_list(water_potential, displacement, None, [6, 1])


# --- the run loop ---------------------------------------------------------------------------------


def random_gas(n_atoms=64, side=10.0, seed=0):
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < n_atoms:  # no two atoms closer than 1.2 Å
        p = rng.uniform(0, side, 3)
        if all(np.linalg.norm((p - q + side / 2) % side - side / 2) > 1.2 for q in positions):
            positions.append(p)
    return ase.Atoms(numbers=[1, 8] * (n_atoms // 2), positions=positions, cell=[side] * 3, pbc=True)


class GaussianPair(nn.Module):
    """A cheap smooth pair model for run-loop tests: ε·exp(−r²/σ²)·u(r) per pair (u: cutoff envelope)."""

    epsilon: float = 0.05  # eV
    sigma: float = 1.5  # Å
    cutoff: float = 3.0
    num_species: int = 2
    avg_num_neighbors: float = 1.0

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        eps = self.epsilon * self.param("unit", nn.initializers.ones, (), vectors.dtype)
        r = jnp.linalg.norm(vectors, axis=-1)
        pair = eps * jnp.exp(-(r / self.sigma) ** 2) * polynomial_envelope(r, self.cutoff)
        return jax.ops.segment_sum(jnp.where(edge_mask, 0.5 * pair, 0.0), receivers, species.shape[0])


@pytest.fixture(scope="module")
def pair_potential():
    return nnpes.Potential.create(GaussianPair(), [1, 8], cutoff=3.0)


def test_neighbor_overflow_is_repaired_and_trajectory_equals_large_buffer_run(pair_potential):
    gas = random_gas()
    sim = simulation(pair_potential, gas, MDOptions(ensemble="nve", dt_fs=0.5, temperature_k=3000.0, seed=5,
                                                     dtype="float64", skin_a=0.5, every=20))
    large = sim.neighbor_fn.allocate(sim.positions, extra_capacity=20)
    pairs = int(jnp.sum(large.idx[0] < len(gas)))

    def sized(capacity):  # the large list cut to a capacity (its valid slots come first)
        return large.set(idx=large.idx[:, :capacity], max_occupancy=capacity)

    repaired = run(sim, 200, neighbor=sized(pairs + 2), chunk_steps=100)
    assert repaired.neighbor_reallocations >= 1
    capacity = repaired.neighbor.max_occupancy
    assert pairs + 2 < capacity < large.max_occupancy
    reference = run(sim, 200, neighbor=sized(capacity), chunk_steps=100)
    assert reference.neighbor_reallocations == 0
    assert reference.compilations <= 1  # the step-0 observation only: the chunk's shapes are compiled already
    assert np.abs(repaired.positions[-1] - reference.positions[-1]).max() < 1e-8
    assert np.abs(repaired.positions[-1] - repaired.positions[0]).max() > 0.5  # the gas did move


class HarmonicBond(nn.Module):
    """E = ½ k (r − r0)² per pair within the cutoff (each directed edge carries half)."""

    k: float = 36.0  # eV/Å²
    r0: float = 0.74  # Å
    cutoff: float = 3.0
    num_species: int = 1
    avg_num_neighbors: float = 1.0

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        stiffness = self.k * self.param("unit", nn.initializers.ones, (), vectors.dtype)
        r = jnp.linalg.norm(vectors, axis=-1)
        pair = jnp.where(edge_mask, 0.25 * stiffness * (r - self.r0) ** 2, 0.0)
        return jax.ops.segment_sum(pair, receivers, species.shape[0])


def test_harmonic_oscillator_period_matches_two_pi_sqrt_mu_over_k():
    k, r0, stretch = 36.0, 0.74, 0.05
    potential = nnpes.Potential.create(HarmonicBond(k=k, r0=r0), [1], cutoff=3.0)
    dimer = ase.Atoms("H2", positions=[[0, 0, 0], [r0 + stretch, 0, 0]])
    dt_fs = 0.05
    result = run_md(potential, dimer, 1000, MDOptions(ensemble="nve", dt_fs=dt_fs, temperature_k=0.0,
                                                      dtype="float64", every=1))
    assert result.backend == "jax-md"
    bond = np.linalg.norm(result.positions[:, 1] - result.positions[:, 0], axis=1) - r0
    up = np.nonzero((bond[:-1] < 0) & (bond[1:] >= 0))[0]  # upward zero crossings, interpolated
    t_cross = result.time_fs[up] - bond[up] / (bond[up + 1] - bond[up]) * dt_fs
    period = np.mean(np.diff(t_cross))
    mu = dimer.get_masses()[0] / 2  # amu
    expected = 2 * np.pi * np.sqrt(mu / k) / FS  # jax-md time unit √(amu·Å²/eV) ≈ 10.18 fs
    assert 7.0 < expected < 8.0
    assert abs(period - expected) < 2e-3 * expected
    assert np.ptp(result.etot) < 1e-3 * 0.5 * k * stretch**2


def test_nvt_langevin_water_holds_mean_temperature_within_5_percent(water_potential, water):
    result = run_md(water_potential, water, 1000, MDOptions(ensemble="nvt", thermostat="langevin", dt_fs=2.0,
                                                            temperature_k=300.0, tau_t_fs=50.0, seed=7,
                                                            dtype="float32", skin_a=0.5, every=20))
    assert result.backend == "jax-md"
    second_half = result.temperature_k[len(result.temperature_k) // 2:]
    assert abs(second_half.mean() - 300.0) < 0.05 * 300.0
    assert result.compilations <= 3


def max_bond_stretch(result, atoms, bond_cutoff=1.6):
    """Largest current/initial length ratio over the start structure's covalent bonds."""
    d0 = atoms.get_all_distances()
    i, j = np.nonzero(np.triu((d0 < bond_cutoff) & (d0 > 0)))
    lengths = np.linalg.norm(result.positions[:, i] - result.positions[:, j], axis=-1)
    return float((lengths / d0[i, j]).max())


def test_nve_energy_drift_tiny_random_model_ethanol(chno_potential, ethanol):
    # A random model binds nothing, so the bond check is the trained-model test's; drift is checked here.
    result = run_md(chno_potential, ethanol, 2000, MDOptions(ensemble="nve", dt_fs=0.25, temperature_k=300.0,
                                                             dtype="float64", every=10))
    drift = result.drift_mev_per_atom_per_ps()
    assert abs(drift) < 0.1, drift
    assert np.ptp(result.etot) / len(ethanol) < 1e-3  # eV/atom: no blow-up either


@pytest.fixture(scope="session")
def trained_ethanol_model(tmp_path_factory):
    """The quickstart config trained for 2 000 steps (~30 s on 2 cores; the full quickstart runs
    12 000), or the model directory named by $NNPES_TRAINED_ETHANOL_MODEL."""
    import os
    from pathlib import Path

    from nnpes.train import load_config, train

    if os.environ.get("NNPES_TRAINED_ETHANOL_MODEL"):
        return nnpes.load(os.environ["NNPES_TRAINED_ETHANOL_MODEL"])
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    workdir = tmp_path_factory.mktemp("quickstart")
    result = train(load_config(config, overrides=["training.progress=false", "training.max_steps=2000"], workdir=str(workdir)))
    return nnpes.load(result.model_dir)


@pytest.mark.slow
def test_nve_trained_model_ethanol_conserves_energy_and_bonds(trained_ethanol_model, ethanol):
    result = run_md(trained_ethanol_model, ethanol, 2000, MDOptions(ensemble="nve", dt_fs=0.25,
                                                                    temperature_k=300.0, dtype="float64",
                                                                    every=10))
    assert abs(result.drift_mev_per_atom_per_ps()) < 0.1
    assert max_bond_stretch(result, ethanol) < 1.5


# --- the ASE path ---------------------------------------------------------------------------------


def test_bfgs_with_calculator_lowers_energy(chno_potential, ethanol):
    atoms = ethanol.copy()
    atoms.calc = nnpes.Calculator(chno_potential, dtype="float64")
    before = atoms.get_potential_energy()
    BFGS(atoms, logfile=None, maxstep=0.02).run(fmax=0.01, steps=5)  # a random model: short steps
    assert atoms.get_potential_energy() < before


def test_ase_velocity_verlet_conserves_energy(chno_potential, ethanol):
    result = run_ase(chno_potential, ethanol, 200, MDOptions(ensemble="nve", dt_fs=0.25, dtype="float64",
                                                             every=5))
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


# --- NPT and the CLI ------------------------------------------------------------------------------


@pytest.mark.slow
def test_npt_box_expands_when_internal_pressure_exceeds_target(pair_potential):
    # a weakly interacting gas at 3000 K sits far above 1 bar: the barostat must grow the box
    gas = random_gas(n_atoms=32, side=9.0, seed=1)
    result = run_md(pair_potential, gas, 40, MDOptions(ensemble="npt", dt_fs=1.0, temperature_k=3000.0,
                                                        pressure_bar=1.0, tau_p_fs=100.0, dtype="float64",
                                                        skin_a=0.5, every=20))
    assert result.pressure_bar[0] > 1000.0
    assert result.volume_a3[-1] > result.volume_a3[0]
    np.testing.assert_allclose(result.volume_a3, np.abs(np.linalg.det(result.cells)), rtol=1e-12)


def test_cli_md_writes_trajectory_thermo_and_json(chno_potential, ethanol, tmp_path):
    import argparse

    from nnpes.md import cli

    model_dir = tmp_path / "model"
    chno_potential.save(model_dir)
    start = tmp_path / "start.xyz"
    ase.io.write(start, [ethanol, ethanol], format="extxyz")
    parser = argparse.ArgumentParser(prog="nnpes")
    cli.register(parser.add_subparsers(dest="command"))
    out, log, report = tmp_path / "traj.xyz", tmp_path / "thermo.csv", tmp_path / "md.json"
    args = parser.parse_args(["md", str(model_dir), str(start), "--ensemble", "nve", "--dt", "0.25",
                              "--steps", "2000", "--every", "100", "--dtype", "float64", "--out", str(out),
                              "--log", str(log), "--json", str(report)])
    assert args.func(args) == 0
    summary = json.loads(report.read_text())
    assert set(summary) >= {"atoms", "steps", "dt_fs", "ensemble", "steps_per_s", "ns_per_day",
                            "drift_mev_per_atom_per_ps", "neighbor_reallocations", "compilations"}
    assert summary["atoms"] == 9 and summary["steps"] == 2000 and summary["ensemble"] == "nve"
    assert abs(summary["drift_mev_per_atom_per_ps"]) < 0.1
    frames = ase.io.read(out, index=":")
    assert len(frames) == 21
    thermo = np.genfromtxt(log, delimiter=",", names=True)
    np.testing.assert_allclose([f.get_potential_energy() for f in frames], thermo["epot_ev"], rtol=1e-12)
    assert np.any(frames[-1].get_velocities() != 0)
    assert thermo.dtype.names == ("time_fs", "epot_ev", "ekin_ev", "etot_ev", "temperature_k", "pressure_bar",
                                  "volume_a3")
    assert thermo["time_fs"][-1] == pytest.approx(500.0)
    # the trajectory restarts a run: its last frame, velocities included, is the new start
    restart = tmp_path / "restart.json"
    args = parser.parse_args(["md", str(model_dir), str(out), "--ensemble", "nvt", "--dt", "0.25", "--steps", "10",
                              "--every", "5", "--dtype", "float64", "--backend", "ase", "--json", str(restart)])
    assert args.func(args) == 0
    assert json.loads(restart.read_text())["drift_mev_per_atom_per_ps"] is None


def test_cli_md_user_errors_are_nnpes_errors(chno_potential, tmp_path):
    import argparse

    from nnpes.md import cli

    model_dir = tmp_path / "model"
    chno_potential.save(model_dir)
    parser = argparse.ArgumentParser(prog="nnpes")
    cli.register(parser.add_subparsers(dest="command"))
    bad = tmp_path / "bad.xyz"
    bad.write_text("this is not a structure\n")
    silicon = tmp_path / "si.xyz"
    ase.io.write(silicon, ase.Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    for path, match in ((tmp_path / "missing.xyz", "no such file"), (bad, "cannot read"), (silicon, "not known")):
        args = parser.parse_args(["md", str(model_dir), str(path), "--steps", "1"])
        with pytest.raises(NnpesError, match=match):
            args.func(args)
