"""Physical laws every interatomic potential must obey, as a reusable pytest class.

:class:`PhysicsLaws` holds one ``test_*`` method per law (symmetries, forces and stress as
derivatives of the energy, extensivity, smoothness at the cutoff, locality, batching and
padding, compilation count). Subclass it in a test file and provide a ``potential`` fixture::

    import jax, numpy as np, pytest
    import nnpes
    from nnpes.testing import PhysicsLaws
    jax.config.update("jax_enable_x64", True)  # before any JAX array exists (or in conftest.py)

    class TestMyModel(PhysicsLaws):
        @pytest.fixture(scope="class")
        @classmethod
        def potential(cls):
            pot = nnpes.Potential.create(MyModel(), [1, 6, 8], cutoff=4.0, seed=1, scale=0.5)
            return pot.astype(np.float64)

Requirements: ``jax_enable_x64`` on and a float64 potential (float64 tolerances; the class's
autouse fixture fails each law with one line otherwise); a cutoff ≳ 2.6 Å (fcc cells of a = 3.6 Å
must interact with their own images). Share the potential through a class- or module-scoped
fixture: each padded shape compiles once.

Structures come from :mod:`ase.build`, in the potential's own elements (:func:`roles`): with
its atomic numbers sorted Z₀ < Z₁ < …, ethanol's H, C, O become Z₀, Z₁, Z₂ (indices modulo
the number of elements), the fcc cells are of the heaviest element (one "O" per rattled cube).
"""

from __future__ import annotations

import ase
import ase.build
import ase.data
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnpes
from nnpes import compilation
from nnpes.data.graph import batch_graphs, pad_sizes
from nnpes.models import receptive_hops
from nnpes.physics import energy_forces_stress, evaluate
from nnpes.testing.systems import (  # noqa: F401  (re-exported helpers)
    SMALL_PADDING,
    SYSTEMS,
    Prediction,
    _with_roles,
    assert_close,
    crystal,
    ethanol,
    fd_forces,
    fd_stress,
    graphs_of,
    make,
    predict,
    roles,
    transformed,
    trimer,
)

__all__ = ["PhysicsLaws", "Prediction", "crystal", "ethanol", "predict", "trimer"]


