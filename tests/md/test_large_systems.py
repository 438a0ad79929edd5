"""Large structures in the jax-md path: no N² candidates in free space above a size (a cell list
over a box fitted to the cluster finds exactly the true pairs, also after atoms leave it), the
path each periodic box takes, and the memory estimate that refuses, as one line, a run too large
for the machine before anything of its size is allocated."""

from __future__ import annotations

import ase
import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import partition, space
from md_models import random_gas

import nnpes
from nnpes.data.neighbors import neighbor_list
from nnpes.errors import ModelError
from nnpes.md import energy_neighbor_list
from nnpes.md.cell_lists import FREE_CELL_LIST_MIN_ATOMS, ListSettings, cell_grid
from nnpes.md.jaxmd_simulation import MEMORY_CHECK_MIN_ATOMS, estimate_memory, simulation
from nnpes.md.loop import run

N_CLUSTER = 1200  # above both thresholds, cheap on 2 cores


def cluster(n_atoms: int = N_CLUSTER, spacing: float = 2.0, seed: int = 0) -> ase.Atoms:
    """A water-like H/O cluster centred on the origin (negative coordinates on purpose): a cubic
    grid of ``spacing`` Å jittered by ±0.4 Å, so no two atoms are closer than 1.2 Å (0.125 atoms/Å³)."""
    side = int(np.ceil(n_atoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms] * spacing
    jitter = np.random.default_rng(seed).uniform(-0.4, 0.4, grid.shape)
    return ase.Atoms(numbers=[1, 8] * (n_atoms // 2), positions=grid - grid.mean(axis=0) + jitter)


def pairs_within(nbrs, R, cutoff: float) -> set:
    """(centre, neighbour) pairs of a jax-md sparse list closer than ``cutoff`` Å."""
    R = np.asarray(R, np.float64)
    i, j = np.asarray(nbrs.idx)
    keep = (i < len(R)) & (j < len(R))
    i, j = i[keep], j[keep]
    close = np.linalg.norm(R[i] - R[j], axis=1) < cutoff
    return set(zip(i[close].tolist(), j[close].tolist(), strict=True))


def host_pairs(R, cutoff: float) -> set:
    nl = neighbor_list(np.asarray(R, np.float64), np.zeros((3, 3)), np.zeros(3, bool), cutoff)
    return set(zip(nl.receivers.tolist(), nl.senders.tolist(), strict=True))


@pytest.fixture(scope="module")
def big_cluster():
    return cluster()


def test_free_space_cell_list_finds_the_host_pairs_and_energy_also_after_atoms_leave_its_box(
    water_potential, big_cluster
):
    potential = water_potential.astype("float64")
    displacement, _ = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(potential, displacement, None, big_cluster.numbers)
    R = jnp.asarray(big_cluster.positions)
    nbrs = neighbor_fn.allocate(R)
    assert N_CLUSTER >= FREE_CELL_LIST_MIN_ATOMS and nbrs.cell_list_fn is not None  # cells, not N² candidates
    assert nbrs.idx.shape[1] < 0.05 * N_CLUSTER**2
    list_cutoff = potential.cutoff + 1.0  # cutoff + the default skin
    for cutoff in (potential.cutoff, list_cutoff - 1e-3):
        assert pairs_within(nbrs, R, cutoff) == host_pairs(R, cutoff)
    energy = float(jax.jit(energy_fn)(R, nbrs))
    atoms = big_cluster.copy()
    atoms.calc = nnpes.Calculator(potential, dtype="float64")
    assert abs(energy - atoms.get_potential_energy()) < 1e-9 * abs(energy)

    # expanded and moved far off: most atoms now lie outside the cell-list box of the allocation,
    # many at negative coordinates (int() truncates those toward zero: cell 0 is twice as wide)
    moved = R * 1.3 - 30.0
    hashed = np.asarray(moved + nbrs.list_offset)
    assert (hashed < 0).mean() > 0.5
    updated = jax.jit(lambda R, nbrs: nbrs.update(R))(moved, nbrs)
    assert not bool(updated.did_buffer_overflow)
    assert updated.cell_list_fn is not None
    assert pairs_within(updated, moved, potential.cutoff) == host_pairs(moved, potential.cutoff)
    atoms.positions = np.asarray(moved)
    assert abs(float(jax.jit(energy_fn)(moved, updated)) - atoms.get_potential_energy()) < 1e-9 * abs(energy)


def test_cell_list_choice_by_size_and_explicit_disable_cell_list_wins(water_potential, big_cluster, ethanol):
    displacement, _ = space.free()
    small_fn, _ = energy_neighbor_list(water_potential, displacement, None, [1, 8, 1, 8, 1, 8, 1, 8, 1])
    assert small_fn.allocate(jnp.asarray(ethanol.positions)).cell_list_fn is None  # molecules: N², as before
    off_fn, _ = energy_neighbor_list(water_potential, displacement, None, big_cluster.numbers, disable_cell_list=True)
    assert off_fn.allocate(jnp.asarray(big_cluster.positions)).cell_list_fn is None
    on_fn, _ = energy_neighbor_list(water_potential, displacement, None, [1, 8] * 10, disable_cell_list=False)
    gas = cluster(20)
    nbrs = on_fn.allocate(jnp.asarray(gas.positions))
    assert nbrs.cell_list_fn is not None
    assert pairs_within(nbrs, gas.positions, 3.0) == host_pairs(gas.positions, 3.0)


@pytest.mark.parametrize(("side", "cells"), [(10.0, False), (15.9, False), (16.1, True)])
def test_periodic_boxes_take_jax_mds_cell_list_from_four_list_cutoffs_wide(water_potential, side, cells):
    # cutoff 3 Å + skin 1 Å. Fractional cells are 1 / floor(width / 4 Å) wide and jax-md wants them
    # narrower than 1/3: a 15.9 Å box (3 cells) still lists N² candidates, 16.1 Å (4 cells) a cell list
    gas = random_gas(64, side=side)
    box = jnp.asarray(gas.cell[:].T)
    displacement, _ = space.periodic_general(box, fractional_coordinates=True)
    neighbor_fn, _ = energy_neighbor_list(water_potential, displacement, box, gas.numbers, fractional_coordinates=True)
    frac = jnp.asarray(gas.get_scaled_positions())
    nbrs = neighbor_fn.allocate(frac)
    assert (nbrs.cell_list_fn is not None) == cells
    settings = ListSettings(
        free=False, fractional=True, box=box, list_cutoff=4.0, capacity_multiplier=1.5, cell_list=None
    )
    assert (cell_grid(settings, frac) is not None) == cells


def test_memory_estimate_matches_the_list_jax_md_allocates_and_a_run_works(water_potential, big_cluster):
    sim = simulation(water_potential, big_cluster, ensemble="nve", dtype="float32", dt_fs=0.25)
    estimate = estimate_memory(sim)
    list_cutoff = sim.cutoff + sim.options.skin_a
    assert estimate.pairs == len(host_pairs(big_cluster.positions, list_cutoff))
    nbrs = sim.neighbor_fn.allocate(sim.positions)
    assert estimate.capacity == nbrs.max_occupancy  # int(pairs × capacity_multiplier), as jax-md
    assert estimate.candidates == N_CLUSTER * 27 * nbrs.cell_list_capacity
    assert 0 < estimate.model_bytes and 0 < estimate.build_bytes < 2**30
    result = run(sim, 4, chunk_steps=2)  # passes the check (the machine has room), updates the cell list in jit
    assert np.all(np.isfinite(result.epot)) and result.neighbor.cell_list_fn is not None


def test_too_large_for_memory_is_one_line_before_any_list_is_allocated(water_potential, big_cluster, monkeypatch):
    assert N_CLUSTER >= MEMORY_CHECK_MIN_ATOMS
    sim = simulation(water_potential, big_cluster, ensemble="nve", dtype="float32")
    allocated = []
    allocate, update = sim.neighbor_fn
    sim.neighbor_fn = partition.NeighborListFns(lambda *a, **k: allocated.append(1) or allocate(*a, **k), update)
    monkeypatch.setenv("NNPES_MEMORY_LIMIT_GB", "0.001")
    with pytest.raises(ModelError) as error:
        run(sim, 10)
    message = str(error.value)
    assert "\n" not in message and not allocated
    assert message.startswith(f"ase.Atoms: MD of {N_CLUSTER} atoms (")
    assert "pairs within cutoff+skin) needs about" in message and "fewer atoms" in message


def test_cli_md_too_large_for_memory_is_one_line_and_exit_status_2(
    water_potential, big_cluster, tmp_path, capsys, monkeypatch
):
    import nnpes.cli

    model_dir = tmp_path / "model"
    water_potential.save(model_dir)
    start = tmp_path / "cluster.xyz"
    ase.io.write(start, big_cluster, format="extxyz")
    monkeypatch.setenv("NNPES_MEMORY_LIMIT_GB", "0.001")
    argv = ["--no-compile-cache", "md", str(model_dir), str(start), "--ensemble", "nve", "--steps", "5"]
    assert nnpes.cli.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith(f"nnpes md: error: {start}: MD of {N_CLUSTER} atoms (")
    assert any("estimating memory" in line for line in lines[:-1])  # status lines come first
    assert all(line.startswith("nnpes md: [") for line in lines[:-1])
    assert nnpes.cli.main([*argv, "--quiet"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
