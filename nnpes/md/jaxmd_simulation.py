"""The jax-md :class:`Simulation` of one structure and its builder :func:`simulation`.

Positions are Cartesian in free space and fractional (``space.periodic_general``) in periodic
boxes; cells not in ASE's standard (lower-triangular rows) form are rotated into it and results
rotated back. The integrator comes from the ensemble table (:mod:`nnpes.md.ensembles`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import space

from nnpes.errors import ConfigError
from nnpes.md.config import MDConfig, configure
from nnpes.md.ensembles import Ensemble, ensemble, require_cell
from nnpes.md.jaxmd_energy import energy_neighbor_list, quiet_jax_md
from nnpes.md.structure import IN_MEMORY, check_structure, start_time_fs
from nnpes.md.units import FS, KB
from nnpes.md.velocities import initial_momenta
from nnpes.potential import Potential


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


def simulation(potential: Potential, atoms, options: MDConfig | None = None, **overrides) -> Simulation:
    """A jax-md :class:`Simulation` of an ``ase.Atoms`` (molecule, or cell periodic in 3-D and at
    least 2·(cutoff + skin) wide; smaller cells raise :class:`BoxTooSmallError`: use
    :func:`run_ase` or a supercell).

    Args:
        potential: the model. atoms: start structure (masses from ASE; its velocities are used
            when it has any; ``atoms.info["time_fs"]``, when there, is the time of its first
            frame). options: :class:`MDConfig`; keyword overrides replace its fields (validated).

    The structure is refused, before anything compiles, as :func:`nnpes.md.structure.check_structure`
    refuses it (DataError, ModelError or ConfigError, one line).
    """
    from nnpes.md.calculator import resolve_dtype

    options = configure(options, **overrides)
    check_structure(atoms, potential, options)
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
    )
    init_fn, apply_fn = ensemble(options).jaxmd(options, energy_fn, shift_fn)
    start_time = start_time_fs(atoms)
    # fmt: off
    return Simulation(options=options, numbers=np.asarray(atoms.numbers), masses=atoms.get_masses(), periodic=periodic,
                      box=box, rotation=rotation, positions=R, momenta=jnp.asarray(momenta, dtype), potential=potential,
                      energy_fn=energy_fn, neighbor_fn=neighbor_fn, displacement_fn=displacement_fn, shift_fn=shift_fn,
                      init_fn=init_fn, apply_fn=apply_fn, dtype=dtype, cutoff=potential.cutoff,
                      start_time_fs=start_time)
    # fmt: on
