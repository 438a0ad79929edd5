"""Physical laws that energies, forces and stresses obey, for every model family.

Property tests run in float64 on tiny random-weight potentials (tests/families.py), one per
family, shared by the whole module so each padded shape compiles once. Every comparison uses
absolute differences against a tolerance, and the test structures are checked to give non-zero
forces, stresses and interactions, so that no law is satisfied vacuously.
"""

from __future__ import annotations

import dataclasses

import ase
import ase.build
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from families import TINY_CUTOFF, TINY_MODELS, message_passing_hops

import nnpes
from nnpes.data.graph import batch_graphs, frame_to_graph, pad_sizes
from nnpes.data.io import frame_from_atoms
from nnpes.errors import ModelError
from nnpes.models import FAMILIES, NequIP
from nnpes.physics import TRACE_COUNT, energy_forces_stress, evaluate

pytestmark = pytest.mark.usefixtures("debug_nans")

SPECIES = (1, 6, 8, 29)
E0 = {1: -1.5, 6: -2.0, 8: -3.0, 29: -4.0}  # eV; non-zero so reference energies are exercised
SYSTEMS = ("molecule", "crystal")


# -- potentials and structures -----------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def potential(request) -> nnpes.Potential:
    """A tiny float64 potential for H, C, O and Cu, one per family."""
    model = TINY_MODELS[request.param]()
    pot = nnpes.Potential.create(model, SPECIES, TINY_CUTOFF, seed=1, e0=E0, scale=0.5, avg_num_neighbors=6.0)
    return pot.astype(np.float64)


def ethanol(seed: int = 0) -> ase.Atoms:
    """Ethanol, rattled so that no symmetry makes forces vanish."""
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=seed)
    return atoms


