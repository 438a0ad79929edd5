"""The ZBL screened nuclear repulsion term (nnpes/zbl.py): published values, the C² switch,
forces and stress as derivatives of the energy, symmetries, padding, save/load.

Every potential here uses the cheap pair model of tests/helpers.py for its network, with and
without the term; compiled functions are shared through module-scoped fixtures.
"""

from __future__ import annotations

import json
import math

import ase
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PairModel

import nnpes
from nnpes.data.graph import batch_graphs, pad_sizes
from nnpes.data.neighbors import neighbor_list
from nnpes.errors import ModelError
from nnpes.physics import energy_forces_stress, evaluate
from nnpes.terms import TERM_KINDS, TermInputs
from nnpes.testing.systems import assert_close, fd_forces, fd_stress, graphs_of, predict, transformed
from nnpes.zbl import PHI_COEFFICIENTS, ZBL, screening_function, screening_length, smooth_switch, zbl_pair_energy

pytestmark = pytest.mark.usefixtures("debug_nans")

SPECIES = (1, 8, 14)  # H, O, Si
CUTOFF = 3.0  # Å
R_ON, R_OFF = 1.0, 2.5  # Å, the test term's switching radii


# -- structures and potentials ---------------------------------------------------------------
def _cluster(seed: int = 0) -> ase.Atoms:
    """Seven atoms of H, O and Si packed closely (0.75 Å ≤ r ≤ 2.4 Å): strong ZBL forces."""
    rng = np.random.default_rng(seed)
    positions = [np.zeros(3)]
    while len(positions) < 7:
        p = rng.uniform(-1.2, 1.2, 3)
        if min(np.linalg.norm(p - q) for q in positions) > 0.75:
            positions.append(p)
    return ase.Atoms(numbers=[14, 8, 1, 1, 8, 14, 1], positions=positions)


def _cell() -> ase.Atoms:
    """A triclinic, rattled 3-atom cell of edge ≈ 2.9 Å: pairs cross the periodic boundary."""
    cell = np.array([[2.9, 0.0, 0.0], [0.25, 2.8, 0.0], [0.1, -0.2, 3.0]])
    frac = np.array([[0.0, 0.0, 0.0], [0.45, 0.4, 0.5], [0.1, 0.55, 0.3]])
    atoms = ase.Atoms(numbers=[14, 8, 1], scaled_positions=frac, cell=cell, pbc=True)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture(scope="module")
def term() -> ZBL:
    return ZBL.for_potential(SPECIES, CUTOFF, outer_radius=R_OFF, inner_radius=R_ON)


@pytest.fixture(scope="module")
def potentials(term):
    """(network only, network + ZBL), float64."""
    plain = nnpes.Potential.create(PairModel(), SPECIES, CUTOFF, seed=1, scale=0.5).astype(np.float64)
    return plain, plain.replace(terms=(term,))


def _direct_zbl_energy(atoms: ase.Atoms) -> float:
    """Σ over pairs (each once) of E_pair(r) s(r), by a numpy sum over the neighbour list."""
    nl = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, CUTOFF)
    vec = atoms.positions[nl.senders] - atoms.positions[nl.receivers] + nl.shifts @ atoms.cell[:]
    r = np.linalg.norm(vec, axis=1)
    z_i, z_j = atoms.numbers[nl.receivers], atoms.numbers[nl.senders]
    pair = np.asarray(zbl_pair_energy(r, z_i, z_j)) * np.asarray(smooth_switch(r, R_ON, R_OFF))
    return 0.5 * float(pair.sum())  # the list holds both directions


# -- published and hand-computed values ------------------------------------------------------
def test_screening_function_is_one_at_zero_so_short_range_limit_is_bare_coulomb():
    """φ(0) = Σ c_k = 1 (ZBL 1985, ch. 2): r·E_pair / (k_e Z_i Z_j) → 1 as r → 0."""
    assert math.isclose(sum(PHI_COEFFICIENTS), 1.0, abs_tol=1e-12)
    assert float(screening_function(0.0)) == pytest.approx(1.0, abs=1e-12)
    r = 1e-7
    assert float(r * zbl_pair_energy(r, 14, 8) / (14.3996454784 * 14 * 8)) == pytest.approx(1.0, abs=1e-5)


