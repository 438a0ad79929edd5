"""The jax-md :class:`Simulation` of one structure and its builder :func:`simulation`.

Positions are Cartesian in free space and fractional (``space.periodic_general``) in periodic
boxes; cells not in ASE's standard (lower-triangular rows) form are rotated into it and results
rotated back. The integrator comes from the ensemble table (:mod:`nnpes.md.ensembles`).

Large structures: :func:`check_memory` estimates what a run needs (the model's energy + forces
compiled on abstract shapes, the neighbour-list build, the recorded frames) before anything of
that size is allocated, and refuses with one line when it does not fit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import space

from nnpes import memory
from nnpes.data.io import total_charge
from nnpes.errors import ConfigError
from nnpes.md.cell_lists import ListSettings, cell_grid
from nnpes.md.config import MDConfig, configure
from nnpes.md.ensembles import Ensemble, ensemble, require_cell
from nnpes.md.jaxmd_energy import energy_neighbor_list, quiet_jax_md
from nnpes.md.structure import IN_MEMORY, check_structure, start_time_fs
from nnpes.md.units import FS, KB
from nnpes.md.velocities import initial_momenta
from nnpes.potential import Potential

log = logging.getLogger("nnpes.md")  # status lines of the slow phases (``nnpes md`` prints them)

MEMORY_CHECK_MIN_ATOMS = 1025  # smaller structures are not estimated: the estimate compiles, they fit anyway
GIB = 2**30


@dataclasses.dataclass
class Simulation:
    """A jax-md simulation of one structure: the space, energy, neighbour list and integrator.

    Build with :func:`simulation`; run with :func:`nnpes.md.run`.
    """

    options: MDConfig
    numbers: np.ndarray
    masses: np.ndarray  # (N,) amu
    periodic: bool
    box: jnp.ndarray  # (3, 3) columns = lattice vectors (standard orientation); identity in free space
    rotation: np.ndarray  # Q: standard-frame vector = Q @ input-frame vector
    positions: jnp.ndarray  # (N, 3) internal coordinates of the start structure
    momenta: jnp.ndarray  # (N, 3) standard frame
    potential: Potential  # cast to dtype; its params are passed to the jitted loop as an argument
    energy_fn: Callable
    neighbor_fn: object
    displacement_fn: Callable
    shift_fn: Callable
    init_fn: Callable
    apply_fn: Callable
    dtype: np.dtype
    cutoff: float
    start_time_fs: float = 0.0  # the start structure's clock (atoms.info["time_fs"]), fs
    source: str = IN_MEMORY  # names the structure in errors (a file path, or "ase.Atoms")
    _jitted: dict = dataclasses.field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def dt(self) -> float:
        return self.options.dt_fs * FS

    @property
    def kT(self) -> float:
        return self.options.temperature_k * KB

    @property
    def ensemble(self) -> Ensemble:
        return ensemble(self.options)

    def current_box(self, state):
        """(3, 3) box of a state (changes only under NPT)."""
        box_of = self.ensemble.box
        return box_of(state) if box_of is not None else self.box

    def box_kwargs(self, state) -> dict:
        return {"box": self.current_box(state)} if self.periodic else {}

    def real_positions(self, state_or_positions, box=None):
        R = getattr(state_or_positions, "position", state_or_positions)
        if not self.periodic:
            return R
        box = self.current_box(state_or_positions) if box is None else box
        return space.transform(box, R)

    def init_state(self, neighbor, momenta=None):
        """The integrator state at the start structure (forces need a valid neighbour list)."""
        key = jax.random.PRNGKey(self.options.seed)
        p = self.momenta if momenta is None else momenta
        mass = jnp.asarray(self.masses, self.dtype)
        with quiet_jax_md():  # jax-md's thermostat chains sum in float64 (see quiet_jax_md)
            return self.ensemble.start(
                self.init_fn,
                key,
                self.positions,
                self.box,
                self.kT,
                self.n_atoms,
                mass=mass,
                momenta=p,
                neighbor=neighbor,
                params=self.potential.params,
            )


def _periodic(atoms, options: MDConfig) -> bool:
    """True for a cell periodic in all directions; jax-md cannot run partly periodic cells."""
    pbc = np.asarray(atoms.pbc, bool)
    if pbc.any() and not pbc.all():
        raise ConfigError(
            f"{IN_MEMORY}: jax-md needs a molecule or a cell periodic in all directions, got pbc={pbc.tolist()}: "
            "use the ASE path (nnpes md picks it)"
        )
    return require_cell(options, bool(pbc.all()))


def _standard_frame(atoms, momenta: np.ndarray, periodic: bool):
    """(cell rows, positions, momenta, Q) with the cell rotated into ASE's standard form."""
    cell = np.asarray(atoms.cell[:], np.float64)
    positions = np.asarray(atoms.positions, np.float64)
    rotation = np.eye(3)
    if periodic and not np.allclose(np.tril(cell), cell, atol=1e-10):
        std_cell, rotation = atoms.cell.standard_form()
        cell = np.asarray(std_cell[:], np.float64)
        positions, momenta = positions @ rotation.T, momenta @ rotation.T
    return cell, positions, momenta, rotation