def crystal(seed: int = 1) -> ase.Atoms:
    """A sheared, rattled 4-atom fcc cube, 3 Cu + 1 O: edge 3.6 Å < 2·r_c, triclinic, two species."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[0] = 8
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.3
    cell[2, 1] -= 0.2
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def make(system: str) -> ase.Atoms:
    return {"molecule": ethanol, "crystal": crystal}[system]()


@dataclasses.dataclass
class Prediction:
    energy: float
    forces: np.ndarray
    sites: np.ndarray
    stress: np.ndarray | None


# Every small test structure (ethanol: 9 atoms, 58 edges; 4-atom cells: 48 edges) is padded to
# one shape, so that all of them share a single compilation per family.
SMALL_PADDING = (16, 64, 2)


def predict(potential: nnpes.Potential, atoms: ase.Atoms) -> Prediction:
    """Energy (eV), forces (eV/Å), site energies and, for 3-D periodic cells, stress (eV/Å³)."""
    graph = frame_to_graph(frame_from_atoms(atoms), potential.cutoff, potential.atomic_numbers)
    sizes = pad_sizes([graph])
    if sizes[0] <= SMALL_PADDING[0] and sizes[1] <= SMALL_PADDING[1]:
        sizes = SMALL_PADDING
    out = jax.device_get(evaluate(potential, batch_graphs([graph], *sizes, dtype=np.float64), compute_stress=True))
    periodic = bool(np.all(atoms.pbc))
    n = len(atoms)
    return Prediction(float(out["energy"][0]), out["forces"][:n], out["site_energies"][:n],
                      out["stress"][0] if periodic else None)


def transformed(atoms: ase.Atoms, q: np.ndarray) -> ase.Atoms:
    """Atoms (and cell) mapped by the orthogonal matrix q: r → q r."""
    new = atoms.copy()
    new.positions = atoms.positions @ q.T
    if atoms.pbc.any():
        new.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    return new


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def assert_close(actual, expected, atol, what=""):
    diff = np.max(np.abs(np.asarray(actual) - np.asarray(expected)))
    assert diff <= atol, f"{what}: max |difference| {diff:.3e} > {atol:.1e}"


def test_every_family_has_a_tiny_model():
    assert set(TINY_MODELS) == set(FAMILIES), "add a line to tests/families.py for every family in FAMILIES"


# -- symmetries ------------------------------------------------------------------------------
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("operation", ["rotation", "inversion", "reflection"])
def test_energy_invariant_forces_and_stress_equivariant_under_o3(potential, system, operation):
    atoms = make(system)
    ref = predict(potential, atoms)
    assert np.abs(ref.forces).max() > 1e-3, "forces vanish: the test would be vacuous"
    rng = np.random.default_rng(7)
    for _ in range(2):
        rot = random_rotation(rng)
        q = {"rotation": rot, "inversion": -np.eye(3), "reflection": rot @ np.diag([1.0, 1.0, -1.0])}[operation]
        out = predict(potential, transformed(atoms, q))
        assert_close(out.energy, ref.energy, 1e-10, "energy")
        assert_close(out.forces, ref.forces @ q.T, 1e-10, "forces")
        assert_close(out.sites, ref.sites, 1e-10, "site energies")
        if ref.stress is not None:
            assert_close(out.stress, q @ ref.stress @ q.T, 1e-10, "stress")


@pytest.mark.parametrize("system", SYSTEMS)
def test_energy_and_forces_invariant_under_translation(potential, system):
    atoms = make(system)
    ref = predict(potential, atoms)
    moved = atoms.copy()
    moved.translate([1.7, -2.3, 0.9])
    if atoms.pbc.all():
        moved.wrap()  # atoms cross the cell boundary: the integer shifts must compensate
        assert not np.allclose(moved.positions, atoms.positions + [1.7, -2.3, 0.9])
    out = predict(potential, moved)
    assert_close(out.energy, ref.energy, 1e-10, "energy")
    assert_close(out.forces, ref.forces, 1e-10, "forces")
    if ref.stress is not None:
        assert_close(out.stress, ref.stress, 1e-10, "stress")


@pytest.mark.parametrize("system", SYSTEMS)
def test_energy_invariant_and_forces_permute_under_atom_permutation(potential, system):
    atoms = make(system)
    ref = predict(potential, atoms)
    perm = np.random.default_rng(3).permutation(len(atoms))
    assert np.any(perm != np.arange(len(atoms)))
    out = predict(potential, atoms[perm])
    assert_close(out.energy, ref.energy, 1e-10, "energy")
    assert_close(out.forces, ref.forces[perm], 1e-10, "forces")
    assert_close(out.sites, ref.sites[perm], 1e-10, "site energies")


def test_swapping_like_atoms_leaves_energy_unchanged(potential):
    atoms = ethanol()
    hydrogens = np.flatnonzero(atoms.numbers == 1)
    swapped = atoms.copy()
    swapped.positions[[hydrogens[0], hydrogens[3]]] = atoms.positions[[hydrogens[3], hydrogens[0]]]
    ref, out = predict(potential, atoms), predict(potential, swapped)
    assert_close(out.energy, ref.energy, 1e-10, "energy")
    assert_close(out.forces[hydrogens[0]], ref.forces[hydrogens[3]], 1e-10, "force on swapped H")


@pytest.mark.parametrize("system", SYSTEMS)
def test_forces_sum_to_zero(potential, system):
    """Translation invariance ⇒ Newton's third law: the net force vanishes."""
    forces = predict(potential, make(system)).forces
    assert np.abs(forces).max() > 1e-3
    assert_close(forces.sum(axis=0), np.zeros(3), 1e-10, "net force")


# -- derivatives -----------------------------------------------------------------------------
@pytest.mark.parametrize("system", SYSTEMS)
def test_forces_equal_minus_energy_gradient_fd(potential, system):
    atoms = make(system)
    ref = predict(potential, atoms)
    h = 1e-5
    fd = np.zeros_like(ref.forces)
    for i in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.positions[i, k] += sign * h
                energies.append(predict(potential, displaced).energy)
            fd[i, k] = -(energies[0] - energies[1]) / (2 * h)
    assert np.abs(ref.forces).max() > 1e-3
    assert_close(ref.forces, fd, 1e-6, "forces vs −dE/dR (central differences)")


