"""NequIP's edge loop: summing messages over edge chunks (rematerialised in the backward pass)
computes the same function as one pass over all edges, to float64 round-off, for energies,
forces and stress of a batch holding a molecule and a periodic cell; the automatic chunk size
follows the memory budget."""

from __future__ import annotations

import os

import ase.build
import jax
import numpy as np
import pytest

import nnpes
from nnpes import Potential
from nnpes.data.graph import batch_graphs, frame_to_graph
from nnpes.data.io import frame_from_atoms, read_frames
from nnpes.models import NequIP
from nnpes.models.convolution import edge_chunk_size
from nnpes.physics import energy_forces_stress

ETHANOL = os.path.join(os.path.dirname(nnpes.__file__), "data", "files", "ethanol_train.xyz")
CUTOFF = 3.5
NUMBERS = (1, 6, 8, 29)


@pytest.fixture(scope="module")
def batch():
    copper = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    copper.rattle(0.05, seed=1)
    frames = [read_frames(ETHANOL, index=0)[0], frame_from_atoms(copper, source="copper")]
    graphs = [frame_to_graph(f, CUTOFF, NUMBERS) for f in frames]
    return batch_graphs(graphs, dtype=np.float64)


@pytest.fixture(scope="module")
def one_pass(batch):
    model = NequIP(channels=4, l_max=2, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4)
    potential = Potential.create(model.clone(edge_chunk=0), NUMBERS, CUTOFF, seed=3, avg_num_neighbors=10.0)
    potential = potential.astype(np.float64)
    return potential, energy_forces_stress(potential, batch)


@pytest.mark.parametrize(
    "chunking",
    [dict(edge_chunk=64), dict(edge_chunk=101), dict(edge_chunk=None, edge_memory_mb=0.05)],
    ids=["even", "padded-last-chunk", "from-memory-budget"],
)
def test_chunked_edges_compute_the_same_function(batch, one_pass, chunking):
    potential, reference = one_pass
    chunked = potential.replace(model=potential.model.clone(**chunking))
    out = energy_forces_stress(chunked, batch)
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(np.asarray(out[key]), np.asarray(reference[key]), rtol=1e-12, atol=1e-13)
    assert np.abs(np.asarray(reference["forces"])).max() > 1e-3  # a real, non-trivial comparison
    # every case really loops over chunks (the one-pass reference does not)
    assert "scan" in str(jax.make_jaxpr(energy_forces_stress)(chunked, batch))
    assert "scan" not in str(jax.make_jaxpr(energy_forces_stress)(potential, batch))


def test_chunk_size_follows_the_budget():
    assert edge_chunk_size(1000, 1000, None, 100.0) == 0  # fits: one pass
    chunk = edge_chunk_size(100_000, 1024, None, 1.0)  # 1 MiB of 1 KiB edges: ~1024 a chunk
    assert 64 <= chunk <= 1024 and -(-100_000 // chunk) * chunk - 100_000 < -(-100_000 // chunk)
    assert edge_chunk_size(100_000, 1024, 5000, 1.0) == 5000  # given explicitly
    assert edge_chunk_size(100_000, 1024, 0, 1.0) == 0
    assert edge_chunk_size(10, 1024, 5000, 1.0) == 0  # a chunk larger than the edges: one pass
