"""Electrostatics of latent charges: Madelung constants, Ewald's independence of its splitting,
convergence to a direct lattice sum, PME against Ewald, non-neutral cells, charge conservation,
and every physics law of the suite with the long-range terms switched on."""

from __future__ import annotations

import itertools

import ase
import ase.build
import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnpes
from nnpes.charges import conserved_charges
from nnpes.electrostatics import COULOMB_EV_A, Electrostatics, coulomb
from nnpes.errors import ModelError
from nnpes.models import NequIP
from nnpes.testing import PhysicsLaws
from nnpes.zbl import ZBL

pytestmark = pytest.mark.usefixtures("debug_nans")

# (ase.build.bulk name, formula, lattice constant Å, Madelung constant per ion pair, referred
# to the nearest-neighbour distance)
MADELUNG = [
    ("rocksalt", "NaCl", 5.64, 1.747565),
    ("cesiumchloride", "CsCl", 4.12, 1.762675),
    ("zincblende", "ZnS", 5.41, 1.638055),
]


def _random_cell(seed: int, n: int = 24, neutral: bool = True):
    rng = np.random.default_rng(seed)
    cell = np.array([[9.0, 0.0, 0.0], [1.2, 9.8, 0.0], [-0.7, 0.9, 8.6]])
    positions = rng.uniform(0, 1, (n, 3)) @ cell
    charges = rng.normal(size=n)
    if neutral:
        charges -= charges.mean()
    return positions, charges, cell


@pytest.mark.parametrize(("structure", "formula", "a", "madelung"), MADELUNG)
def test_formal_charges_reproduce_madelung_constants(structure, formula, a, madelung):
    atoms = ase.build.bulk(formula, structure, a=a)
    charges = np.array([1.0, -1.0])
    out = coulomb(atoms.positions, charges, atoms.cell.array, accuracy=1e-10, real_cutoff=8.0)
    nearest = min(np.linalg.norm(atoms.get_distance(0, 1, mic=True, vector=True)), a)
    measured = -out["energy"] * nearest / COULOMB_EV_A
    assert abs(measured - madelung) / madelung < 1e-6, measured
    np.testing.assert_allclose(out["forces"], 0.0, atol=1e-9)  # every ion sits at an inversion centre


@pytest.mark.parametrize("smearing", [0.0, 0.3])
@pytest.mark.parametrize("neutral", [True, False])
def test_ewald_energy_forces_stress_independent_of_splitting(smearing, neutral):
    """The splitting α follows the real-space cutoff; the sum must not (a non-neutral cell
    includes its neutralising background, whose α dependence cancels the rest's)."""
    positions, charges, cell = _random_cell(0, neutral=neutral)
    outs = [
        coulomb(positions, charges, cell, smearing=smearing, accuracy=1e-12, real_cutoff=rc) for rc in (3.5, 4.5, 6.0)
    ]
    for out in outs[1:]:
        assert abs(out["energy"] - outs[0]["energy"]) < 1e-8 * max(1.0, abs(outs[0]["energy"]))
        np.testing.assert_allclose(out["forces"], outs[0]["forces"], atol=1e-8)
        np.testing.assert_allclose(out["stress"], outs[0]["stress"], atol=1e-9)


def test_ewald_converges_to_a_direct_lattice_sum():
    """Summing whole cells within growing spheres converges to Ewald (tin-foil boundary) plus the
    surface term 2π|M|²/3V of a sphere in vacuum (M: the cell's dipole moment)."""
    positions, charges, cell = _random_cell(1, n=6)
    ewald = coulomb(positions, charges, cell, smearing=0.0, accuracy=1e-12, real_cutoff=6.0)["energy"]
    dipole = charges @ positions
    volume = abs(np.linalg.det(cell))
    surface = COULOMB_EV_A * 2 * np.pi * dipole @ dipole / (3 * volume)
    errors = []
    for radius in (40.0, 80.0):
        n = int(radius / 8.0) + 2
        shifts = np.array(list(itertools.product(range(-n, n + 1), repeat=3)), float) @ cell
        shifts = shifts[np.linalg.norm(shifts, axis=1) <= radius]
        diff = positions[None, :, None, :] + shifts[None, None, :, :] - positions[:, None, None, :]
        r = np.linalg.norm(diff, axis=-1)
        pair = np.where(r > 1e-9, charges[:, None, None] * charges[None, :, None] / np.where(r > 1e-9, r, 1.0), 0.0)
        errors.append(abs(0.5 * COULOMB_EV_A * pair.sum() - (ewald + surface)))
    assert errors[1] < errors[0] and errors[1] < 2e-3 * abs(ewald), errors


@pytest.mark.parametrize("smearing", [0.0, 1.0])
def test_pme_agrees_with_ewald_to_the_requested_accuracy(smearing):
    positions, charges, cell = _random_cell(2, n=48)
    reference = coulomb(positions, charges, cell, smearing=smearing, accuracy=1e-12, real_cutoff=5.0)
    accuracy = 1e-3
    pme = coulomb(positions, charges, cell, smearing=smearing, accuracy=accuracy, real_cutoff=5.0, method="pme")
    assert abs(pme["energy"] - reference["energy"]) < accuracy * abs(reference["energy"])
    assert np.abs(pme["forces"] - reference["forces"]).max() < 3 * accuracy * np.abs(reference["forces"]).max()
    assert np.abs(pme["stress"] - reference["stress"]).max() < 3 * accuracy * np.abs(reference["stress"]).max()


