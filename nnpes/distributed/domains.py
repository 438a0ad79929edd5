"""A structure spread over a device mesh: :class:`Domains` (plan, mesh, potential), the host ↔
device layout, and the one energy function of the decomposition, with forces and stress from
autodiff across devices.

The energy is ``psum`` over devices of the site energies of each device's owned atoms, evaluated
on owned + ghost atoms (:mod:`nnpes.distributed.halo`). Forces are −∂E/∂R of that sum and the
virial −∂E/∂ε of a symmetric strain of positions and cell together: ``jax.grad`` through
``shard_map`` sends the ghosts' gradients back to their owners by the transpose of each
``ppermute`` (another ``ppermute``), so no force message is written by hand.

Global arrays have leading axes (Dx, Dy, Dz), sharded over the mesh axes ``x``, ``y``, ``z``; one
process per host works (``jax.distributed.initialize()`` first): arrays are made from each
process's own shards and read back with ``process_allgather``.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nnpes import compilation
from nnpes.data.graph import species_indices
from nnpes.distributed import halo as local
from nnpes.distributed.plan import AXES, STATS, Plan, estimate, grown, overflowed
from nnpes.errors import ModelError, SimulationError
from nnpes.models import receptive_hops
from nnpes.physics import site_energies_from_vectors
from nnpes.potential import Potential

log = logging.getLogger("nnpes.md")
SHARDED = P(*AXES)
GROWTH_ATTEMPTS = 6  # rebuilds with grown capacities before giving up (each at least ×1.5)


def mesh_for(grid, devices=None) -> jax.sharding.Mesh:
    """A mesh of axes x, y, z with ``grid`` devices (default: the first prod(grid) of jax.devices())."""
    n = int(np.prod(grid))
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) < n:
        raise ModelError(
            f"{n} devices asked for, {len(devices)} available "
            f"(on CPU: XLA_FLAGS=--xla_force_host_platform_device_count={n})"
        )
    return jax.sharding.Mesh(np.asarray(devices[:n], dtype=object).reshape(grid), AXES)


def _squeeze(tree):
    """One device's block of sharded arrays without the (1, 1, 1) leading axes shard_map leaves."""
    return jax.tree.map(lambda x: x.reshape(x.shape[3:]), tree)


def _per_device(fn, n_sharded: int):
    """``fn`` on one device's arrays: the leading (1, 1, 1) axes are removed from the first
    ``n_sharded`` arguments and put back on every output."""

    def inner(*args):
        out = fn(*[_squeeze(a) if i < n_sharded else a for i, a in enumerate(args)])
        return jax.tree.map(lambda x: x.reshape((1, 1, 1, *x.shape)), out)

    return inner


def _shard(fn, mesh, n_sharded: int, n_replicated: int, out_specs=SHARDED):
    """shard_map of ``fn(*sharded, *replicated)``: the first arguments split over the domains,
    the rest the same on every device."""
    in_specs = (SHARDED,) * n_sharded + (P(),) * n_replicated
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