def test_stress_equals_strain_derivative_of_energy_fd(potential):
    """σ_ij = (1/V) ∂E/∂ε_ij, ASE sign (positive = tensile), from the calculator."""
    atoms = crystal()
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    stress = atoms.get_stress(voigt=False)
    volume = atoms.get_volume()
    cell, positions = atoms.cell.array.copy(), atoms.positions.copy()
    h = 1e-5
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            energies = []
            for sign in (1, -1):
                deformation = np.eye(3)
                deformation[i, j] += sign * h
                strained = atoms.copy()
                strained.calc = atoms.calc
                strained.set_cell(cell @ deformation, scale_atoms=False)
                strained.positions = positions @ deformation
                energies.append(strained.get_potential_energy())
            fd[i, j] = (energies[0] - energies[1]) / (2 * h * volume)
    assert np.abs(stress).max() > 1e-4
    assert_close(stress, fd, 1e-7, "stress vs (E(+ε) − E(−ε)) / (2 h V)")


def test_supercell_energy_is_extensive_with_periodic_forces_and_equal_stress(potential):
    unit = crystal()
    assert np.min(unit.cell.cellpar()[:3]) < 2 * potential.cutoff  # a cell smaller than 2·r_c
    supercell = unit * (2, 2, 2)
    small, big = predict(potential, unit), predict(potential, supercell)
    assert_close(big.energy, 8 * small.energy, 1e-9, "supercell energy vs 8 × unit cell")
    assert_close(big.forces, np.tile(small.forces, (8, 1)), 1e-10, "supercell forces vs unit-cell forces")
    assert_close(big.stress, small.stress, 1e-10, "supercell stress vs unit-cell stress")


def test_primitive_and_conventional_fcc_cells_agree_per_atom(potential):
    """A 1-atom cell of edge 2.55 Å (≪ r_c: an atom neighbours its own images) vs the cube."""
    primitive = ase.build.bulk("Cu", "fcc", a=3.6)
    cube = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    p, c = predict(potential, primitive), predict(potential, cube)
    assert abs(p.energy - sum(E0[29] for _ in primitive)) > 1e-4  # images do interact
    assert_close(p.energy, c.energy / len(cube), 1e-10, "energy per atom")
    assert_close(p.stress, c.stress, 1e-10, "stress")
    assert_close(c.forces, np.zeros_like(c.forces), 1e-10, "forces in a perfect fcc lattice")


# -- smoothness and locality -----------------------------------------------------------------
def trimer(distance: float) -> ase.Atoms:
    """C–O bonded along x; an H on the far side of O at `distance` from O (farther from C)."""
    direction = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    return ase.Atoms("COH", positions=[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [1.2, 0.0, 0.0] + distance * direction])


def test_energy_and_forces_continuous_as_atom_crosses_cutoff(potential):
    rc = potential.cutoff
    outside = predict(potential, trimer(rc + 1e-6))
    far = predict(potential, trimer(rc + 2.0))
    assert_close(outside.energy, far.energy, 1e-12, "energy just beyond r_c vs far away")
    assert_close(outside.forces[2], np.zeros(3), 0.0, "force on an atom beyond r_c")
    inside = predict(potential, trimer(rc - 0.5))
    assert abs(inside.energy - outside.energy) > 1e-5, "the H does not interact: the test would be vacuous"
    gaps = []
    for delta in (1e-2, 1e-3, 1e-4):
        near = predict(potential, trimer(rc - delta))
        gaps.append((abs(near.energy - outside.energy), np.abs(near.forces - outside.forces).max()))
    (e2, f2), (e3, f3), (e4, f4) = gaps
    assert e3 < 1e-7 and f3 < 1e-5, f"energy/force jumps at r_c: {gaps}"
    assert e4 < e3 < e2 and f4 < f3 < f2, f"energy/force gaps do not shrink as δ → 0: {gaps}"


