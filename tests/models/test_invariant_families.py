"""Invariant-descriptor families (Behler–Parrinello, DeepSets): the linear-time angular
functions equal a brute-force triplet sum, standardisation, and models survive a save/load
round trip (float64: switched on for the session in conftest.py). The physical laws (symmetries,
forces = −∇E, ...) are checked for every family by tests/test_physics.py (nnpes.testing)."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

import nnpes
from nnpes import Potential
from nnpes.data.graph import batch_graphs, frame_to_graph, species_indices
from nnpes.data.io import frame_from_atoms, read_frames
from nnpes.data.neighbors import neighbor_list
from nnpes.data.statistics import fit_model_statistics
from nnpes.models import BehlerParrinello, DeepSets
from nnpes.models.behler_parrinello import angular_grid, num_features, radial_grid
from nnpes.physics import edge_padding_mask, edge_vectors, evaluate, safe_edges

ETHANOL = os.path.join(os.path.dirname(nnpes.__file__), "data", "files", "ethanol_train.xyz")
CUTOFF = 4.5
ATOMIC_NUMBERS = (1, 6, 8, 12)  # H, C, O, Mg: one species table for both test systems


@pytest.fixture(scope="module")
def molecule():
    return read_frames(ETHANOL, index=0)[0]


@pytest.fixture(scope="module")
def crystal():
    """A small rattled two-species cell with a skewed (primitive fcc) lattice: 8 atoms, cell
    vectors shorter than the cutoff, so atoms neighbour several images of each other and
    of themselves."""
    from ase.build import bulk

    atoms = bulk("MgO", "rocksalt", a=4.2).repeat((2, 2, 1))
    atoms.rattle(0.1, seed=3)
    return frame_from_atoms(atoms)


def _triplet_descriptors(frame, model):
    """Direct evaluation of the documented G2/G5 definitions: numpy, every atom i, every
    ordered pair of distinct edges (j, k) of i."""
    shifts, widths = radial_grid(model)
    etas, zetas, lambdas = angular_grid(model)
    s, avg, rc, p = model.num_species, model.avg_num_neighbors, model.cutoff, model.envelope_p
    species = species_indices(frame.numbers, ATOMIC_NUMBERS)
    nl = neighbor_list(frame.positions, frame.cell, frame.pbc, rc)
    vec = frame.positions[nl.senders] - frame.positions[nl.receivers] + nl.shifts @ frame.cell
    pair_index = np.full((s, s), -1)
    for n, (a, b) in enumerate(zip(*np.triu_indices(s))):
        pair_index[a, b] = pair_index[b, a] = n

    def envelope(r):
        x = r / rc
        u = 1 - 0.5 * (p + 1) * (p + 2) * x**p + p * (p + 2) * x ** (p + 1) - 0.5 * p * (p + 1) * x ** (p + 2)
        return np.where(x < 1, u, 0.0)

    rows = []
    for i in range(len(species)):
        on = nl.receivers == i
        v, sp = vec[on], species[nl.senders[on]]
        r = np.linalg.norm(v, axis=1)
        fc = envelope(r)
        radial = np.zeros((s, len(shifts)))
        np.add.at(radial, sp, np.exp(-widths * (r[:, None] - shifts) ** 2) * fc[:, None])
        cos = (v / r[:, None]) @ (v / r[:, None]).T
        gauss = np.exp(-etas[:, None, None] * (r[:, None] ** 2 + r[None, :] ** 2)) * fc[:, None] * fc[None, :]
        shape = (
            2.0 ** (1 - zetas[:, None, None, None])
            * (1 + lambdas[None, :, None, None] * cos) ** zetas[:, None, None, None]
        )  # (Z, L, n, n)
        terms = gauss[:, None, None] * shape[None]  # (K, Z, L, n, n)
        j, k = np.nonzero(~np.eye(len(r), dtype=bool))
        angular = np.zeros((s * (s + 1) // 2, len(etas), len(zetas), len(lambdas)))
        np.add.at(angular, pair_index[sp[j], sp[k]], np.moveaxis(terms[..., j, k], -1, 0))
        rows.append(np.concatenate([radial.reshape(-1) / avg, angular.reshape(-1) / avg**2]))
    return np.asarray(rows)


def _descriptors(frame, model):
    """The model's descriptors from a padded float64 graph (real atoms only)."""
    graph = batch_graphs([frame_to_graph(frame, model.cutoff, ATOMIC_NUMBERS)], dtype=np.float64)
    vectors = edge_vectors(graph.nodes["positions"], graph.globals["cell"], graph)
    vectors, mask = safe_edges(vectors, edge_padding_mask(graph), model.cutoff)
    out = jax.jit(lambda *a: model.apply({}, *a, method="descriptors"))(
        vectors, graph.nodes["species"], graph.senders, graph.receivers, mask
    )
    return np.asarray(out)[: frame.n_atoms]


BP_GRIDS = {
    "default": dict(),
    "wide": dict(
        radial_shifts=(0.8, 1.5, 2.5),
        radial_etas=(2.0,),
        angular_etas=(0.05, 0.3, 1.0),
        zetas=(1, 2, 3, 6),
        lambdas=(1, -1),
    ),
    "default-chunked": dict(edge_chunk=24),  # the edge loop, with a partly padded last chunk
}