def test_molecule_direct_sum_matches_numpy_pairs():
    rng = np.random.default_rng(3)
    positions, charges = rng.uniform(0, 6, (7, 3)), rng.normal(size=7)
    out = coulomb(positions, charges, None, smearing=0.4)
    i, j = np.triu_indices(7, 1)
    r = np.linalg.norm(positions[i] - positions[j], axis=1)
    expected = COULOMB_EV_A * np.sum(charges[i] * charges[j] * jax.scipy.special.erf(r / 0.8) / r)
    assert abs(out["energy"] - float(expected)) < 1e-10
    np.testing.assert_allclose(out["stress"], 0.0)


def test_total_charge_is_conserved_for_random_inputs():
    rng = np.random.default_rng(4)
    raw = jnp.asarray(rng.normal(size=13))
    node_graph = jnp.asarray([0] * 4 + [1] * 6 + [2] * 3)  # graph 2: padding
    node_mask = jnp.asarray([True] * 10 + [False] * 3)
    total = jnp.asarray([1.0, -2.0, 0.0])
    q = np.asarray(conserved_charges(raw, node_graph, total, node_mask))
    np.testing.assert_allclose([q[:4].sum(), q[4:10].sum()], [1.0, -2.0], atol=1e-12)
    assert np.all(q[10:] == 0.0)
    np.testing.assert_allclose(np.diff(q[:4] - np.asarray(raw[:4])), 0.0, atol=1e-12)  # spread uniformly


def test_bad_settings_and_unset_grid_are_one_line_errors():
    with pytest.raises(ModelError, match="method"):
        Electrostatics(method="p4m")
    with pytest.raises(ModelError, match="accuracy"):
        Electrostatics(accuracy=2.0)


def _long_range_potential() -> nnpes.Potential:
    model = NequIP(channels=4, l_max=1, num_layers=2, radial_features=(8,), readout_features=4)
    numbers = [1, 6, 8]
    terms = (Electrostatics(smearing=0.5, accuracy=1e-6), ZBL.for_potential(numbers, 3.5, outer_radius=1.2))
    return nnpes.Potential.create(model, numbers, cutoff=3.5, seed=2, scale=0.5, terms=terms).astype(np.float64)


class TestLawsWithLongRangeTerms(PhysicsLaws):
    """Symmetries, derivatives, extensivity, batching and padding with electrostatics and ZBL on;
    cutoff smoothness and locality for the local part (the Coulomb sum is long-range by design)."""

    @pytest.fixture(scope="class")
    @classmethod
    def potential(cls):
        return _long_range_potential()

    @staticmethod
    def _local(potential):
        return potential.replace(terms=tuple(t for t in potential.terms if not isinstance(t, Electrostatics)))

    def test_energy_and_forces_continuous_as_atom_crosses_cutoff(self, potential):
        super().test_energy_and_forces_continuous_as_atom_crosses_cutoff(self._local(potential))

    def test_site_energy_and_force_unaffected_beyond_receptive_field(self, potential):
        super().test_site_energy_and_force_unaffected_beyond_receptive_field(self._local(potential))


def test_charges_are_reported_and_sum_to_the_total_charge():
    pot = _long_range_potential()
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.info["charge"] = -1.0
    atoms.calc = nnpes.Calculator(pot)
    atoms.get_potential_energy()
    charges = atoms.calc.results["charges"]
    assert charges.shape == (9,) and abs(charges.sum() + 1.0) < 1e-5  # float32 calculator


def test_saved_model_keeps_its_terms(tmp_path):
    pot = _long_range_potential()
    pot.save(tmp_path / "model")
    loaded = nnpes.load(tmp_path / "model")
    assert [t.kind for t in loaded.terms] == ["electrostatics", "zbl"]
    assert loaded.terms[0].grid is None and loaded.terms[0].smearing == 0.5
    atoms = ase.build.molecule("CH3CH2OH")
    e1 = nnpes.Calculator(pot).get_potential_energy(atoms)
    e2 = nnpes.Calculator(loaded.astype(np.float64)).get_potential_energy(atoms)
    assert abs(e1 - e2) < 1e-9


def test_ewald_summed_in_blocks_of_k_equals_one_pass(monkeypatch):
    import nnpes.electrostatics as electrostatics

    positions, charges, cell = _random_cell(5)
    whole = coulomb(positions, charges, cell, accuracy=1e-8, real_cutoff=4.0)
    monkeypatch.setattr(electrostatics, "_EWALD_BLOCK_ENTRIES", 24 * 97)  # blocks of 97 k vectors
    blocked = coulomb(positions, charges, cell, accuracy=1e-8, real_cutoff=4.0)
    assert abs(whole["energy"] - blocked["energy"]) < 1e-10
    np.testing.assert_allclose(blocked["forces"], whole["forces"], atol=1e-10)
    np.testing.assert_allclose(blocked["stress"], whole["stress"], atol=1e-12)