def test_copper_screening_length_and_energy_scale_match_published_values():
    """Published: for Cu–Cu (Z = 29) a = 0.1080 Å and k_e Z²/a = 1.122e5 eV, to the digits given
    in the gamdpy documentation of ``universal_zbl_potential`` (which cites ZBL 1985)."""
    a = float(screening_length(29, 29))
    assert round(a, 4) == 0.1080
    assert round(14.3996454784 * 29 * 29 / a, -2) == 1.122e5


def test_pair_energy_and_force_match_an_independent_implementation():
    """Reference numbers from the unit test of hiphive's ZBL calculator (hiphive.calculators.zbl,
    a separate code): Ca–N energies and Na–Ar forces at three distances. The small relative
    difference (≈ 5e-8) is within the digits of their k_e."""
    r = np.array([0.5, 1.5, 5.5])
    np.testing.assert_allclose(zbl_pair_energy(r, 20, 7), [3.55213849e02, 7.66068060e00, 2.28682878e-03], rtol=2e-7)
    r = np.array([0.65, 1.85, 5.2])
    force = -jax.vmap(jax.grad(lambda x: zbl_pair_energy(x, 11, 18)))(r)
    np.testing.assert_allclose(force, [1.03953423e03, 9.51917619e00, 7.31075639e-03], rtol=2e-7)


def test_silicon_pair_energy_at_one_angstrom_matches_hand_computation():
    """Si–Si (Z = 14) at r = 1 Å, written out from the formula (math module, not the code):
    a = 0.46850 / (2 · 14^0.23) = 0.1276645 Å, x = r/a = 7.833031,
    φ(x) = 0.18175 e^{−3.1998x} + 0.50986 e^{−0.94229x} + 0.28022 e^{−0.4029x} + 0.02817 e^{−0.20162x}
         = 0.01806109, E = 14.3996454784 · 196 / 1 · φ = 50.97436 eV."""
    a = 0.46850 / (2 * 14**0.23)
    x = 1.0 / a
    phi = sum(
        c * math.exp(-b * x) for c, b in [(0.18175, 3.1998), (0.50986, 0.94229), (0.28022, 0.4029), (0.02817, 0.20162)]
    )
    assert a == pytest.approx(0.1276645, rel=1e-6) and phi == pytest.approx(0.01806109, rel=1e-6)
    assert float(zbl_pair_energy(1.0, 14, 14)) == pytest.approx(50.97436, rel=1e-6)
    assert float(zbl_pair_energy(1.0, 14, 14)) == pytest.approx(14.3996454784 * 196 * phi, rel=1e-12)


# -- the switch: exactly 0 beyond r_off, C² at both ends -------------------------------------
@pytest.fixture(scope="module")
def dimer():
    """(E, dE/dr, d²E/dr²) of an O–Si dimer at distance r under the test term, float64, jitted."""
    t = ZBL.for_potential(SPECIES, CUTOFF, outer_radius=R_OFF, inner_radius=R_ON)

    def energy(r):
        vectors = jnp.stack([jnp.array([1.0, 0.0, 0.0]) * r, jnp.array([-1.0, 0.0, 0.0]) * r])
        inputs = TermInputs(vectors, jnp.ones(2, bool), jnp.array([1, 2]), jnp.array([1, 0]), jnp.array([0, 1]))
        return jnp.sum(t.site_energies(inputs))

    fns = jax.jit(lambda r: (energy(r), jax.grad(energy)(r), jax.grad(jax.grad(energy))(r)))
    return lambda r: np.array(fns(jnp.float64(r)))


@pytest.fixture(scope="module")
def bare():
    """(E, dE/dr, d²E/dr²) of the unswitched O–Si pair energy."""
    e = lambda r: zbl_pair_energy(r, 8, 14)  # noqa: E731
    fns = jax.jit(lambda r: (e(r), jax.grad(e)(r), jax.grad(jax.grad(e))(r)))
    return lambda r: np.array(fns(jnp.float64(r)))


def test_energy_and_derivatives_are_exactly_zero_at_and_beyond_outer_radius(dimer):
    for r in (R_OFF, R_OFF + 1e-12, R_OFF + 1e-3, CUTOFF - 0.01):
        assert np.all(dimer(r) == 0.0), f"E, E', E'' at r = {r}: {dimer(r)}"


