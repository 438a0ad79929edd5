"""jax-md adaptor: an nnpes potential as a jax-md energy function with a neighbour list.

``neighbor_fn, energy_fn = energy_neighbor_list(potential, displacement_fn, box, numbers)``
works like jax-md's ``energy.lennard_jones_neighbor_list``: the model, its parameters and
the species are closed over, and ``energy_fn(R, neighbor)`` can be jitted, differentiated,
vmapped and handed to any ``jax_md.simulate`` integrator. No physics lives here: the edge
vectors come from jax-md's displacement function and the energy from
:func:`nnpes.physics.site_energies_from_vectors`, the function every other path uses.

Units: Å, eV, amu. jax-md then measures time in √(amu·Å²/eV) ≈ 10.1805 fs
(``ase.units.fs`` converts: ``dt = dt_fs * ase.units.fs``) and temperature as kT in eV.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax_md import dataclasses, partition

from nnpes.data.graph import species_indices
from nnpes.errors import ModelError
from nnpes.physics import site_energies_from_vectors
from nnpes.potential import Potential

DEFAULT_SKIN_A = 1.0  # Å: neighbour-list skin (jax-md's dr_threshold)
DEFAULT_CAPACITY_MULTIPLIER = 1.5
FREE_CELL_LIST_MIN_ATOMS = 1025  # free space: from this many atoms a cell list, below it all N² candidate pairs


class BoxTooSmallError(ModelError):
    """The periodic box is narrower than 2·(cutoff + skin): jax-md's minimum-image convention
    would miss periodic images, so no numbers are computed at all."""


@dataclasses.dataclass
class NeighborList(partition.NeighborList):
    """jax-md's sparse :class:`~jax_md.partition.NeighborList` plus what a safe update needs.

    Attributes (beyond jax-md's):
        reference_box: (3, 3) box (columns = lattice vectors, Å) when the list was built.
        box_too_small: bool, set by an update whose box became narrower than
            2·(cutoff + skin); the list is then unusable (check with :func:`needs_reallocation`).
        list_offset: (3,) Å added to the positions jax-md's cell list hashes (free space with a
            cell list: it moves the cluster, at the build, into the cell-list box; zero otherwise).
            ``reference_position`` holds the positions without it.
    """

    reference_box: jnp.ndarray
    box_too_small: jnp.ndarray
    list_offset: jnp.ndarray


def box_matrix(box) -> jnp.ndarray:
    """jax-md box (scalar side, (3,) sides or (3, 3) with lattice vectors as columns) → (3, 3)."""
    box = jnp.asarray(box)
    if box.ndim == 0:
        return box * jnp.eye(3, dtype=box.dtype)
    if box.ndim == 1:
        return jnp.diag(box)
    return box


def box_widths(box) -> jnp.ndarray:
    """(3,) distances between opposite faces of the box, Å (the minimum-image limit is half the
    smallest): 1 / |row k of box⁻¹|."""
    return 1.0 / jnp.linalg.norm(jnp.linalg.inv(box_matrix(box)), axis=1)


def needs_reallocation(neighbor: NeighborList) -> bool:
    """True when the list overflowed its capacity (jax-md's ``did_buffer_overflow``), its cells
    became too small for a shrunken box, or the box became too narrow (host-side check)."""
    return bool(neighbor.did_buffer_overflow) or bool(neighbor.cell_size_too_small) or bool(neighbor.box_too_small)


def energy_neighbor_list(
    potential: Potential,
    displacement_fn,
    box,
    atomic_numbers,
    *,
    dr_threshold: float = DEFAULT_SKIN_A,
    capacity_multiplier: float = DEFAULT_CAPACITY_MULTIPLIER,
    fractional_coordinates: bool = False,
    **neighbor_kwargs,
):
    """An nnpes potential as a jax-md (neighbour function, energy function) pair.

    Args:
        potential: the model; cast it first (``potential.astype("float64")``) to run in
            float64, with ``jax_enable_x64`` on.
        displacement_fn: from ``jax_md.space``: ``free()``, ``periodic(side)`` or
            ``periodic_general(box, fractional_coordinates=True)``.
        box: as jax-md takes it: a side length, (3,) side lengths, or a (3, 3) matrix whose
            columns are the lattice vectors (ASE's ``atoms.cell.T``; it must be upper
            triangular, i.e. ASE's standard cell form, for jax-md's cell list). Ignored in
            free space.
        atomic_numbers: (N,) atomic numbers of the atoms (static).
        dr_threshold: the skin, Å: pairs are listed up to cutoff + skin and the list is rebuilt
            only when atoms have moved far enough that a pair might have entered the cutoff.
        capacity_multiplier: headroom of a newly allocated list over the pairs it holds.
        fractional_coordinates: positions are fractional (with ``periodic_general``).
        **neighbor_kwargs: passed on to ``jax_md.partition.neighbor_list``. The format is
            always ``partition.Sparse``. ``disable_cell_list`` True or False forces the choice
            below (False in free space: a cell list at any size).

    Which candidates a build searches (:func:`cell_grid`; memory ∝ candidates):

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

    Returns:
        ``(neighbor_fn, energy_fn)``.

        ``neighbor_fn.allocate(R, extra_capacity=0, **kwargs)`` builds a list (on the host,
        not jittable); ``neighbor_fn.update(R, neighbor, margin=0.0, **kwargs)`` (or
        ``neighbor.update(R)``) rebuilds it inside jit when 2·(largest move since the build +
        margin) + ‖B B₀⁻¹ − I‖·(cutoff + skin) exceeds the skin, B₀ and B being the box at the
        build and now: a pair outside cutoff + skin then cannot have come within the cutoff,
        also while an NPT box changes. Pass ``margin`` ≥ the largest move of the next step
        when the update precedes the step, as :func:`nnpes.md.run` does. Like jax-md,
        ``update`` never raises: check :func:`needs_reallocation` (``did_buffer_overflow``).

        ``energy_fn(R, neighbor, *, params=None, box=None, perturbation=None)`` is the total
        energy, eV, reference energies included (what :class:`nnpes.Calculator` gives).
        ``params`` replaces the model's parameters (differentiate with respect to them);
        ``box`` and ``perturbation`` are jax-md's keywords, used by ``quantity.pressure``,
        ``quantity.stress`` and ``simulate.npt_nose_hoover``. Pairs listed beyond the cutoff
        are masked.

        Stress sign: ``jax_md.quantity.stress(energy_fn, R, box, neighbor=nbrs)`` is
        −(1/V) ∂E/∂ε (positive under compression, like a pressure), so
        ASE stress = −jax-md stress (potential part; jax-md adds the kinetic term m·v⊗v/V
        when given velocities), and ``quantity.pressure`` = −trace(ASE stress)/3.

    Raises:
        BoxTooSmallError: a periodic box narrower than 2·(cutoff + skin) (make a supercell,
            or use :class:`nnpes.Calculator`, which handles small cells).
        ModelError: an element the model does not know, or a box that is not upper triangular.
    """
    numbers = np.asarray(atomic_numbers).reshape(-1)
    species = jnp.asarray(species_indices(numbers, potential.atomic_numbers, "energy_neighbor_list"))
    cutoff, skin = float(potential.cutoff), float(dr_threshold)
    free = _is_free_space(displacement_fn, box, fractional_coordinates)
    cell_list = neighbor_kwargs.pop("disable_cell_list", None)
    cell_list = None if cell_list is None else not cell_list  # None: by size (free space)
    if free:
        box = 1.0
    else:
        _check_periodic_box(box, fractional_coordinates, cutoff, skin)
    static_box = box_matrix(jnp.asarray(box, jnp.float32 if not jax.config.jax_enable_x64 else jnp.float64))
    list_displacement = _fractional_displacement(static_box) if fractional_coordinates and not free else displacement_fn
    settings = ListSettings(
        free=free,
        fractional=fractional_coordinates,
        box=box,
        list_cutoff=cutoff + skin,
        capacity_multiplier=capacity_multiplier,
        cell_list=cell_list,
    )
    make_base = partial(
        partition.neighbor_list, list_displacement, r_cutoff=cutoff + skin, dr_threshold=0.0,
        capacity_multiplier=capacity_multiplier, fractional_coordinates=fractional_coordinates,
        format=partition.Sparse, **neighbor_kwargs,
    )  # fmt: skip
    allocate, update = _list_functions(make_base, settings, static_box, list_displacement, cutoff, skin)
    energy_fn = _energy_function(potential, displacement_fn, species, len(numbers))
    return partition.NeighborListFns(allocate, update), energy_fn


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


def _check_periodic_box(box, fractional_coordinates: bool, cutoff: float, skin: float) -> None:
    """Refuse a periodic box jax-md's lists cannot use: not upper triangular, a matrix without
    fractional coordinates, or narrower than 2·(cutoff + skin)."""
    box_np = np.asarray(box, np.float64)
    if box_np.ndim == 2 and not np.allclose(np.triu(box_np), box_np):
        raise ModelError(
            "box must be upper triangular (columns = lattice vectors, ASE's standard cell "
            "form): rotate with atoms.set_cell(atoms.cell.standard_form()[0], scale_atoms=True)"
        )
    if box_np.ndim == 2 and not fractional_coordinates:
        raise ModelError(
            "a (3, 3) box needs space.periodic_general(box, fractional_coordinates=True) and "
            "fractional_coordinates=True here"
        )
    check_box(box_np, cutoff, skin)


def _list_functions(make_base, settings: ListSettings, static_box, list_displacement, cutoff: float, skin: float):
    """(allocate, update) around jax-md's lists: box checks, the skin criterion with margin and
    box strain, the box-too-small flag (see :func:`energy_neighbor_list`), and in free space the
    cell-list box chosen at each allocation (:func:`cell_grid`).

    jax-md's update rebuilds with the list's own ``cell_list_fn`` and ``cell_size`` (the box of
    its allocation); its base only contributes the cutoff, metric and format, so one base with
    cell lists enabled updates every free-space list that has one."""
    list_cutoff = cutoff + skin
    free = settings.free
    forced = {} if settings.cell_list is None else {"disable_cell_list": not settings.cell_list}
    # free space without cells: jax-md's N² candidates, as always for molecules
    plain = make_base(settings.box, **({"disable_cell_list": True} if free else forced))
    cell_update = make_base(settings.box, disable_cell_list=False) if free else plain
    cell_bases: dict = {}  # free space: (3,) sides → base whose allocate builds cells over that box

    def cell_base(sides):
        if sides not in cell_bases:  # kept: its jitted candidate search compiles once per box
            cell_bases[sides] = make_base(np.asarray(sides), disable_cell_list=False)
        return cell_bases[sides]

    def wrap(nbrs, R, reference_box, too_small, offset):
        fields = {f.name: getattr(nbrs, f.name) for f in dataclasses.fields(partition.NeighborList)}
        fields["update_fn"] = update
        fields["reference_position"] = R  # jax-md stored the shifted positions
        size = fields["cell_size"]
        if isinstance(size, jax.Array) and not isinstance(size, jax.core.Tracer) and size.ndim == 0:
            # a static (metadata) field: jax compares metadata of lists with equal shapes, and an array
            # there raises ("metadata fields ... not hashable") when a second simulation traces
            fields["cell_size"] = float(size)
        return NeighborList(**fields, reference_box=reference_box, box_too_small=too_small, list_offset=offset)

    def allocate(R, extra_capacity: int = 0, **kwargs):
        current = static_box if "box" not in kwargs else box_matrix(kwargs["box"])
        if not free:
            check_box(np.asarray(current), cutoff, skin)
        grid = cell_grid(settings, R) if free else None
        with quiet_jax_md():
            if grid is None:
                nbrs = plain.allocate(R, extra_capacity, **kwargs)
                offset = jnp.zeros(3, R.dtype)
            else:
                offset = jnp.asarray(grid.offset, R.dtype)
                nbrs = cell_base(grid.box).allocate(R + offset, extra_capacity, **kwargs)
        return wrap(nbrs, R, current.astype(R.dtype), jnp.zeros((), bool), offset)

    def update(R, nbrs, margin=0.0, **kwargs):
        move_kwargs = {"box": kwargs["box"]} if "box" in kwargs else {}
        moves = jax.vmap(partial(list_displacement, **move_kwargs))(R, nbrs.reference_position)
        max_move = jnp.sqrt(jnp.max(jnp.sum(moves**2, axis=-1)))
        current = nbrs.reference_box if "box" not in kwargs else box_matrix(kwargs["box"]).astype(R.dtype)
        strain = jnp.linalg.norm(current @ jnp.linalg.inv(nbrs.reference_box) - jnp.eye(3, dtype=R.dtype))
        rebuild = 2.0 * (max_move + margin) + strain * list_cutoff > skin
        too_small = nbrs.box_too_small
        if not free and "box" in kwargs:
            too_small = too_small | (jnp.min(box_widths(current)) < 2.0 * list_cutoff)
        # cell_list_fn is static: which base rebuilds is decided while tracing
        base = cell_update if nbrs.cell_list_fn is not None else plain

        def build(old):
            with quiet_jax_md():
                new = base.update(R + old.list_offset, old, **kwargs)
            return wrap(new, R, current, too_small, old.list_offset)

        def keep(old):
            return old.set(box_too_small=too_small)

        return lax.cond(rebuild, build, keep, nbrs)

    return allocate, update


def _energy_function(potential: Potential, displacement_fn, species, n_atoms: int):
    """The jax-md energy function (see :func:`energy_neighbor_list`): the edges of the list,
    masked beyond the cutoff, through :func:`nnpes.physics.site_energies_from_vectors`."""

    def energy_fn(R, neighbor, *, params=None, box=None, perturbation=None, **unused_kwargs):
        valid = (neighbor.idx[0] < n_atoms) & (neighbor.idx[1] < n_atoms)
        senders = jnp.where(valid, neighbor.idx[0], 0)  # empty slots hold N: point them at atom 0, masked
        receivers = jnp.where(valid, neighbor.idx[1], 0)
        kwargs = {}
        if box is not None:
            kwargs["box"] = box  # space.periodic raises UnexpectedBoxException, which jax-md catches
        if perturbation is not None:
            kwargs["perturbation"] = perturbation
        vectors = jax.vmap(partial(displacement_fn, **kwargs))(R[senders], R[receivers])  # R_j − R_i
        model = potential if params is None else potential.replace(params=params)
        interaction, reference = site_energies_from_vectors(model, vectors, species, senders, receivers, valid)
        return jnp.sum(interaction) + jnp.sum(reference)

    return energy_fn


def _fractional_displacement(static_box):
    """periodic_general's fractional minimum-image displacement, written without a matrix-vector
    product. Reason: on XLA:CPU (jax 0.10.2) a vmapped ``box @ d`` followed by a sum inside the
    vmapped function, jax-md's squared-distance metric, is miscompiled beyond 2^14 pairs
    (float64; 2^15 in float32): jax-md's fractional neighbour lists then hold wrong pairs. The
    element-wise form below compiles correctly; it is used only to build lists."""

    def displacement(Ra, Rb, box=None, **unused_kwargs):
        B = static_box if box is None else box_matrix(box)
        d = jnp.mod(Ra - Rb + 0.5, 1.0) - 0.5
        return jnp.sum(B.astype(d.dtype) * d[None, :], axis=-1)

    return displacement


@contextlib.contextmanager
def quiet_jax_md():
    """Silence two harmless warnings jax emits while jax-md's own code is traced.

    * jax-md 0.2.29 scatters int64 indices into int32 arrays under x64 (indices < N²).
    * ``jax_md.util.high_precision_sum`` (jax-md's kinetic energy, used inside its Nosé–Hoover
      and NPT integrators) always asks ``jnp.sum`` for float64; without ``jax_enable_x64`` jax
      truncates that to float32, the precision a float32 run asked for, with a UserWarning.
      nnpes's own code never asks for float64 (the run loop computes its kinetic energy itself),
      so only jax-md's calls are wrapped in this.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="scatter inputs have incompatible types", category=FutureWarning)
        if not jax.config.jax_enable_x64:
            warnings.filterwarnings("ignore", message="Explicitly requested dtype float64", category=UserWarning)
        yield


def check_box(box, cutoff: float, skin: float) -> None:
    """Raise :class:`BoxTooSmallError` if the box is narrower than 2·(cutoff + skin)."""
    widths = np.asarray(box_widths(np.asarray(box, np.float64)))
    need = 2.0 * (cutoff + skin)
    if widths.min() < need:
        repeat = [max(1, math.ceil(need / w)) for w in widths]
        raise BoxTooSmallError(
            f"periodic box is {widths.min():.2f} Å wide, jax-md's minimum image needs at least 2·(cutoff + skin) = "
            f"{need:.2f} Å: make a supercell (ase: atoms.repeat({tuple(repeat)})) or use nnpes.Calculator with ASE"
        )


def _is_free_space(displacement_fn, box, fractional: bool) -> bool:
    """A long displacement comes back unchanged only in free space (periodic spaces wrap it)."""
    extent = 1.0 if fractional else float(np.max(np.abs(np.asarray(box, np.float64)))) if box is not None else 1.0
    far = 1000.37 * max(extent, 1.0)
    d = np.asarray(displacement_fn(jnp.asarray([far, 0.0, 0.0]), jnp.zeros(3)))
    return bool(abs(d[0] - far) < 1e-3 * far)