@dataclasses.dataclass
class Domains:
    """A periodic structure decomposed over a mesh.

    Attributes:
        potential: the model (any family; terms that need the whole cell, such as Ewald sums,
            are refused). plan: static decomposition (:class:`nnpes.distributed.plan.Plan`).
        mesh: axes x, y, z. cell: (3, 3) lattice rows, Å. numbers: (N,) atomic numbers.
    """

    potential: Potential
    plan: Plan
    mesh: jax.sharding.Mesh
    cell: np.ndarray
    numbers: np.ndarray
    _jitted: dict = dataclasses.field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def sharding(self):
        return NamedSharding(self.mesh, SHARDED)

    def with_plan(self, plan: Plan) -> Domains:
        return dataclasses.replace(self, plan=plan, mesh=mesh_for(plan.grid, self.mesh.devices.reshape(-1)), _jitted={})

    # -- host <-> devices ------------------------------------------------------------------------
    def distribute(self, per_atom: dict) -> dict:
        """Place per-atom host arrays ((N, ...) in input order; positions Å) in their domains'
        padded slots: global arrays (Dx, Dy, Dz, owned, ...); ``plan.owned`` must hold the fullest
        domain (:func:`build` sees to it)."""
        n = self.n_atoms
        domain = _domain_of(self, per_atom["positions"])
        flat = np.ravel_multi_index(domain.T, self.plan.grid)
        order = np.argsort(flat, kind="stable")
        counts = np.bincount(flat, minlength=self.plan.devices)
        slot = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        fields = {**per_atom, "ids": np.arange(n), "valid": np.ones(n, bool)}
        out = {}
        for key, values in fields.items():
            values = np.asarray(values)
            empty = 1 if key == "masses" else 0
            padded = np.full((*self.plan.grid, self.plan.owned, *values.shape[1:]), empty, values.dtype)
            padded.reshape(self.plan.devices, self.plan.owned, *values.shape[1:])[flat[order], slot] = values[order]
            out[key] = self.put(padded)
        return out

    def put(self, array: np.ndarray):
        """A host array with leading (Dx, Dy, Dz) axes as a global array sharded over the mesh
        (each process fills only its own devices' shards)."""
        return jax.make_array_from_callback(array.shape, self.sharding(), lambda index: array[index])

    def collect(self, atoms: dict, values) -> np.ndarray:
        """A per-slot global array (Dx, Dy, Dz, owned, ...) as (N, ...) host values in input order."""
        host = to_host(values)
        ids, valid = to_host(atoms["ids"]), to_host(atoms["valid"])
        out = np.zeros((self.n_atoms, *host.shape[4:]), host.dtype)
        out[ids[valid]] = host[valid]
        return out

    # -- jitted device functions -----------------------------------------------------------------
    def rebuild_fn(self):
        """jit: (atoms, cell) → (atoms, halo list) after wrapping, migration and the ghost gather."""
        if "rebuild" not in self._jitted:
            fn = _per_device(lambda atoms, cell: local.rebuild(atoms, cell, self.plan), 1)
            self._jitted["rebuild"] = jax.jit(_shard(fn, self.mesh, 1, 1))
        return self._jitted["rebuild"]

    def energy(self, potential: Potential, positions, valid, halo: local.HaloList, cell, strain=None):
        """Total energy, eV, of owned positions (Dx, Dy, Dz, owned, 3) Å: traceable, and
        differentiable in positions, cell, strain ((3, 3), symmetric) and parameters."""
        strain = jnp.zeros((3, 3), positions.dtype) if strain is None else strain
        plan = self.plan

        def per_device(positions, valid, halo, potential, cell, strain):
            positions, valid, halo = _squeeze((positions, valid, halo))
            positions, cell = positions + positions @ strain, cell + cell @ strain
            r = local.exchange(positions, cell, halo, plan)
            vectors = r[halo.senders] - r[halo.receivers]
            interaction, reference, _ = site_energies_from_vectors(
                potential, vectors, halo.species, halo.senders, halo.receivers, halo.pair_mask
            )
            sites = (interaction + reference)[: plan.owned]
            return jax.lax.psum(jnp.sum(jnp.where(valid, sites, 0.0)), AXES)

        return _shard(per_device, self.mesh, 3, 3, out_specs=P())(positions, valid, halo, potential, cell, strain)

    def energy_forces_stress_fn(self):
        """jit: (potential, atoms, halo, cell) → energy eV, forces (Dx, Dy, Dz, owned, 3) eV/Å,
        stress (3, 3) eV/Å³ (ASE sign) and virial (3, 3) eV."""
        if "efs" not in self._jitted:

            def efs(potential, atoms, halo, cell):
                compilation.traced("distributed_energy_forces_stress")
                strain = jnp.zeros((3, 3), atoms["positions"].dtype)
                total = lambda r, e: self.energy(potential, r, atoms["valid"], halo, cell, 0.5 * (e + e.T))  # noqa: E731
                energy, (d_r, d_strain) = jax.value_and_grad(total, (0, 1))(atoms["positions"], strain)
                volume = jnp.abs(jnp.linalg.det(cell))
                return {"energy": energy, "forces": -d_r, "stress": d_strain / volume, "virial": -d_strain}

            self._jitted["efs"] = jax.jit(efs)
        return self._jitted["efs"]


