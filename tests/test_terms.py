"""The seam for physical terms beside the network: a potential's energy is a sum of terms, and a
new term needs no force or stress code of its own.

The term here, a fixed exponential pair repulsion, lives in this test only (it is not public
API): adding it to a potential changes the energy by exactly its pair sum, forces and stress
stay the derivatives of the total (finite differences, float64), every path (calculator,
jax-md adaptor) sees it, and a saved model records it.
"""

from __future__ import annotations

import json

import ase.build
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import nnpes
from nnpes.data.neighbors import neighbor_list
from nnpes.errors import ModelError
from nnpes.models import NequIP
from nnpes.models.radial import polynomial_envelope
from nnpes.terms import TERM_KINDS, Term, register_term

pytestmark = pytest.mark.usefixtures("debug_nans")
CUTOFF = 3.0


@register_term
class PairRepulsion(Term):
    """ε_i = ½ Σ_j A exp(−r_ij/ρ) f_c(r_ij): A in eV, ρ in Å (both static settings)."""

    kind = "test_pair_repulsion"
    amplitude_ev: float = struct.field(pytree_node=False, default=50.0)
    length_a: float = struct.field(pytree_node=False, default=0.3)
    cutoff_a: float = struct.field(pytree_node=False, default=CUTOFF)

    def site_energies(self, inputs):
        r = jnp.linalg.norm(inputs.vectors, axis=-1)
        pair = self.amplitude_ev * jnp.exp(-r / self.length_a) * polynomial_envelope(r, self.cutoff_a)
        pair = jnp.where(inputs.edge_mask, pair, 0.0)
        return 0.5 * jnp.zeros(inputs.species.shape[0], r.dtype).at[inputs.receivers].add(pair)

    def to_json(self):
        return {"amplitude_ev": self.amplitude_ev, "length_a": self.length_a, "cutoff_a": self.cutoff_a}


def _pair_energy(atoms, term: PairRepulsion) -> float:
    """The term's energy by a direct numpy sum over the neighbour list."""
    nl = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, CUTOFF)
    vec = atoms.positions[nl.senders] - atoms.positions[nl.receivers] + nl.shifts @ atoms.cell[:]
    r = np.linalg.norm(vec, axis=1)
    x = r / CUTOFF
    envelope = 1 - 28 * x**6 + 48 * x**7 - 21 * x**8  # p = 6
    return float(0.5 * np.sum(term.amplitude_ev * np.exp(-r / term.length_a) * envelope))


@pytest.fixture(scope="module")
def potentials():
    model = NequIP(channels=4, l_max=1, num_layers=1, num_basis=4, radial_features=(8,), readout_features=4)
    plain = nnpes.Potential.create(model, [8, 29], CUTOFF, seed=2, e0={8: -1.0, 29: -2.0}, scale=0.3)
    return plain, plain.replace(terms=(PairRepulsion(),))


@pytest.fixture(scope="module")
def crystal():
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[0] = 8
    atoms.rattle(0.15, seed=4)
    return atoms


def _energy(potential, atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    return atoms.get_potential_energy()


def test_total_energy_is_network_plus_reference_plus_term(potentials, crystal):
    plain, with_term = potentials
    expected = _energy(plain, crystal) + _pair_energy(crystal, PairRepulsion())
    np.testing.assert_allclose(_energy(with_term, crystal), expected, rtol=1e-12)


def test_term_forces_and_stress_are_derivatives_of_the_total_energy_fd(potentials, crystal):
    _, with_term = potentials
    atoms = crystal.copy()
    atoms.calc = nnpes.Calculator(with_term, dtype="float64")
    forces, stress = atoms.get_forces(), atoms.get_stress(voigt=False)
    h = 1e-5
    for atom, axis in ((0, 0), (1, 2), (3, 1)):
        plus, minus = crystal.copy(), crystal.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        fd = -(_energy(with_term, plus) - _energy(with_term, minus)) / (2 * h)
        np.testing.assert_allclose(forces[atom, axis], fd, rtol=1e-6, atol=1e-7)
    volume = crystal.get_volume()
    for i, j in ((0, 0), (0, 1), (2, 1)):
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h / 2 if i != j else h
        strained = []
        for sign in (1, -1):
            a = crystal.copy()
            a.set_cell(crystal.cell[:] @ (np.eye(3) + sign * eps), scale_atoms=True)
            strained.append(_energy(with_term, a))
        fd = (strained[0] - strained[1]) / (2 * h * volume)
        np.testing.assert_allclose(stress[i, j], fd, rtol=1e-5, atol=1e-7)


def test_jax_md_adaptor_sees_the_term(potentials):
    from jax_md import space

    _, with_term = potentials
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    atoms.numbers[::5] = 8
    atoms.rattle(0.1, seed=5)
    box = atoms.cell.array.T
    displacement, _ = space.periodic_general(box, fractional_coordinates=True)
    neighbor_fn, energy_fn = nnpes.md.energy_neighbor_list(
        with_term.astype("float64"), displacement, box, atoms.numbers, fractional_coordinates=True
    )
    frac = jnp.asarray(atoms.get_scaled_positions())
    energy = float(energy_fn(frac, neighbor_fn.allocate(frac)))
    np.testing.assert_allclose(energy, _energy(with_term, atoms), rtol=1e-10)


def test_saved_model_records_the_term_and_loads_it(potentials, crystal, tmp_path):
    _, with_term = potentials
    with_term.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "potential.json").read_text())
    assert meta["terms"] == [{"kind": "test_pair_repulsion", "amplitude_ev": 50.0, "length_a": 0.3, "cutoff_a": CUTOFF}]
    loaded = nnpes.load(tmp_path / "model")
    assert loaded.terms == with_term.terms
    np.testing.assert_allclose(_energy(loaded, crystal), _energy(with_term, crystal), rtol=1e-13)


def test_an_unknown_saved_term_is_a_one_line_model_error(potentials, tmp_path):
    _, with_term = potentials
    with_term.save(tmp_path / "model")
    path = tmp_path / "model" / "potential.json"
    meta = json.loads(path.read_text())
    meta["terms"][0]["kind"] = "ewald_from_the_future"
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unknown energy term 'ewald_from_the_future'") as err:
        nnpes.load(tmp_path / "model")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert "ewald_from_the_future" not in TERM_KINDS