def test_energy_force_and_curvature_vanish_continuously_at_outer_radius(dimer):
    """Below r_off the gaps of E, E′, E″ shrink as δ³, δ², δ: the switch is C² there."""
    values = {d: np.abs(dimer(R_OFF - d)) for d in (1e-2, 1e-3, 1e-4)}
    assert np.all(values[1e-2] > 0), "the term vanishes before r_off: the test would be vacuous"
    for big, small in ((1e-2, 1e-3), (1e-3, 1e-4)):
        ratio = values[small] / values[big]
        np.testing.assert_allclose(ratio, [1e-3, 1e-2, 1e-1], rtol=0.2, err_msg="orders of E, E', E'' at r_off")


def test_switched_energy_joins_the_bare_zbl_energy_c2_at_inner_radius(dimer, bare):
    """Up to r_on the term is the bare ZBL energy; just above it E, E′, E″ depart as δ³, δ², δ."""
    for r in (0.3, 0.7, R_ON - 1e-9, R_ON):
        np.testing.assert_allclose(dimer(r), bare(r), rtol=1e-13, err_msg=f"r = {r}")
    gaps = {d: np.abs(dimer(R_ON + d) - bare(R_ON + d)) for d in (1e-2, 1e-3, 1e-4)}
    for big, small in ((1e-2, 1e-3), (1e-3, 1e-4)):
        np.testing.assert_allclose(gaps[small] / gaps[big], [1e-3, 1e-2, 1e-1], rtol=0.2, err_msg="orders at r_on")
    below, above = dimer(R_ON - 1e-7), dimer(R_ON + 1e-7)
    np.testing.assert_allclose(above, below, rtol=1e-5, err_msg="E, E', E'' jump at r_on")


# -- the term inside a potential: its energy, derivatives, symmetries ------------------------
@pytest.mark.parametrize("make", [_cluster, _cell], ids=["cluster", "periodic"])
def test_total_energy_is_network_plus_zbl_pair_sum(potentials, make):
    plain, with_zbl = potentials
    atoms = make()
    extra = _direct_zbl_energy(atoms)
    assert extra > 1.0, "ZBL contributes nothing: the test would be vacuous"
    assert_close(predict(with_zbl, atoms).energy, predict(plain, atoms).energy + extra, 1e-9, "energy")


def test_forces_equal_minus_energy_gradient_fd(potentials):
    _, with_zbl = potentials
    atoms = _cluster()
    forces = predict(with_zbl, atoms).forces
    assert np.abs(forces).max() > 1.0
    np.testing.assert_allclose(forces, fd_forces(with_zbl, atoms, 1e-5), rtol=1e-6, atol=1e-6)


def test_stress_equals_strain_derivative_of_energy_fd(potentials):
    _, with_zbl = potentials
    atoms = _cell()
    atoms.calc = nnpes.Calculator(with_zbl, dtype="float64")
    stress = atoms.get_stress(voigt=False)
    assert np.abs(stress).max() > 1e-2
    np.testing.assert_allclose(stress, fd_stress(atoms, 1e-5), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [_cluster, _cell], ids=["cluster", "periodic"])
def test_energy_invariant_under_rotation_inversion_translation_and_permutation(potentials, make):
    _, with_zbl = potentials
    atoms = make()
    ref = predict(with_zbl, atoms)
    q, r = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))
    rot = q * np.sign(np.diag(r))
    for op in (rot, -np.eye(3)):
        out = predict(with_zbl, transformed(atoms, op))
        assert_close(out.energy, ref.energy, 1e-10, "energy under O(3)")
        assert_close(out.forces, ref.forces @ op.T, 1e-9, "forces under O(3)")
    moved = atoms.copy()
    moved.translate([0.7, -1.3, 2.1])
    if atoms.pbc.all():
        moved.wrap()
    out = predict(with_zbl, moved)
    assert_close(out.energy, ref.energy, 1e-10, "energy under translation")
    assert_close(out.forces, ref.forces, 1e-9, "forces under translation")
    perm = np.random.default_rng(3).permutation(len(atoms))
    out = predict(with_zbl, atoms[perm])
    assert_close(out.energy, ref.energy, 1e-10, "energy under permutation")
    assert_close(out.forces, ref.forces[perm], 1e-9, "forces under permutation")
    assert_close(ref.forces.sum(axis=0), np.zeros(3), 1e-9, "net force")


