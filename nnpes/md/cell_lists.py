"""Which candidate pairs jax-md's neighbour list searches, for the jax-md adaptor
(:func:`nnpes.md.energy_neighbor_list`); memory grows with the candidates (:func:`cell_grid`):

* free space, fewer than :data:`FREE_CELL_LIST_MIN_ATOMS` atoms: all N² pairs, exact and
  cheap for molecules however far they drift;
* free space, more atoms: a cell list over a box fitted at each allocation to the positions'
  extent + 2·(cutoff + skin) (atoms leaving it wrap into its cells, still correct; crowded
  cells overflow and are reallocated by :func:`nnpes.md.run`): N × 27 × (atoms per cell);
* periodic with fractional positions (``periodic_general``, as :func:`nnpes.md.simulation`
  builds it), at least 4·(cutoff + skin) between opposite faces: jax-md's cell list, the same
  N × 27 × (atoms per cell). jax-md's cells are 1 / floor(width / (cutoff + skin)) in
  fractional units and it wants them narrower than 1/3, so 3 cells per side are not enough;
* periodic, 2–4·(cutoff + skin) wide: all N² pairs (at most 64·(cutoff + skin)³ × density atoms,
  ~1 200 for Cu with a 6 Å list cutoff);
* periodic with Cartesian positions (``space.periodic(side)``): cells when the side exceeds
  3·(cutoff + skin).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax_md import partition

FREE_CELL_LIST_MIN_ATOMS = 1025  # free space: from this many atoms a cell list, below it all N² candidate pairs


class ListSettings(NamedTuple):
    """What decides how jax-md builds the list (see :func:`cell_grid`): free space or not,
    fractional positions, the box jax-md was given, cutoff + skin (Å), the capacity multiplier,
    and the cell list forced on (True), off (False) or chosen by size (None, free space only)."""

    free: bool
    fractional: bool
    box: object
    list_cutoff: float
    capacity_multiplier: float
    cell_list: bool | None


class CellGrid(NamedTuple):
    """jax-md's cell list for one build: ``box`` (side, or (3,) sides, Å; 1.0 for fractional
    positions) and ``cell_size`` as jax-md's ``cell_list`` takes them, and ``offset`` (3,) Å
    added to the positions before they are hashed into cells."""

    box: object
    cell_size: float
    offset: np.ndarray

    def cell_capacity(self, positions) -> int:
        """Atoms per cell jax-md allocates for ``positions`` (its ``_estimate_cell_capacity``
        without the multiplier: the fullest cell)."""
        box = np.reshape(self.box, (1, -1)) if np.ndim(self.box) else self.box
        filling = partition.count_cell_filling(jnp.asarray(positions) + self.offset, box, self.cell_size)
        return int(jnp.max(filling))

    @property
    def cells(self) -> int:
        """Number of cells."""
        per_side = np.floor(np.asarray(self.box, np.float64) / np.asarray(self.cell_size, np.float64))
        return int(np.prod(np.broadcast_to(per_side, (3,))))


def cell_grid(settings: ListSettings, positions, box=None) -> CellGrid | None:
    """The cell list jax-md builds for ``positions`` (None: it lists all N² candidate pairs).

    * Free space: a cell list from :data:`FREE_CELL_LIST_MIN_ATOMS` atoms (or when
      ``disable_cell_list=False`` was asked for), over a box spanning the positions' extent plus
      2·(cutoff + skin) with a margin, the positions moved into it by ``offset``. jax-md hashes
      cells with ``mod(int(x / cell_size), cells_per_side)``: an atom that later drifts out of
      the box wraps into a cell of the grid; pairs are still found, since neighbouring cells
      stay neighbours modulo the grid (≥ 3 cells per side) and int() truncates toward zero, which
      only doubles the width of cell 0; pairs are then pruned with the free-space distance, so
      aliased far atoms cost capacity, never wrong pairs (an overflow is flagged, the run loop
      reallocates).
    * Periodic: jax-md's own choice (``neighbor_list``: cells when ``cell_size < box / 3``): with
      fractional positions, cells of 1 / floor(width / (cutoff + skin)), width the narrowest face
      distance, so from 4 cells per side; with Cartesian ones cells of cutoff + skin, from a side
      of 3·(cutoff + skin). Else N².

    Args:
        settings: from :func:`energy_neighbor_list`. positions: (N, 3), as the list takes them.
        box: the current box (jax-md's ``box`` keyword), periodic only.
    """
    cutoff = settings.list_cutoff
    if settings.free:
        n_atoms = np.shape(positions)[0]
        if settings.cell_list is False or (settings.cell_list is None and n_atoms < FREE_CELL_LIST_MIN_ATOMS):
            return None
        R = np.asarray(positions, np.float64)
        lo, hi = R.min(axis=0), R.max(axis=0)
        # whole cells of cutoff + skin, ≥ 1 cell free either side, k + ½ so that floor(side / cutoff) = k ≥ 3
        k = np.maximum(np.ceil((hi - lo) / cutoff) + 2.0, 3.0)
        sides = (k + 0.5) * cutoff
        offset = (cutoff - lo).astype(np.asarray(positions).dtype)
        return CellGrid(box=tuple(float(x) for x in sides), cell_size=cutoff, offset=offset)
    if settings.cell_list is False:
        return None
    current = settings.box if box is None else box
    zero = np.zeros(3, np.asarray(positions).dtype)
    if settings.fractional:
        size = float(partition._fractional_cell_size(jnp.asarray(current), cutoff))
        return CellGrid(box=1.0, cell_size=size, offset=zero) if size < 1.0 / 3.0 else None
    if np.all(cutoff < np.asarray(current, np.float64) / 3.0):
        return CellGrid(box=current, cell_size=cutoff, offset=zero)
    return None
