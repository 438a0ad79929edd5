"""What one device does, inside ``shard_map``: migrate atoms to their domains, gather ghosts from
the neighbouring domains, list the local pairs, and replay the ghost exchange at every step.

Every function here sees one device's arrays (no leading device axes) and talks to the others
only through ``lax.ppermute`` / ``lax.pmax`` along the mesh axes ``x``, ``y``, ``z``
(:data:`nnpes.distributed.plan.AXES`). Fixed capacities come from the :class:`Plan`; what did
not fit is counted, never silently dropped: the counts (:data:`~nnpes.distributed.plan.STATS`)
go back to the host, which grows the plan and recomputes (:mod:`nnpes.distributed.md`).

Atoms of a device are a dict of per-slot arrays: ``positions`` (C, 3) Å, ``momenta`` (C, 3),
``forces`` (C, 3) eV/Å, ``masses`` (C,) amu, ``species`` (C,), ``ids`` (C,) (index in the input
structure) and ``valid`` (C,) (False: an empty slot). Empty slots have mass 1 and no momentum.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from nnpes.distributed.plan import AXES, STATS, Plan

_NEIGHBOUR_CELLS = jnp.asarray([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], jnp.int32)


class HaloList(NamedTuple):
    """One device's ghosts and local pairs, valid until an atom has moved skin/2 from ``reference``.

    Local atoms are the owned slots followed by each message's ghost slots (``plan.sends`` order).
    ``send_index[m]`` (capacity,): which local atoms message m sends (empty: the padding row);
    ``send_wrap`` (messages,): the lattice vectors (along the message's axis) subtracted from
    what it carries. ``species``, ``valid`` (local,); ``senders``, ``receivers``, ``pair_mask``
    (pairs,) over local atoms; ``stats`` (len(STATS),) what the rebuild needed (max over devices).
    """

    reference: jnp.ndarray
    send_index: tuple
    send_wrap: jnp.ndarray
    species: jnp.ndarray
    valid: jnp.ndarray
    senders: jnp.ndarray
    receivers: jnp.ndarray
    pair_mask: jnp.ndarray
    stats: jnp.ndarray


def domain_index() -> tuple:
    """(i, j, k): this device's domain along each axis."""
    return tuple(lax.axis_index(name) for name in AXES)


def shift(tree, axis: int, hop: int, plan: Plan):
    """Send ``tree`` to the device ``hop`` domains further along ``axis`` (periodically)."""
    n = plan.grid[axis]
    pairs = [(i, (i + hop) % n) for i in range(n)]
    return jax.tree.map(lambda x: lax.ppermute(x, AXES[axis], pairs), tree)


def take(mask, capacity: int):
    """(indices of the first ``capacity`` True entries, the padding index len(mask) after them;
    how many were True)."""
    index = jnp.nonzero(mask, size=capacity, fill_value=mask.shape[0])[0]
    return index.astype(jnp.int32), jnp.sum(mask, dtype=jnp.int32)


def gather(tree, index):
    """Rows ``index`` of every array of ``tree``; index len(x) reads a row of zeros."""
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.zeros((1, *x.shape[1:]), x.dtype)])[index], tree)


def concat(trees):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *trees)


def fractional(positions, cell):
    """Fractional coordinates (N, 3) of Cartesian positions (Å) in a cell (rows, Å)."""
    return positions @ jnp.linalg.inv(cell)


def wrap(atoms: dict, cell) -> dict:
    """Owned atoms moved by lattice vectors into the cell (fractional coordinates in [0, 1))."""
    u = fractional(atoms["positions"], cell)
    inside = (u - jnp.floor(u)) @ cell
    return {**atoms, "positions": jnp.where(atoms["valid"][:, None], inside, atoms["positions"])}


def migrate(atoms: dict, cell, plan: Plan) -> tuple[dict, dict]:
    """Hand every owned atom that left this domain to the domain it entered, axis by axis (so an
    atom crossing an edge or a corner takes two or three hops). Returns (atoms, counts): the
    owned slots and migration messages the device needed, atoms that crossed more than one
    domain (``jumped``: they are kept where they were and reported) and how many left."""
    here = domain_index()
    counts = {"owned": jnp.sum(atoms["valid"], dtype=jnp.int32), "migrate": jnp.int32(0)}
    counts |= {"jumped": jnp.int32(0), "migrated": jnp.int32(0)}
    for a, n in enumerate(plan.grid):
        if n == 1:
            continue
        u = fractional(atoms["positions"], cell)[:, a]
        target = jnp.clip(jnp.floor(u * n).astype(jnp.int32), 0, n - 1)
        step = jnp.mod(target - here[a], n)
        valid = atoms["valid"]
        leaving = [(valid & (step == 1), 1)] + ([(valid & (step == n - 1), -1)] if n > 2 else [])
        jumped = valid & (step != 0) & ~sum(m for m, _ in leaving).astype(bool)
        arrived = []
        for mask, hop in leaving:
            index, count = take(mask, plan.migrate)
            counts["migrate"] = jnp.maximum(counts["migrate"], count)
            counts["migrated"] = counts["migrated"] + count
            arrived.append(shift(gather(atoms, index), a, hop, plan))
        stay = valid & ~sum(m for m, _ in leaving).astype(bool)
        pool = concat([{**atoms, "valid": stay}, *arrived])
        index, count = take(pool["valid"], plan.owned)
        counts["owned"] = jnp.maximum(counts["owned"], count)
        counts["jumped"] = counts["jumped"] + jnp.sum(jumped, dtype=jnp.int32)
        atoms = gather(pool, index)
    atoms["masses"] = jnp.where(atoms["valid"], atoms["masses"], 1.0)
    return atoms, counts