def test_site_energy_and_force_unaffected_beyond_receptive_field(potential):
    """Along a chain (spacing 0.9 r_c, each atom bonds only to its neighbours), atom 0's site
    energy sees exactly hops·r_c, and its force 2·hops·r_c."""
    hops = message_passing_hops(potential.model)
    spacing = 0.9 * potential.cutoff
    n = int(2 * hops / 0.9) + 3
    rng = np.random.default_rng(5)
    base = np.column_stack([spacing * np.arange(n), 0.1 * rng.normal(size=n), 0.1 * rng.normal(size=n)])
    chain = ase.Atoms(numbers=[6] * n, positions=base)
    ref = predict(potential, chain)
    distance = np.linalg.norm(base - base[0], axis=1)
    margin = 0.3

    for k in range(1, n):
        moved = chain.copy()
        moved.positions[k] += rng.normal(scale=0.05, size=3)
        out = predict(potential, moved)
        assert abs(out.energy - ref.energy) > 1e-9, f"moving atom {k} changes nothing at all"
        d_site = abs(out.sites[0] - ref.sites[0])
        d_force = np.abs(out.forces[0] - ref.forces[0]).max()
        if distance[k] > hops * potential.cutoff + margin:
            assert d_site == 0.0, f"atom {k} at {distance[k]:.2f} Å changes site energy 0 by {d_site:.2e}"
        elif k <= hops:  # reachable in k hops, each shorter than r_c
            assert d_site > 1e-9, f"atom {k} ({k} hops) does not reach site 0"
        if distance[k] > 2 * hops * potential.cutoff + margin:
            assert d_force == 0.0, f"atom {k} at {distance[k]:.2f} Å changes the force on atom 0 by {d_force:.2e}"


# -- batching, padding, compilation ----------------------------------------------------------
def _graphs(potential, structures):
    return [frame_to_graph(frame_from_atoms(a), potential.cutoff, potential.atomic_numbers) for a in structures]


@pytest.mark.parametrize("padding", ["tight", "generous"])
def test_batch_gives_same_results_as_each_graph_alone(potential, padding):
    structures = [ethanol(), crystal(), trimer(1.1), crystal(seed=4)]
    singles = [predict(potential, a) for a in structures]
    graphs = _graphs(potential, structures)
    n_node, n_edge, n_graph = pad_sizes(graphs)
    if padding == "generous":  # extra empty graphs before the padding graph, many padding edges
        n_node, n_edge, n_graph = n_node + 37, n_edge + 101, n_graph + 3
    batch = batch_graphs(graphs, n_node, n_edge, n_graph, dtype=np.float64)
    out = jax.device_get(evaluate(potential, batch, compute_stress=True))
    start = 0
    for g, (atoms, single) in enumerate(zip(structures, singles)):
        n = len(atoms)
        assert_close(out["energy"][g], single.energy, 1e-10, f"energy of graph {g}")
        assert_close(out["forces"][start:start + n], single.forces, 1e-10, f"forces of graph {g}")
        assert_close(out["site_energies"][start:start + n], single.sites, 1e-10, f"site energies of graph {g}")
        expected_stress = single.stress if single.stress is not None else np.zeros((3, 3))
        assert_close(out["stress"][g], expected_stress, 1e-10, f"stress of graph {g}")
        start += n
    assert np.all(out["energy"][len(structures):] == 0.0), "padding graphs carry energy"
    assert np.all(out["forces"][start:] == 0.0), "padding nodes carry forces"
    assert np.all(out["stress"][len(structures):] == 0.0), "padding graphs carry stress"


