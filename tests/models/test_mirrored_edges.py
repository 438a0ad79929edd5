"""The mirrored edge layout (edge E/2 + k is edge k reversed) changes nothing but the cost:
NequIP reading it gives the energies, forces and stress of the plain full list, in float64."""

from __future__ import annotations

import ase.build
import jax
import numpy as np
import pytest

import nnpes
from nnpes.data.graph import batch_graphs, frame_to_graph
from nnpes.data.io import frame_from_atoms
from nnpes.data.neighbors import is_mirrored, neighbor_list
from nnpes.models import NequIP
from nnpes.physics import evaluate

CUTOFF_A = 4.0


@pytest.fixture(scope="module")
def batches():
    """A periodic Cu/C cell (small enough for self-images) and a free molecule, mirrored and plain."""
    cu = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    cu.rattle(0.1, seed=1)
    cu.numbers[::3] = 6
    mol = ase.build.molecule("CH3CH2OH")
    graphs = [frame_to_graph(frame_from_atoms(a, source="t"), CUTOFF_A, (1, 6, 8, 29)) for a in (cu, mol)]
    mirrored = batch_graphs(graphs, dtype=np.float64)
    plain = mirrored._replace(edges={"shifts": mirrored.edges["shifts"]})
    return jax.device_put(mirrored), jax.device_put(plain)


def test_neighbor_lists_are_mirrored():
    cu = ase.build.bulk("Cu", "fcc", a=3.6)  # one atom: every neighbour is an image of itself
    nl = neighbor_list(cu.positions, cu.cell.array, cu.pbc, 5.0)
    assert len(nl.senders) == 42 and is_mirrored(*nl)
    mol = ase.build.molecule("C6H6")
    assert is_mirrored(*neighbor_list(mol.positions, np.zeros((3, 3)), np.zeros(3, bool), 3.0))


@pytest.mark.parametrize("edge_chunk", [None, 16, 0], ids=["auto", "chunks", "one-pass"])
def test_mirrored_equals_plain(batches, edge_chunk):
    mirrored, plain = batches
    assert "mirrored" in mirrored.edges
    model = NequIP(channels=4, l_max=2, num_layers=2, radial_features=(8,), edge_chunk=edge_chunk)
    potential = nnpes.Potential.create(model, [1, 6, 8, 29], CUTOFF_A, avg_num_neighbors=12.0).astype(np.float64)
    a, b = evaluate(potential, mirrored), evaluate(potential, plain)
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-12, atol=1e-12, err_msg=key)
    assert np.abs(np.asarray(a["forces"])).max() > 1e-3  # not trivially zero