def gather_ghosts(atoms: dict, cell, plan: Plan):
    """Collect the ghosts within ``plan.halo`` of this domain, stage by stage (module docstring of
    :mod:`nnpes.distributed.plan`). Returns (local positions, species, valid; send indices; wraps;
    the most ghosts one message of each axis needed)."""
    here = domain_index()
    local = {k: atoms[k] for k in ("positions", "species", "valid")}
    indices, wraps, needed = [], [], [0, 0, 0]
    for a in range(3):
        n, width = plan.grid[a], plan.widths[a] / plan.grid[a]
        xi = fractional(local["positions"], cell)[:, a] * n - here[a]  # slab units: owned in [0, 1)
        received = []
        for axis, hop in plan.sends:
            if axis != a:
                continue
            s = abs(hop)
            gap = (s - xi) if hop > 0 else (xi + s - 1.0)  # distance to the receiver's domain, slabs
            index, count = take(local["valid"] & (gap * width < plan.halo), plan.ghosts[a])
            needed[a] = jnp.maximum(needed[a], count)
            lattice = jnp.floor_divide(here[a] + hop, n).astype(jnp.int32)
            message = gather(local, index)
            message["positions"] = message["positions"] - lattice * cell[a]
            received.append(shift(message, a, hop, plan))
            indices.append(index)
            wraps.append(lattice)
        local = concat([local, *received])
    return local, tuple(indices), jnp.stack(wraps) if wraps else jnp.zeros(0, jnp.int32), needed


def exchange(owned_positions, cell, halo: HaloList, plan: Plan):
    """Local positions (owned, then ghosts) Å from owned positions: the messages of the last
    rebuild replayed with the current positions and cell. Differentiable: the transpose of each
    ``ppermute`` returns the ghosts' gradients to their owners."""
    local = owned_positions
    m = 0
    for a in range(3):
        received = []
        for axis, hop in plan.sends:
            if axis != a:
                continue
            message = gather(local, halo.send_index[m]) - halo.send_wrap[m] * cell[a]
            received.append(shift(message, a, hop, plan))
            m += 1
        local = jnp.concatenate([local, *received])
    return local


def local_pairs(positions, valid, cell, plan: Plan):
    """Directed pairs (senders j, receivers i, mask) of local atoms closer than cutoff + skin,
    found through a cell list over the local region (cells at least cutoff + skin wide along
    each lattice direction, so 27 cells hold every neighbour); and the most atoms one cell and
    the device's pairs needed."""
    here = jnp.stack(domain_index())
    grid, cells = jnp.asarray(plan.grid), jnp.asarray(plan.cells, jnp.int32)
    lower = here / grid - plan.halo / jnp.asarray(plan.widths)
    coord = jnp.floor((fractional(positions, cell) - lower) / jnp.asarray(plan.extent) * cells).astype(jnp.int32)
    coord = jnp.clip(coord, 0, cells - 1)
    n_cells = plan.cells[0] * plan.cells[1] * plan.cells[2]
    flat = lambda c: (c[..., 0] * cells[1] + c[..., 1]) * cells[2] + c[..., 2]  # noqa: E731
    bins = jnp.where(valid, flat(coord), n_cells)  # empty slots: a bin no atom looks into
    order = jnp.argsort(bins)
    sorted_bins = bins[order]
    starts = jnp.searchsorted(sorted_bins, jnp.arange(n_cells + 1))
    rank = jnp.arange(len(bins)) - starts[sorted_bins]
    filling = jnp.max(jnp.diff(starts)) if n_cells else jnp.int32(0)
    table = jnp.full((n_cells + 2, plan.cell_capacity), len(bins), jnp.int32)
    table = table.at[sorted_bins, rank].set(order.astype(jnp.int32), mode="drop")
    around = coord[:, None, :] + _NEIGHBOUR_CELLS[None]
    inside = jnp.all((around >= 0) & (around < cells), axis=-1)
    candidates = table[jnp.where(inside, flat(around), n_cells + 1)].reshape(len(bins), -1)
    padded = jnp.concatenate([positions, jnp.zeros((1, 3), positions.dtype)])
    d2 = jnp.sum((padded[candidates] - positions[:, None, :]) ** 2, axis=-1)
    me = jnp.arange(len(bins))[:, None]
    close = (candidates < len(bins)) & (candidates != me) & valid[:, None] & (d2 < plan.list_cutoff**2)
    index, count = take(close.reshape(-1), plan.pairs)
    width = candidates.shape[1]
    senders = jnp.where(index < close.size, candidates.reshape(-1)[jnp.minimum(index, close.size - 1)], 0)
    receivers = jnp.where(index < close.size, index // width, 0)
    return senders, receivers, index < close.size, filling, count


def rebuild(atoms: dict, cell, plan: Plan) -> tuple[dict, HaloList]:
    """Wrap, migrate, gather ghosts and list pairs: the new owned atoms and their halo list."""
    atoms, counts = migrate(wrap(atoms, cell), cell, plan)
    local, indices, wraps, needed = gather_ghosts(atoms, cell, plan)
    senders, receivers, mask, filling, pairs = local_pairs(local["positions"], local["valid"], cell, plan)
    counts |= {"ghosts_x": needed[0], "ghosts_y": needed[1], "ghosts_z": needed[2]}
    counts |= {"cell_capacity": filling, "pairs": pairs}
    stats = jnp.stack([jnp.asarray(counts[name], jnp.int32) for name in STATS])
    stats = lax.pmax(stats.at[-1].set(0), AXES).at[-1].set(lax.psum(counts["migrated"], AXES))
    stats = stats.at[STATS.index("jumped")].set(lax.psum(counts["jumped"], AXES))
    halo = HaloList(
        atoms["positions"], indices, wraps, local["species"], local["valid"], senders, receivers, mask, stats
    )
    return atoms, halo