def simulation(
    potential: Potential, atoms, options: MDConfig | None = None, *, source: str | None = None, **overrides
) -> Simulation:
    """A jax-md :class:`Simulation` of an ``ase.Atoms`` (molecule, or cell periodic in 3-D and at
    least 2·(cutoff + skin) wide; smaller cells raise :class:`BoxTooSmallError`: use
    :func:`run_ase` or a supercell).

    Args:
        potential: the model. atoms: start structure (masses from ASE; its velocities are used
            when it has any; ``atoms.info["time_fs"]``, when there, is the time of its first
            frame). options: :class:`MDConfig`; keyword overrides replace its fields (validated).
        source: names the structure in errors (e.g. its file; default "ase.Atoms").

    The structure is refused, before anything compiles, as :func:`nnpes.md.structure.check_structure`
    refuses it (DataError, ModelError or ConfigError, one line).
    """
    from nnpes.md.calculator import resolve_dtype

    options = configure(options, **overrides)
    check_structure(atoms, potential, options, source=source)
    dtype = resolve_dtype(options.dtype)
    periodic = _periodic(atoms, options)
    potential = potential.astype(dtype)
    momenta = initial_momenta(atoms, options.temperature_k, options.seed)
    cell, positions, momenta, rotation = _standard_frame(atoms, momenta, periodic)
    if periodic:
        box = jnp.asarray(cell.T, dtype)
        R = jnp.asarray(np.mod(np.linalg.solve(cell.T, positions.T).T, 1.0), dtype)
        displacement_fn, shift_fn = space.periodic_general(box, fractional_coordinates=True)
    else:
        box = jnp.eye(3, dtype=dtype)
        R = jnp.asarray(positions, dtype)
        displacement_fn, shift_fn = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(
        potential,
        displacement_fn,
        box,
        atoms.numbers,
        dr_threshold=options.skin_a,
        capacity_multiplier=options.capacity_multiplier,
        fractional_coordinates=periodic,
        total_charge=total_charge(atoms, source or "ase.Atoms"),  # conserved by latent charges
    )
    init_fn, apply_fn = ensemble(options).jaxmd(options, energy_fn, shift_fn)
    start_time = start_time_fs(atoms)
    # fmt: off
    return Simulation(options=options, numbers=np.asarray(atoms.numbers), masses=atoms.get_masses(), periodic=periodic,
                      box=box, rotation=rotation, positions=R, momenta=jnp.asarray(momenta, dtype), potential=potential,
                      energy_fn=energy_fn, neighbor_fn=neighbor_fn, displacement_fn=displacement_fn, shift_fn=shift_fn,
                      init_fn=init_fn, apply_fn=apply_fn, dtype=dtype, cutoff=potential.cutoff,
                      start_time_fs=start_time, source=source or IN_MEMORY)
    # fmt: on


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """What a jax-md run of a structure needs, bytes, estimated before anything is allocated
    (see :func:`estimate_memory`)."""

    pairs: int  # directed pairs within cutoff + skin of the start structure
    capacity: int  # neighbour-list slots jax-md allocates for them
    candidates: int  # candidate pairs one list build searches (N × 27 × atoms per cell, or N²)
    model_bytes: int  # energy + forces at that capacity (XLA's memory analysis)
    build_bytes: int  # one neighbour-list build
    state_bytes: int  # integrator state and list, input and output copies of a chunk

    def total(self, frames_bytes: int = 0) -> int:
        """Peak bytes with ``frames_bytes`` of recorded frames. The model and the list build run
        one after the other, but they are added: XLA's compiler and runtime need room too, and
        on CPU (fcc Cu, default NequIP, 8 788 atoms) the peak RSS above the idle process was
        1.19 GiB against 1.30 GiB estimated so (1.05 GiB taking only the larger of the two)."""
        return self.model_bytes + self.build_bytes + self.state_bytes + frames_bytes


def _count_pairs(sim: Simulation, cutoff: float) -> int:
    """Directed pairs closer than ``cutoff`` (Å) in the start structure: the host neighbour
    list every nnpes entry point uses (:func:`nnpes.data.neighbors.neighbor_list`, O(N))."""
    from nnpes.data.neighbors import neighbor_list

    positions = np.asarray(sim.real_positions(sim.positions), np.float64)
    cell = np.asarray(sim.box, np.float64).T if sim.periodic else np.zeros((3, 3))
    return len(neighbor_list(positions, cell, np.full(3, sim.periodic), cutoff).senders)