def test_padding_never_produces_nan_in_gradients(potential):
    """Parameter gradients of a force-and-stress loss (second derivatives through the padding
    edges, which are zero vectors) are finite; jax_debug_nans is on as well."""
    graphs = _graphs(potential, [crystal(), trimer(1.1)])
    n_node, n_edge, n_graph = pad_sizes(graphs)
    batch = batch_graphs(graphs, n_node + 5, n_edge + 20, n_graph + 1, dtype=np.float64)

    def loss(params, graph):
        out = energy_forces_stress(potential.replace(params=params), graph, compute_stress=True)
        return jnp.sum(out["energy"] ** 2) + jnp.sum(out["forces"] ** 2) + jnp.sum(out["stress"] ** 2)

    grads = jax.jit(jax.grad(loss))(potential.params, batch)
    leaves = [np.asarray(x) for x in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(x)) for x in leaves)
    assert max(np.abs(x).max() for x in leaves) > 0


def test_compile_count_does_not_grow_within_a_bucket(potential):
    molecules = [ethanol(seed) for seed in range(5)]
    cells = [crystal(seed) for seed in range(5)]
    calc = nnpes.Calculator(potential, dtype="float64")
    assert len({pad_sizes(_graphs(potential, [a])) for a in cells}) == 1, "test cells fall in different buckets"
    predict(potential, molecules[0])
    cells[0].calc = calc
    cells[0].get_forces()
    before = TRACE_COUNT["energy_forces_stress"]
    for atoms in molecules[1:]:
        predict(potential, atoms)
    for atoms in cells[1:]:
        atoms.calc = calc
        atoms.get_forces()
    assert TRACE_COUNT["energy_forces_stress"] == before


# -- the ASE calculator --------------------------------------------------------------------------
def test_calculator_float32_agrees_with_float64(potential):
    atoms = crystal()
    results = {}
    for dtype in ("float32", "float64"):
        atoms.calc = nnpes.Calculator(potential, dtype=dtype)
        results[dtype] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    (e32, f32, s32), (e64, f64, s64) = results["float32"], results["float64"]
    assert_close(e32, e64, 1e-5 * max(1.0, abs(e64)), "energy")
    assert_close(f32, f64, 1e-5 * max(1.0, np.abs(f64).max()), "forces")
    assert_close(s32, s64, 1e-6, "stress")


def test_calculator_site_energies_sum_to_energy(potential):
    atoms = crystal()
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    assert_close(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), 1e-10, "Σ site energies")


def test_calculator_refuses_stress_of_a_molecule(potential):
    atoms = ethanol()
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


# -- acceptance: default NequIP with random weights ----------------------------------------------
# The default model is large for this test machine (≈ 30 s to initialise and compile each).
@pytest.mark.slow
def test_default_nequip_gives_finite_energy_and_forces_for_ethanol():
    potential = nnpes.Potential.create(NequIP(), [1, 6, 8], cutoff=5.0, avg_num_neighbors=8.0)
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.calc = nnpes.Calculator(potential)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(energy)
    assert forces.shape == (9, 3) and np.all(np.isfinite(forces))
    assert np.abs(forces).max() > 0


@pytest.mark.slow
def test_default_nequip_gives_finite_energy_forces_stress_for_copper():
    potential = nnpes.Potential.create(NequIP(), [29], cutoff=5.0, avg_num_neighbors=40.0)
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.calc = nnpes.Calculator(potential)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert np.isfinite(energy) and np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))
    assert forces.shape == (32, 3) and stress.shape == (6,)
    # perfect fcc: forces vanish by symmetry and the stress is isotropic
    assert np.abs(forces).max() < 1e-3
    assert np.abs(stress[3:]).max() < 1e-5 and np.ptp(stress[:3]) < 1e-5


def test_hco_potential_refuses_copper_in_one_line_naming_the_element():
    potential = nnpes.Potential.create(TINY_MODELS["nequip"](), [1, 6, 8], cutoff=TINY_CUTOFF)
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = nnpes.Calculator(potential)
    with pytest.raises(ModelError) as err:
        atoms.get_potential_energy()
    message = str(err.value)
    assert "\n" not in message and "Cu" in message