def test_padding_gives_same_numbers_and_no_nan_in_second_derivatives(potentials):
    """Generous padding (zero-length padding edges) changes nothing, and differentiating the
    forces once more (as a force loss does) produces no NaN (jax_debug_nans is on)."""
    _, with_zbl = potentials
    structures = [_cluster(), _cell()]
    graphs = graphs_of(with_zbl, structures)
    n_node, n_edge, n_graph = pad_sizes(graphs)
    batch = batch_graphs(graphs, n_node + 5, n_edge + 30, n_graph + 2, dtype=np.float64)
    out = jax.device_get(evaluate(with_zbl, batch, compute_stress=True))
    for g, atoms in enumerate(structures):
        assert_close(out["energy"][g], predict(with_zbl, atoms).energy, 1e-10, f"energy of graph {g}")

    def force_loss(positions, graph):  # the graph is an argument: jraph's padding masks need arrays
        graph = graph._replace(nodes={**graph.nodes, "positions": positions})
        return jnp.sum(energy_forces_stress(with_zbl, graph)["forces"] ** 2)

    grad = jax.jit(jax.grad(force_loss))(batch.nodes["positions"], batch)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_float32_inputs_give_float32_site_energies(term):
    vectors = np.array([[1.2, 0.0, 0.0], [-1.2, 0.0, 0.0], [0.0, 0.5, 0.0]])
    args = (jnp.array([True, True, False]), jnp.array([0, 2]), jnp.array([1, 0, 0]), jnp.array([0, 1, 0]))
    e32 = term.site_energies(TermInputs(jnp.asarray(vectors, jnp.float32), *args))
    e64 = term.site_energies(TermInputs(jnp.asarray(vectors, jnp.float64), *args))
    assert e32.dtype == jnp.float32
    np.testing.assert_allclose(e32, e64, rtol=1e-5)
    assert float(e64[0]) == pytest.approx(0.5 * float(zbl_pair_energy(1.2, 1, 14) * smooth_switch(1.2, R_ON, R_OFF)))


# -- saving, loading, validation -------------------------------------------------------------
def test_saved_model_records_the_term_and_loads_it(potentials, tmp_path):
    _, with_zbl = potentials
    with_zbl.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "potential.json").read_text())
    assert meta["terms"] == [{"kind": "zbl", "atomic_numbers": [1, 8, 14], "inner_radius": R_ON, "outer_radius": R_OFF}]
    loaded = nnpes.load(tmp_path / "model").astype(np.float64)
    assert loaded.terms == with_zbl.terms and TERM_KINDS["zbl"] is ZBL
    atoms = _cluster()
    assert_close(predict(loaded, atoms).energy, predict(with_zbl, atoms).energy, 1e-10, "energy after load")


def test_json_round_trip_and_defaults():
    t = ZBL.for_potential(np.array([14, 1, 8, 8]))
    assert t.atomic_numbers == (1, 8, 14) and (t.inner_radius, t.outer_radius) == (1.0, 2.0)
    data = json.loads(json.dumps(t.to_json()))
    assert ZBL.from_json(data) == t and hash(ZBL.from_json(data)) == hash(t)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"outer_radius": 2.0, "inner_radius": 2.0}, "inner_radius < outer_radius"),
        ({"outer_radius": 2.0, "inner_radius": -0.1}, "0 <= inner_radius"),
        ({"outer_radius": 3.5}, "exceeds the potential's cutoff 3.0"),
    ],
)
def test_bad_radii_are_one_line_model_errors(kwargs, message):
    with pytest.raises(ModelError, match=message) as err:
        ZBL.for_potential(SPECIES, CUTOFF, **kwargs)
    assert "\n" not in str(err.value)


def test_unsorted_species_table_or_unknown_key_is_a_model_error():
    with pytest.raises(ModelError, match="sorted species table"):
        ZBL(atomic_numbers=(8, 1))
    with pytest.raises(ModelError, match="unknown keys"):
        ZBL.from_json({"atomic_numbers": [1], "outer_radius": 2.0, "cutoff": 3.0})