@pytest.mark.parametrize("grid", sorted(BP_GRIDS))
@pytest.mark.parametrize("system", ["molecule", "crystal"])
def test_factorised_angular_functions_equal_direct_triplet_sum(system, grid, request):
    frame = request.getfixturevalue(system)
    model = BehlerParrinello(**BP_GRIDS[grid], cutoff=CUTOFF, num_species=len(ATOMIC_NUMBERS), avg_num_neighbors=7.0)
    expected = _triplet_descriptors(frame, model)
    got = _descriptors(frame, model)
    assert got.shape == (frame.n_atoms, num_features(model))
    assert np.abs(expected[:, 4 * len(radial_grid(model)[0]) :]).max() > 1e-3  # angular terms present
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_deepsets_angle_features_equal_direct_pair_sum(crystal):
    model = DeepSets(angular_order=3, cutoff=CUTOFF, num_species=len(ATOMIC_NUMBERS), avg_num_neighbors=5.0)
    nl = neighbor_list(crystal.positions, crystal.cell, crystal.pbc, CUTOFF)
    vec = crystal.positions[nl.senders] - crystal.positions[nl.receivers] + nl.shifts @ crystal.cell
    r = np.linalg.norm(vec, axis=1)
    unit = vec / r[:, None]
    weight = np.asarray(nnpes.models.radial.polynomial_envelope(r, CUTOFF, model.envelope_p))
    got = np.asarray(model.apply({}, unit, weight, nl.receivers, crystal.n_atoms, method="angle_features"))
    expected = np.zeros((len(r), 3))
    for e in range(len(r)):
        others = np.nonzero((nl.receivers == nl.receivers[e]) & (np.arange(len(r)) != e))[0]
        cos = unit[others] @ unit[e]
        expected[e] = [(weight[others] * cos**n).sum() / 5.0 for n in (1, 2, 3)]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_fitted_descriptor_statistics_give_zero_mean_unit_std(molecule, crystal):
    model = BehlerParrinello(
        hidden_features=(4,), cutoff=CUTOFF, num_species=len(ATOMIC_NUMBERS), avg_num_neighbors=7.0
    )
    graphs = [frame_to_graph(f, CUTOFF, ATOMIC_NUMBERS) for f in (molecule, crystal)]
    fitted = fit_model_statistics(model, graphs)
    mean = np.reshape(fitted.feature_mean, (4, -1))
    std = np.reshape(fitted.feature_std, (4, -1))
    x = np.concatenate([_descriptors(f, model) for f in (molecule, crystal)])
    species = species_indices(np.concatenate([molecule.numbers, crystal.numbers]), ATOMIC_NUMBERS)
    z = (x - mean[species]) / std[species]
    for a in range(4):
        varying = np.reshape(fitted.feature_std, (4, -1))[a] != 1.0
        np.testing.assert_allclose(z[species == a].mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(z[species == a][:, varying].std(axis=0), 1.0, rtol=1e-9)


# -- whole potentials -------------------------------------------------------------
TINY = {
    "behler_parrinello": lambda: BehlerParrinello(
        num_radial=4, zetas=(1, 2), angular_etas=(0.1,), hidden_features=(8,), edge_chunk=64
    ),
    "deepsets": lambda: DeepSets(
        num_basis=4, embed_features=4, angular_order=2, phi_features=(8, 8), rho_features=(8,)
    ),
}


@pytest.fixture(scope="module", params=sorted(TINY))
def potential(request, molecule, crystal):
    pot = Potential.create(
        TINY[request.param](),
        ATOMIC_NUMBERS,
        CUTOFF,
        seed=1,
        scale=0.5,
        avg_num_neighbors=8.0,
        e0={1: -13.6, 6: -1030.0, 8: -2040.0, 12: -1.5},
    )
    if request.param == "behler_parrinello":  # exercise standardisation in every check below
        graphs = [frame_to_graph(f, CUTOFF, ATOMIC_NUMBERS) for f in (molecule, crystal)]
        pot = pot.replace(model=fit_model_statistics(pot.model, graphs))
    return pot.astype(np.float64)


def _batch(frames):
    """Padded float64 batch with a 0.5 Å neighbour-list skin (displaced atoms keep their pairs)."""
    return batch_graphs([frame_to_graph(f, CUTOFF + 0.5, ATOMIC_NUMBERS) for f in frames], dtype=np.float64)


def test_save_load_round_trip_gives_identical_predictions(potential, molecule, crystal, tmp_path):
    potential32 = potential.astype(np.float32)
    potential32.save(tmp_path / "model")
    loaded = nnpes.load(tmp_path / "model")
    assert type(loaded.model) is type(potential.model)
    assert loaded.metadata() == potential32.metadata()
    graph = _batch([molecule, crystal])
    a = evaluate(potential, graph)
    b = evaluate(loaded.astype(np.float64), graph)
    np.testing.assert_array_equal(np.asarray(a["energy"]), np.asarray(b["energy"]))
    np.testing.assert_array_equal(np.asarray(a["forces"]), np.asarray(b["forces"]))


def test_edge_chunk_schedule_changes_no_number(molecule, crystal):
    """Only the schedule of Behler–Parrinello may depend on the backend: one pass and a chunked
    scan give the same energies and forces to float64 round-off."""
    graph = _batch([molecule, crystal])
    results = []
    for chunk in (0, 24):
        model = BehlerParrinello(num_radial=4, zetas=(1, 2), hidden_features=(8,), edge_chunk=chunk)
        pot = Potential.create(model, ATOMIC_NUMBERS, CUTOFF, seed=4, avg_num_neighbors=8.0).astype(np.float64)
        results.append(evaluate(pot, graph))
    np.testing.assert_allclose(results[0]["energy"], results[1]["energy"], rtol=1e-13)
    np.testing.assert_allclose(results[0]["forces"], results[1]["forces"], rtol=1e-11, atol=1e-13)
