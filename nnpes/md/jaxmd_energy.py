"""jax-md adaptor: an nnpes potential as a jax-md energy function with a neighbour list.

``neighbor_fn, energy_fn = energy_neighbor_list(potential, displacement_fn, box, numbers)``
works like jax-md's ``energy.lennard_jones_neighbor_list``: the model, its parameters and
the species are closed over, and ``energy_fn(R, neighbor)`` can be jitted, differentiated,
vmapped and handed to any ``jax_md.simulate`` integrator. No physics lives here: the edge
vectors come from jax-md's displacement function and the energy from
:func:`nnpes.physics.site_energies_from_vectors`, the function every other path uses.

Units: Å, eV, amu. jax-md then measures time in √(amu·Å²/eV) ≈ 10.1805 fs
(``ase.units.fs`` converts: ``dt = dt_fs * ase.units.fs``) and temperature as kT in eV.

Stress sign: ``jax_md.quantity.stress(energy_fn, R, box, neighbor=nbrs)`` is −(1/V) ∂E/∂ε
(positive under compression, like a pressure), so ASE stress = −jax-md stress (potential part;
jax-md adds the kinetic term m·v⊗v/V when given velocities), and ``quantity.pressure`` =
−trace(ASE stress)/3.
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
from nnpes.md.cell_lists import ListSettings, cell_grid
from nnpes.physics import site_energies_from_vectors
from nnpes.potential import Potential

DEFAULT_SKIN_A = 1.0  # Å: neighbour-list skin (jax-md's dr_threshold)
DEFAULT_CAPACITY_MULTIPLIER = 1.5


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
    total_charge: float = 0.0,
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
        total_charge: e, conserved by a model's latent charges (electrostatics term, whose k
            grid is fixed from ``box`` here: an NPT box that grows far gets fewer k vectors).
        **neighbor_kwargs: passed on to ``jax_md.partition.neighbor_list``. The format is
            always ``partition.Sparse``. ``disable_cell_list`` True or False forces the choice
            below (False in free space: a cell list at any size).

    Which candidates a list build searches, per case: :mod:`nnpes.md.cell_lists`.

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

        ``energy_fn(R, neighbor, *, params=None, box=None, perturbation=None, members=False)``
        is the total energy, eV, reference energies included (what :class:`nnpes.Calculator`
        gives); with ``members=True`` an ensemble's (M,) member energies instead, whose spread
        :func:`nnpes.md.uncertainty` turns into energy and force uncertainties.
        ``params`` replaces the model's parameters (differentiate with respect to them);
        ``box`` and ``perturbation`` are jax-md's keywords, used by ``quantity.pressure``,
        ``quantity.stress`` and ``simulate.npt_nose_hoover``. Pairs listed beyond the cutoff
        are masked. Stress sign: see the module docstring.

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
    box = 1.0 if free else _check_periodic_box(box, fractional_coordinates, cutoff, skin)
    static_box = box_matrix(jnp.asarray(box, jnp.float32 if not jax.config.jax_enable_x64 else jnp.float64))
    list_displacement = _fractional_displacement(static_box) if fractional_coordinates and not free else displacement_fn
    settings = ListSettings(free, fractional_coordinates, box, cutoff + skin, capacity_multiplier, cell_list)
    make_base = partial(
        partition.neighbor_list, list_displacement, r_cutoff=cutoff + skin, dr_threshold=0.0,
        capacity_multiplier=capacity_multiplier, fractional_coordinates=fractional_coordinates,
        format=partition.Sparse, **neighbor_kwargs,
    )  # fmt: skip
    allocate, update = _list_functions(make_base, settings, static_box, list_displacement, cutoff, skin)
    geometry = _Geometry(free, fractional_coordinates, static_box, float(total_charge))
    return partition.NeighborListFns(allocate, update), _energy_function(potential, displacement_fn, species, geometry)


def _check_periodic_box(box, fractional_coordinates: bool, cutoff: float, skin: float):
    """Refuse a periodic box jax-md's lists cannot use: not upper triangular, a matrix without
    fractional coordinates, or narrower than 2·(cutoff + skin); returns the box, unchanged."""
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
    return box


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


class _Geometry(NamedTuple):
    """What turns jax-md's positions into the Cartesian positions and cell that long-range
    terms read: free space or not, fractional coordinates, the box at build time, total charge."""

    free: bool
    fractional: bool
    box: jnp.ndarray
    total_charge: float

    def positions_and_cell(self, R, box=None, perturbation=None):
        """Cartesian positions (N, 3) Å and cell (1, 3, 3) Å (rows = lattice vectors; zero in
        free space), strained like jax-md's displacements when ``perturbation`` is given."""
        if self.free:
            return R, jnp.zeros((1, 3, 3), R.dtype)
        matrix = (self.box if box is None else box_matrix(box)).astype(R.dtype)  # columns = lattice vectors
        cart = R @ matrix.T if self.fractional else R
        if perturbation is not None:  # jax-md's strain: a number, (3,) or (3, 3), like a box
            strain = box_matrix(jnp.asarray(perturbation, R.dtype))
            cart, matrix = cart @ strain.T, strain @ matrix
        return cart, matrix.T[None]


def _energy_function(potential: Potential, displacement_fn, species, geometry: _Geometry):
    """The jax-md energy function (see :func:`energy_neighbor_list`): the edges of the list,
    masked beyond the cutoff, through :func:`nnpes.physics.site_energies_from_vectors`; the
    positions and cell go to terms that need the whole cell (Ewald sums, whose static grids
    are fixed here from the box the list was made for)."""
    n_atoms = len(species)
    potential = potential.for_cells(np.zeros((1, 3, 3)) if geometry.free else np.asarray(geometry.box).T[None])

    def energy_fn(R, neighbor, *, params=None, box=None, perturbation=None, members=False, **unused_kwargs):
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
        positions, cell = geometry.positions_and_cell(R, box, perturbation)

        def energy(model):
            interaction, reference, _ = site_energies_from_vectors(
                model,
                vectors,
                species,
                senders,
                receivers,
                valid,
                positions=positions,
                cell=cell,
                node_graph=jnp.zeros(n_atoms, jnp.int32),
                total_charge=jnp.full((1,), geometry.total_charge, R.dtype),
            )
            return jnp.sum(interaction) + jnp.sum(reference)

        if members:  # an ensemble's members one by one: (M,) energies, eV
            return model.member_map(energy)
        return energy(model)

    energy_fn.calibration = potential.calibration  # what nnpes.md.uncertainty reads
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