# -- the laws --------------------------------------------------------------------------------
class PhysicsLaws:
    """Physics-law tests for the ``potential`` fixture a subclass provides (module docstring).

    Not collected by itself (its name does not start with ``Test``); ``class TestX(PhysicsLaws)``
    runs every law on ``TestX``'s potential. Each law is a method that can also be called
    directly, ``PhysicsLaws().test_…(potential, …)``, and raises ``AssertionError`` when broken.
    """

    @pytest.fixture(autouse=True)
    def _float64_potential(self, potential):
        """Fail with one line unless x64 is on and the potential is float64."""
        if not jax.config.jax_enable_x64:
            pytest.fail(
                "nnpes.testing.PhysicsLaws needs float64: call jax.config.update('jax_enable_x64', True) "
                "before any JAX array exists (e.g. in conftest.py's pytest_configure)",
                pytrace=False,
            )
        floats = {np.dtype(x.dtype) for x in jax.tree.leaves(potential.params) if jnp.issubdtype(x.dtype, jnp.floating)}
        if floats - {np.dtype(np.float64)}:
            pytest.fail(
                f"the potential fixture must be float64 (potential.astype(np.float64)), got {floats}", pytrace=False
            )

    # -- symmetries --------------------------------------------------------------------------
    @pytest.mark.parametrize("system", SYSTEMS)
    @pytest.mark.parametrize("operation", ["rotation", "inversion", "reflection"])
    def test_energy_invariant_forces_and_stress_equivariant_under_o3(self, potential, system, operation):
        """E and site energies are O(3) invariant; forces (q F) and stress (q σ qᵀ) covariant."""
        atoms = make(potential, system)
        ref = predict(potential, atoms)
        assert np.abs(ref.forces).max() > 1e-3, "forces vanish: the test would be vacuous"
        rng = np.random.default_rng(7)
        for _ in range(2):
            q, r = np.linalg.qr(rng.normal(size=(3, 3)))
            rot = q * np.sign(np.diag(r))
            rot = rot * np.sign(np.linalg.det(rot))  # a random proper rotation
            q = {"rotation": rot, "inversion": -np.eye(3), "reflection": rot @ np.diag([1.0, 1.0, -1.0])}[operation]
            out = predict(potential, transformed(atoms, q))
            assert_close(out.energy, ref.energy, 1e-10, "energy")
            assert_close(out.forces, ref.forces @ q.T, 1e-10, "forces")
            assert_close(out.sites, ref.sites, 1e-10, "site energies")
            if ref.stress is not None:
                assert_close(out.stress, q @ ref.stress @ q.T, 1e-10, "stress")

    @pytest.mark.parametrize("system", SYSTEMS)
    def test_energy_and_forces_invariant_under_translation(self, potential, system):
        """A rigid translation (wrapped back into the cell) changes nothing."""
        atoms = make(potential, system)
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
    def test_energy_invariant_and_forces_permute_under_atom_permutation(self, potential, system):
        """Reordering the atoms reorders forces and site energies and leaves E unchanged."""
        atoms = make(potential, system)
        ref = predict(potential, atoms)
        perm = np.random.default_rng(3).permutation(len(atoms))
        assert np.any(perm != np.arange(len(atoms)))
        out = predict(potential, atoms[perm])
        assert_close(out.energy, ref.energy, 1e-10, "energy")
        assert_close(out.forces, ref.forces[perm], 1e-10, "forces")
        assert_close(out.sites, ref.sites[perm], 1e-10, "site energies")

    def test_swapping_like_atoms_leaves_energy_unchanged(self, potential):
        """Exchanging the positions of two atoms of one element swaps their forces only."""
        atoms = ethanol(potential)
        hydrogens = np.flatnonzero(atoms.numbers == roles(potential)["H"])
        swapped = atoms.copy()
        swapped.positions[[hydrogens[0], hydrogens[3]]] = atoms.positions[[hydrogens[3], hydrogens[0]]]
        ref, out = predict(potential, atoms), predict(potential, swapped)
        assert_close(out.energy, ref.energy, 1e-10, "energy")
        assert_close(out.forces[hydrogens[0]], ref.forces[hydrogens[3]], 1e-10, "force on a swapped atom")

    @pytest.mark.parametrize("system", SYSTEMS)
    def test_forces_sum_to_zero(self, potential, system):
        """Translation invariance ⇒ Newton's third law: the net force vanishes."""
        forces = predict(potential, make(potential, system)).forces
        assert np.abs(forces).max() > 1e-3
        assert_close(forces.sum(axis=0), np.zeros(3), 1e-10, "net force")

    # -- derivatives -------------------------------------------------------------------------
    @pytest.mark.parametrize("system", SYSTEMS)
    def test_forces_equal_minus_energy_gradient_fd(self, potential, system):
        """F = −∂E/∂R, against central finite differences (h = 1e-5 Å)."""
        atoms = make(potential, system)
        ref = predict(potential, atoms)
        assert np.abs(ref.forces).max() > 1e-3
        assert_close(ref.forces, fd_forces(potential, atoms, 1e-5), 1e-6, "forces vs −dE/dR (central differences)")

    def test_stress_equals_strain_derivative_of_energy_fd(self, potential):
        """σ_ij = (1/V) ∂E/∂ε_ij, ASE sign (positive = tensile), from the calculator."""
        atoms = crystal(potential)
        atoms.calc = nnpes.Calculator(potential, dtype="float64")
        stress = atoms.get_stress(voigt=False)
        assert np.abs(stress).max() > 1e-4
        assert_close(stress, fd_stress(atoms, 1e-5), 1e-7, "stress vs (E(+ε) − E(−ε)) / (2 h V)")

    # -- periodic cells ----------------------------------------------------------------------
    def test_supercell_energy_is_extensive_with_periodic_forces_and_equal_stress(self, potential):
        """A 2×2×2 supercell of a cell smaller than 2·r_c: 8× the energy, same forces and stress."""
        unit = crystal(potential)
        assert np.min(unit.cell.cellpar()[:3]) < 2 * potential.cutoff, "the unit cell is not smaller than 2·r_c"
        supercell = unit * (2, 2, 2)
        small, big = predict(potential, unit), predict(potential, supercell)
        assert_close(big.energy, 8 * small.energy, 1e-9, "supercell energy vs 8 × unit cell")
        assert_close(big.forces, np.tile(small.forces, (8, 1)), 1e-10, "supercell forces vs unit-cell forces")
        assert_close(big.stress, small.stress, 1e-10, "supercell stress vs unit-cell stress")

    def test_primitive_and_conventional_fcc_cells_agree_per_atom(self, potential):
        """A 1-atom cell of edge 2.55 Å (an atom neighbours its own images) vs the 4-atom cube."""
        p, c = (
            predict(potential, _with_roles(ase.build.bulk("Cu", "fcc", a=3.6, cubic=cubic), potential))
            for cubic in (False, True)
        )
        assert abs(p.interaction) > 1e-4, "images do not interact: the test would be vacuous"
        assert_close(p.energy, c.energy / 4, 1e-10, "energy per atom")
        assert_close(p.stress, c.stress, 1e-10, "stress")
        assert_close(c.forces, np.zeros_like(c.forces), 1e-10, "forces in a perfect fcc lattice")

    # -- smoothness and locality -------------------------------------------------------------
    def test_energy_and_forces_continuous_as_atom_crosses_cutoff(self, potential):
        """E and F are continuous at r_c, and an atom just beyond r_c feels nothing."""
        rc = potential.cutoff
        outside = predict(potential, trimer(potential, rc + 1e-6))
        far = predict(potential, trimer(potential, rc + 2.0))
        assert_close(outside.energy, far.energy, 1e-12, "energy just beyond r_c vs far away")
        assert_close(outside.forces[2], np.zeros(3), 0.0, "force on an atom beyond r_c")
        inside = predict(potential, trimer(potential, rc - 0.5))
        assert abs(inside.energy - outside.energy) > 1e-5, "the atom does not interact: the test would be vacuous"
        gaps = []
        for delta in (1e-2, 1e-3, 1e-4):
            near = predict(potential, trimer(potential, rc - delta))
            gaps.append((abs(near.energy - outside.energy), np.abs(near.forces - outside.forces).max()))
        (e2, f2), (e3, f3), (e4, f4) = gaps
        assert e3 < 1e-7 and f3 < 1e-5, f"energy/force jumps at r_c: {gaps}"
        assert e4 < e3 < e2 and f4 < f3 < f2, f"energy/force gaps do not shrink as δ → 0: {gaps}"

    def test_site_energy_and_force_unaffected_beyond_receptive_field(self, potential):
        """Along a chain, site energy 0 sees exactly hops·r_c and force 0 sees 2·hops·r_c, with
        hops the receptive field the model declares (:func:`nnpes.models.receptive_hops`)."""
        hops = receptive_hops(potential.model)
        rng = np.random.default_rng(5)
        n = int(2 * hops / 0.9) + 3  # "C" atoms along x, spacing 0.9 r_c: each bonds to its neighbours only
        base = np.column_stack([0.9 * potential.cutoff * np.arange(n), 0.1 * rng.normal(size=(2, n)).T])
        chain = ase.Atoms(numbers=[roles(potential)["C"]] * n, positions=base)
        ref = predict(potential, chain)
        distance = np.linalg.norm(chain.positions - chain.positions[0], axis=1)
        reach, margin = hops * potential.cutoff, 0.3
        for k in range(1, len(chain)):
            moved = chain.copy()
            moved.positions[k] += rng.normal(scale=0.05, size=3)
            out = predict(potential, moved)
            assert abs(out.energy - ref.energy) > 1e-9, f"moving atom {k} changes nothing at all"
            d_site = abs(out.sites[0] - ref.sites[0])
            d_force = np.abs(out.forces[0] - ref.forces[0]).max()
            if distance[k] > reach + margin:
                assert d_site == 0.0, f"atom {k} at {distance[k]:.2f} Å changes site energy 0 by {d_site:.2e}"
            elif k <= hops:  # reachable in k hops, each shorter than r_c
                assert d_site > 1e-9, f"atom {k} ({k} hops) does not reach site 0"
            if distance[k] > 2 * reach + margin:
                assert d_force == 0.0, f"atom {k} at {distance[k]:.2f} Å changes the force on atom 0 by {d_force:.2e}"

    # -- batching, padding, compilation ------------------------------------------------------
    @pytest.mark.parametrize("padding", ["tight", "generous"])
    def test_batch_gives_same_results_as_each_graph_alone(self, potential, padding):
        """A padded batch gives each graph's own results; padding carries nothing."""
        structures = [ethanol(potential), crystal(potential), trimer(potential, 1.1), crystal(potential, seed=4)]
        singles = [predict(potential, a) for a in structures]
        graphs = graphs_of(potential, structures)
        n_node, n_edge, n_graph = pad_sizes(graphs)
        if padding == "generous":  # extra empty graphs before the padding graph, many padding edges
            n_node, n_edge, n_graph = n_node + 37, n_edge + 101, n_graph + 3
        batch = batch_graphs(graphs, n_node, n_edge, n_graph, dtype=np.float64)
        out = jax.device_get(evaluate(potential.for_structures(structures), batch, compute_stress=True))
        start = 0
        for g, (atoms, single) in enumerate(zip(structures, singles)):
            n = len(atoms)
            assert_close(out["energy"][g], single.energy, 1e-10, f"energy of graph {g}")
            assert_close(out["forces"][start : start + n], single.forces, 1e-10, f"forces of graph {g}")
            assert_close(out["site_energies"][start : start + n], single.sites, 1e-10, f"site energies of graph {g}")
            expected_stress = single.stress if single.stress is not None else np.zeros((3, 3))
            assert_close(out["stress"][g], expected_stress, 1e-10, f"stress of graph {g}")
            start += n
        g = len(structures)
        assert np.all(out["energy"][g:] == 0.0) and np.all(out["stress"][g:] == 0.0), "padding graphs carry E or σ"
        assert np.all(out["forces"][start:] == 0.0), "padding nodes carry forces"

    def test_padding_never_produces_nan_in_gradients(self, potential):
        """Parameter gradients of a force-and-stress loss are finite (jax_debug_nans on)."""
        structures = [crystal(potential), trimer(potential, 1.1)]
        graphs = graphs_of(potential, structures)
        potential = potential.for_structures(structures)
        n_node, n_edge, n_graph = pad_sizes(graphs)
        batch = batch_graphs(graphs, n_node + 5, n_edge + 20, n_graph + 1, dtype=np.float64)

        def loss(params, graph):  # second derivatives through the padding edges (zero vectors)
            out = energy_forces_stress(potential.replace(params=params), graph, compute_stress=True)
            return jnp.sum(out["energy"] ** 2) + jnp.sum(out["forces"] ** 2) + jnp.sum(out["stress"] ** 2)

        with jax.debug_nans(True):
            grads = jax.jit(jax.grad(loss))(potential.params, batch)
        leaves = [np.asarray(x) for x in jax.tree.leaves(grads)]
        assert all(np.all(np.isfinite(x)) for x in leaves)
        assert max(np.abs(x).max() for x in leaves) > 0

    def test_compile_count_does_not_grow_within_a_bucket(self, potential):
        """New structures of an already compiled padded shape trigger no new compilation."""
        molecules = [ethanol(potential, seed) for seed in range(5)]
        cells = [crystal(potential, seed) for seed in range(5)]
        calc = nnpes.Calculator(potential, dtype="float64")
        assert len({pad_sizes(graphs_of(potential, [a])) for a in cells}) == 1, "test cells fall in different buckets"
        predict(potential, molecules[0])
        cells[0].calc = calc
        cells[0].get_forces()
        before = compilation.count("energy_forces_stress")
        for atoms in molecules[1:]:
            predict(potential, atoms)
        for atoms in cells[1:]:
            atoms.calc = calc
            atoms.get_forces()
        assert compilation.count("energy_forces_stress") == before

    # -- the ASE calculator ------------------------------------------------------------------
    def test_calculator_float32_agrees_with_float64(self, potential):
        """The float32 calculator matches float64 to float32 precision."""
        atoms = crystal(potential)
        results = {}
        for dtype in ("float32", "float64"):
            atoms.calc = nnpes.Calculator(potential, dtype=dtype)
            results[dtype] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        (e32, f32, s32), (e64, f64, s64) = results["float32"], results["float64"]
        assert_close(e32, e64, 1e-5 * max(1.0, abs(e64)), "energy")
        assert_close(f32, f64, 1e-5 * max(1.0, np.abs(f64).max()), "forces")
        assert_close(s32, s64, 1e-6, "stress")

    def test_site_energies_sum_to_energy(self, potential):
        """Σ site energies = total energy (calculator's per-atom ``energies``)."""
        atoms = crystal(potential)
        atoms.calc = nnpes.Calculator(potential, dtype="float64")
        assert_close(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), 1e-10, "Σ site energies")