def to_host(x) -> np.ndarray:
    """A global array on the host: gathered from every process when other processes hold parts of it."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_potential(potential: Potential) -> None:
    """Refuse what a decomposition cannot evaluate: terms that need the whole cell (Ewald sums,
    latent charges)."""
    if potential.has_charges or potential.for_cells(np.eye(3)[None] * 10.0) is not potential:
        raise ModelError(
            "spatial decomposition evaluates short-range potentials only: this one has a term that needs the "
            "whole cell (electrostatics); run it on one device (nnpes md without --devices)"
        )


def decompose(
    potential: Potential, atoms, devices: int | None = None, *, grid=None, skin_a: float = 1.0,
    capacity_multiplier: float = 1.5, dtype=None, device_list=None, plan: Plan | None = None,
) -> tuple[Domains, dict, local.HaloList]:  # fmt: skip
    """Spread a periodic ``ase.Atoms`` over ``devices`` domains and build its halo lists.

    Args:
        potential: the model (cast it for float64: ``potential.astype("float64")``).
        atoms: periodic in all three directions. devices: domains (default: every device).
        grid: force the (Dx, Dy, Dz) split (default: :func:`nnpes.distributed.plan.choose_grid`).
        skin_a: Å, pairs and ghosts are kept until an atom has moved half of it.
        capacity_multiplier: headroom of estimated capacities. dtype: of positions (default: the
            potential's). device_list: which devices (default: ``jax.devices()``).
        plan: start from these capacities instead of the estimate (grown where they overflow).

    Returns:
        (domains, atoms, halo): the decomposition, the owned atoms (global arrays, see
        :mod:`nnpes.distributed.halo`) and their halo list, capacities grown until nothing overflowed.
    """
    check_potential(potential)
    if not np.all(atoms.pbc):
        raise ModelError("spatial decomposition needs a cell periodic in all three directions")
    devices = len(jax.devices()) if devices is None else int(devices)
    cell = np.asarray(atoms.cell[:], np.float64)
    hops = receptive_hops(potential.model)
    plan = plan or estimate(cell, len(atoms), devices, potential.cutoff, skin_a, hops, capacity_multiplier, grid)
    dtype = potential.dtype if dtype is None else np.dtype(dtype)
    domains = Domains(potential, plan, mesh_for(plan.grid, device_list), cell, np.asarray(atoms.numbers))
    species = species_indices(domains.numbers, potential.atomic_numbers, "decompose")
    per_atom = {
        "positions": np.asarray(atoms.positions, dtype), "momenta": np.zeros((len(atoms), 3), dtype),
        "forces": np.zeros((len(atoms), 3), dtype), "masses": np.asarray(atoms.get_masses(), dtype),
        "species": np.asarray(species, np.int32),
    }  # fmt: skip
    if atoms.has("momenta"):
        per_atom["momenta"] = np.asarray(atoms.get_momenta(), dtype)
    return build(domains, per_atom, capacity_multiplier)


def build(domains: Domains, per_atom: dict, multiplier: float = 1.5):
    """(domains, atoms, halo) for host per-atom arrays, the plan grown until its first rebuild
    fits: the one place capacities are (re)allocated, at the start and after an overflow."""
    most = np.bincount(
        np.ravel_multi_index(_domain_of(domains, per_atom["positions"]).T, domains.plan.grid),
        minlength=domains.plan.devices,
    ).max()
    if most > domains.plan.owned:
        domains = domains.with_plan(domains.plan._replace(owned=int(np.ceil(most * multiplier)) + 1))
    for _ in range(GROWTH_ATTEMPTS):
        atoms = domains.distribute(per_atom)
        cell = jnp.asarray(domains.cell, per_atom["positions"].dtype)
        new_atoms, halo = domains.rebuild_fn()(atoms, cell)
        needed = stats_of(halo)
        if needed["jumped"]:
            raise SimulationError(f"{needed['jumped']} atoms lie outside the domains they were assigned to")
        if not overflowed(domains.plan, needed):
            return domains, new_atoms, halo
        log.info(f"decomposition: growing {', '.join(overflowed(domains.plan, needed))}")
        domains = domains.with_plan(grown(domains.plan, needed, multiplier))
    raise SimulationError(f"the decomposition's capacities kept overflowing after {GROWTH_ATTEMPTS} reallocations")


def _domain_of(domains: Domains, positions) -> np.ndarray:
    u = np.asarray(positions, np.float64) @ np.linalg.inv(domains.cell)
    grid = np.asarray(domains.plan.grid)
    return np.clip(np.floor((u - np.floor(u)) * grid).astype(int), 0, grid - 1)


def stats_of(halo: local.HaloList) -> dict[str, int]:
    """A rebuild's counts (:data:`nnpes.distributed.plan.STATS`) on the host."""
    values = to_host(halo.stats)[0, 0, 0]
    return {name: int(v) for name, v in zip(STATS, values)}


def energy_forces_stress(potential: Potential, atoms, devices: int | None = None, **kwargs) -> dict:
    """Energy (eV), forces ((N, 3) eV/Å, input order) and stress ((3, 3) eV/Å³, ASE sign) of a
    periodic ``ase.Atoms`` evaluated over ``devices`` domains (keywords: :func:`decompose`)."""
    domains, state, halo = decompose(potential, atoms, devices, **kwargs)
    cell = jnp.asarray(domains.cell, state["positions"].dtype)
    out = domains.energy_forces_stress_fn()(domains.potential, state, halo, cell)
    return {
        "energy": float(to_host(out["energy"])),
        "forces": domains.collect(state, out["forces"]),
        "stress": to_host(out["stress"]),
        "plan": domains.plan,
    }