def estimate_memory(sim: Simulation) -> MemoryEstimate:
    """Estimate the memory of a run of ``sim``'s start structure, without allocating anything
    of its size (cached on ``sim``; compiles the model's energy + forces once, seconds).

    * pairs: counted on the host within cutoff + skin; jax-md allocates int(pairs ×
      capacity_multiplier) slots, as here.
    * model: energy and forces of N atoms and that many edges, compiled on abstract shapes
      (``jax.ShapeDtypeStruct``), :func:`nnpes.memory.compiled_bytes`.
    * list build: jax-md gathers, for every atom, the atoms of the 27 cells around it (cell
      list; atoms per cell as jax-md counts them, × capacity_multiplier) or all N atoms; per
      candidate it holds about nine int32 arrays (candidate ids, self mask, senders, receivers,
      mask, cumulative sum, scatter targets, the two scattered outputs and their stack) and seven
      floats (the candidate's position, the centre's broadcast one, the squared distance), plus
      the cell buffers (position and id per slot).
    * state: positions, momenta, forces and masses, and the list, in and out of a chunk.
    """
    if "memory" in sim._jitted:
        return sim._jitted["memory"]
    n, options = sim.n_atoms, sim.options
    itemsize = np.dtype(sim.dtype).itemsize
    list_cutoff = sim.cutoff + options.skin_a
    pairs = _count_pairs(sim, list_cutoff)
    capacity = max(1, int(pairs * options.capacity_multiplier))
    settings = ListSettings(
        free=not sim.periodic,
        fractional=sim.periodic,
        box=sim.box if sim.periodic else 1.0,
        list_cutoff=list_cutoff,
        capacity_multiplier=options.capacity_multiplier,
        cell_list=None,
    )
    grid = cell_grid(settings, sim.positions)
    if grid is None:
        candidates, cell_bytes = n * n, 0
    else:
        per_cell = int(grid.cell_capacity(sim.positions) * options.capacity_multiplier)
        candidates, cell_bytes = n * 27 * per_cell, grid.cells * per_cell * (4 + 3 * itemsize)
    build = candidates * (9 * 4 + 7 * itemsize) + cell_bytes
    state = 2 * (n * 10 * itemsize + 2 * capacity * 4 + n * 3 * itemsize)
    log.info(f"compiling energy + forces of {n} atoms and {capacity} list slots for the memory estimate")
    model = _model_bytes(sim, capacity)
    estimate = MemoryEstimate(pairs, capacity, candidates, model if model is not None else 0, build, state)
    sim._jitted["memory"] = estimate
    return estimate


def _model_bytes(sim: Simulation, capacity: int) -> int | None:
    """Bytes of the energy + forces of ``sim``'s energy function with ``capacity`` list slots,
    compiled on abstract shapes (nothing of that size is allocated)."""

    def energy_and_forces(params, R, idx):
        return jax.value_and_grad(lambda R: sim.energy_fn(R, SimpleNamespace(idx=idx), params=params))(R)

    abstract = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))  # noqa: E731
    params = jax.tree.map(abstract, sim.potential.params)
    R = jax.ShapeDtypeStruct((sim.n_atoms, 3), sim.dtype)
    idx = jax.ShapeDtypeStruct((2, capacity), jnp.int32)
    return memory.compiled_bytes(jax.jit(energy_and_forces).lower(params, R, idx).compile())


def check_memory(sim: Simulation, recorded_frames: int, records_per_chunk: int) -> MemoryEstimate | None:
    """Refuse, with one line, a run that would not fit in memory (estimated by
    :func:`estimate_memory`); structures under :data:`MEMORY_CHECK_MIN_ATOMS` atoms pass unchecked.

    Args:
        sim: the simulation. recorded_frames: frames the run keeps on the host (float64 columns
            and the device copies they are made of). records_per_chunk: frames one jitted chunk
            returns at once.

    Raises:
        ModelError: the estimate exceeds :func:`nnpes.memory.available_bytes`.
    """
    n = sim.n_atoms
    if n < MEMORY_CHECK_MIN_ATOMS:
        return None
    log.info(f"estimating memory: counting pairs of {n} atoms within cutoff + skin")
    estimate = estimate_memory(sim)
    per_frame = n * 9  # positions, velocities, forces
    itemsize = np.dtype(sim.dtype).itemsize
    frames = per_frame * (records_per_chunk * itemsize + recorded_frames * (itemsize + 16))
    total = estimate.total(frames)
    available = memory.available_bytes()
    log.info(
        f"estimated memory {total / GIB:.2f} GiB (model {estimate.model_bytes / GIB:.2f}, neighbour-list build "
        f"{estimate.build_bytes / GIB:.2f}, frames {frames / GIB:.2f})"
        + (f" of {available / GIB:.1f} GiB available" if available is not None else "")
    )
    memory.check_fits(
        total,
        f"{sim.source}: MD of {n} atoms ({estimate.pairs} pairs within cutoff+skin)",
        hint="use fewer atoms, record less often (a larger every), a NequIP with a smaller edge_memory_mb, "
        "float32, or a machine with more memory",
    )
    return estimate