def test_training_config_switches_terms_on():
    from nnpes.train.config import load_config

    cfg = load_config(raw={"terms": {"electrostatics": {"smearing": 0.8}, "zbl": {"outer_radius": 1.5}}})
    terms = cfg.terms.build([1, 8], 5.0)
    assert [t.kind for t in terms] == ["electrostatics", "zbl"] and terms[0].smearing == 0.8
    assert load_config(raw={}).terms.build([1, 8], 5.0) == ()


@pytest.fixture(scope="module")
def ionic_box():
    atoms = ase.build.bulk("NaCl", "rocksalt", a=4.2, cubic=True).repeat(2)  # 32 atoms, 8.4 Å
    atoms.numbers = np.where(atoms.numbers == 11, 8, 1)
    atoms.rattle(0.15, seed=3)
    atoms.wrap()
    return atoms


@pytest.mark.parametrize("charge", [0.0, 2.0])
def test_jaxmd_adaptor_equals_calculator_with_ewald_each_step(ionic_box, charge):
    """The jax-md energy function evaluates the reciprocal sum inside jit: energy, forces and
    stress equal the calculator's, also for a charged cell (neutralising background)."""
    from jax_md import quantity, space

    from nnpes.md import energy_neighbor_list

    potential = _long_range_potential()
    atoms = ionic_box.copy()
    atoms.info["charge"] = charge
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    e_ref, f_ref, s_ref = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    side = float(atoms.cell.lengths()[0])
    displacement, _ = space.periodic(side)
    neighbor_fn, energy_fn = energy_neighbor_list(
        potential, displacement, side, atoms.numbers, dr_threshold=0.3, total_charge=charge
    )
    R = jnp.asarray(atoms.positions)
    nbrs = neighbor_fn.allocate(R)
    energy, grad = jax.jit(jax.value_and_grad(energy_fn))(R, nbrs)
    stress = jax.jit(lambda R, n: quantity.stress(energy_fn, R, side, neighbor=n))(R, nbrs)
    assert abs(float(energy) - e_ref) < 1e-9 * abs(e_ref)
    np.testing.assert_allclose(-np.asarray(grad), f_ref, atol=1e-9)
    np.testing.assert_allclose(-np.asarray(stress), s_ref, atol=1e-10)  # jax-md's sign is the opposite


def test_bad_total_charge_in_a_file_is_one_line_naming_the_frame(tmp_path):
    from nnpes.data.io import read_frames
    from nnpes.errors import DataError

    atoms = ase.build.molecule("H2O")
    atoms.info["charge"] = float("nan")
    ase.io.write(tmp_path / "bad.xyz", atoms)
    with pytest.raises(DataError, match=r"bad\.xyz.*info\['charge'\] is nan"):
        read_frames(tmp_path / "bad.xyz")


def test_dipole_label_enters_the_loss_only_with_latent_charges():
    from nnpes.data.graph import batch_graphs, frame_to_graph
    from nnpes.data.io import frame_from_atoms
    from nnpes.errors import ConfigError
    from nnpes.physics import energy_forces_stress
    from nnpes.train.config import load_config
    from nnpes.train.loss import error_sums

    with pytest.raises(ConfigError, match="dipole_weight needs terms.electrostatics"):
        load_config(raw={"loss": {"dipole_weight": 1.0}})
    pot = _long_range_potential()
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.info["REF_dipole"] = [0.1, 0.2, 0.3]
    frame = frame_from_atoms(atoms, dipole_key="REF_dipole")
    batch = batch_graphs([frame_to_graph(frame, pot.cutoff, pot.atomic_numbers)], dtype=np.float64)
    out = energy_forces_stress(pot.for_structures([frame]), batch, compute_stress=False)
    expected = np.asarray(out["charges"][:9]) @ atoms.positions
    np.testing.assert_allclose(out["dipole"][0], expected, atol=1e-10)
    sums = error_sums(out, batch)
    assert float(sums["dipole_count"]) == 3.0
    assert abs(float(sums["dipole"]) - float(np.sum((expected - [0.1, 0.2, 0.3]) ** 2))) < 1e-10


def test_nve_with_ewald_every_step_conserves_energy(ionic_box):
    """jax-md NVE of a charged periodic box (neutralising background): the reciprocal sum runs
    inside the jitted step and the total energy stays put."""
    from nnpes.md import MDOptions, run_md

    atoms = ionic_box.copy()
    atoms.info["charge"] = 2.0
    # a random model is far from equilibrium here: it heats up, so the guard's limit is lifted
    options = MDOptions(
        ensemble="nve", dt_fs=0.1, temperature_k=300.0, dtype="float64", every=10, max_temperature_k=1e6
    )
    result = run_md(_long_range_potential(), atoms, 400, options)
    assert abs(result.drift_mev_per_atom_per_ps()) < 0.5, result.drift_mev_per_atom_per_ps()
    assert np.ptp(result.etot) / len(atoms) < 1e-3
