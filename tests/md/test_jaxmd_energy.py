"""The jax-md adaptor (nnpes.md.jaxmd_energy) gives the energy, forces and stress the ASE
calculator gives, masks pairs beyond the cutoff, differentiates parameters and refuses bad boxes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import quantity, space

import nnpes
from nnpes.errors import ModelError
from nnpes.md import BoxTooSmallError, energy_neighbor_list


def calculator_results(potential, atoms):
    atoms = atoms.copy()
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    stress = atoms.get_stress() if atoms.pbc.all() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def voigt_to_matrix(s):
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def test_energy_and_forces_equal_calculator_molecule_free_space(chno_potential, ethanol):
    e_ref, f_ref, _ = calculator_results(chno_potential, ethanol)
    displacement, _ = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(chno_potential.astype("float64"), displacement, None, ethanol.numbers)
    R = jnp.asarray(ethanol.positions)
    nbrs = neighbor_fn.allocate(R)
    energy, grad = jax.jit(jax.value_and_grad(energy_fn))(R, nbrs)
    assert abs(float(energy) - e_ref) < 1e-9 * abs(e_ref)  # reference energies included, float64 round-off
    np.testing.assert_allclose(-np.asarray(grad), f_ref, atol=1e-10)


def test_energy_forces_stress_equal_calculator_periodic_cubic(water_potential, water):
    e_ref, f_ref, s_ref = calculator_results(water_potential, water)
    side = water.cell.lengths()[0]
    displacement, _ = space.periodic(side)
    neighbor_fn, energy_fn = energy_neighbor_list(
        water_potential.astype("float64"), displacement, side, water.numbers, dr_threshold=0.5
    )
    R = jnp.asarray(np.mod(water.positions, side))
    nbrs = neighbor_fn.allocate(R)
    energy, grad, jm_stress, pressure = jax.jit(
        lambda R, nbrs: (
            *jax.value_and_grad(energy_fn)(R, nbrs),
            quantity.stress(energy_fn, R, side, neighbor=nbrs),
            quantity.pressure(energy_fn, R, side, neighbor=nbrs),
        )
    )(R, nbrs)
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
    neighbor_fn, energy_fn = energy_neighbor_list(
        water_potential.astype("float64"),
        displacement,
        box,
        atoms.numbers,
        dr_threshold=0.5,
        fractional_coordinates=True,
    )
    frac = jnp.asarray(atoms.get_scaled_positions())
    nbrs = neighbor_fn.allocate(frac)
    energy, grad, jm_stress = jax.jit(
        lambda R, nbrs: (  # jax-md's transform: real-space gradient
            *jax.value_and_grad(energy_fn)(R, nbrs),
            quantity.stress(energy_fn, R, box, neighbor=nbrs),
        )
    )(frac, nbrs)
    assert abs(float(energy) - e_ref) < 1e-9 * abs(e_ref)
    np.testing.assert_allclose(-np.asarray(grad), f_ref, atol=1e-10)
    np.testing.assert_allclose(np.asarray(jm_stress), -voigt_to_matrix(s_ref), atol=1e-10)


def test_pairs_beyond_cutoff_are_masked_whatever_the_skin(water_potential, water):
    side = water.cell.lengths()[0]
    displacement, _ = space.periodic(side)
    R = jnp.asarray(np.mod(water.positions, side))
    energies = []
    for skin in (0.2, 1.5):
        neighbor_fn, energy_fn = energy_neighbor_list(
            water_potential.astype("float64"), displacement, side, water.numbers, dr_threshold=skin
        )
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
