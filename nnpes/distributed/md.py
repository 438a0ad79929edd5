"""Molecular dynamics over a device mesh: NVE (velocity Verlet) and NVT (Langevin, BAOAB) with
the spatial decomposition of :mod:`nnpes.distributed`, in jitted chunks of steps.

Every step the largest move since the last rebuild is compared with the skin (as the
single-device list does, with room for the coming step); when it is too large every device
rebuilds at once: atoms are wrapped into the cell and migrate to the domains they entered,
ghosts and pairs are gathered anew (:func:`nnpes.distributed.halo.rebuild`). A rebuild that
needs more room than the plan's capacities, anywhere in a chunk, is caught on the host: the plan
is grown, the atoms are re-laid from the chunk's starting state and the chunk is computed again,
so the trajectory equals a run with large enough capacities from the start and no atom or pair
is ever dropped. Growths are counted (``neighbor_reallocations`` of the result).

Langevin noise is drawn per atom from (seed, step, atom index), so an NVT trajectory does not
depend on how many devices run it; the centre-of-mass momentum is removed every step, as on one
device. Units: Å, eV, amu, fs (jax-md's time unit inside: ``nnpes.md.units.FS``), K.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnpes import compilation
from nnpes.distributed.domains import Domains, build, decompose, log, to_host
from nnpes.distributed.halo import HaloList
from nnpes.distributed.plan import STATS, grown, overflowed
from nnpes.errors import ConfigError, Interrupted, SimulationError
from nnpes.md.config import MDConfig
from nnpes.md.guard import first_unstable, temperature_limit_k, unstable_message
from nnpes.md.loop import Tally
from nnpes.md.results import MDResult, md_result
from nnpes.md.units import BAR, FS, KB
from nnpes.md.velocities import initial_momenta, temperature_k

ENSEMBLES = (("nve", None), ("nvt", "langevin"))
PER_ATOM = ("positions", "momenta", "forces", "masses", "species")  # what a re-layout carries


@dataclasses.dataclass
class DomainSimulation:
    """A decomposed structure with its MD options, ready for :func:`run` (build with :func:`simulation`)."""

    domains: Domains
    options: MDConfig
    atoms: dict  # global arrays, the current state (see nnpes.distributed.halo)
    halo: HaloList
    start_time_fs: float = 0.0
    reallocations: int = 0

    @property
    def n_atoms(self) -> int:
        return self.domains.n_atoms


def simulation(
    potential,
    atoms,
    options: MDConfig | None = None,
    devices: int | None = None,
    *,
    grid=None,
    plan=None,
    device_list=None,
) -> DomainSimulation:
    """A :class:`DomainSimulation` of a periodic ``ase.Atoms`` over ``devices`` domains.

    Start velocities: the structure's own, else Maxwell–Boltzmann at ``options.temperature_k``
    (seeded), as on one device. ``options.dtype`` casts the potential. ``grid``, ``plan``,
    ``device_list``: see :func:`nnpes.distributed.decompose`.
    """
    options = options or MDConfig()
    if (options.ensemble, options.thermostat if options.ensemble == "nvt" else None) not in ENSEMBLES:
        raise ConfigError(
            f"--devices runs nve and nvt with the langevin thermostat, not {options.ensemble}"
            + (f" ({options.thermostat})" if options.ensemble == "nvt" else "")
        )
    start = atoms.copy()
    start.set_momenta(initial_momenta(atoms, options.temperature_k, options.seed))
    domains, state, halo = decompose(
        potential.astype(options.dtype), start, devices, grid=grid, skin_a=options.skin_a,
        capacity_multiplier=options.capacity_multiplier, dtype=options.dtype, plan=plan, device_list=device_list,
    )  # fmt: skip
    sim = DomainSimulation(domains, options, state, halo, float(atoms.info.get("time_fs", 0.0)))
    sim.atoms = {**state, "forces": _functions(sim, 1)[1](domains.potential, state, halo)["forces"]}
    return sim


def _functions(sim: DomainSimulation, records: int):
    """Jitted (chunk, start frame) for this plan, cached on the decomposition."""
    domains, options = sim.domains, sim.options
    key = ("md", records, options)
    if key in domains._jitted:
        return domains._jitted[key]
    dt, kT, skin = options.dt_fs * FS, options.temperature_k * KB, options.skin_a
    damping = math.exp(-dt / (options.tau_t_fs * FS))  # Langevin friction 1/tau over one step
    cell = jnp.asarray(domains.cell, options.dtype)
    rebuild = domains.rebuild_fn()

    def forces(potential, atoms, halo):
        grad = jax.grad(domains.energy, argnums=1)(potential, atoms["positions"], atoms["valid"], halo, cell)
        return -grad

    def step(potential, seed, i, carry):
        atoms, halo, peak, counts = carry
        valid = atoms["valid"][..., None]
        moved = jnp.max(jnp.linalg.norm(jnp.where(valid, atoms["positions"] - halo.reference, 0.0), axis=-1))
        speed = jnp.max(jnp.linalg.norm(jnp.where(valid, atoms["momenta"] / atoms["masses"][..., None], 0.0), axis=-1))
        due = 2.0 * (moved + dt * speed) > skin  # the update precedes the step: room for its move
        atoms, halo = lax.cond(due, lambda a, h: rebuild(a, cell), lambda a, h: (a, h), atoms, halo)
        stats = halo.stats[0, 0, 0]
        peak = jnp.maximum(peak, stats)
        counts = counts + due * jnp.stack([jnp.int32(1), stats[STATS.index("migrated")]])
        m = atoms["masses"][..., None]
        p = atoms["momenta"] + 0.5 * dt * atoms["forces"]
        if options.ensemble == "nvt":
            r = atoms["positions"] + 0.5 * dt * p / m
            p = _without_drift(_langevin({**atoms, "momenta": p}, jax.random.fold_in(seed, i), damping, kT), atoms)
            r = r + 0.5 * dt * p / m
        else:
            r = atoms["positions"] + dt * p / m
        atoms = {**atoms, "positions": r}
        f = forces(potential, atoms, halo)
        return {**atoms, "forces": f, "momenta": p + 0.5 * dt * f}, halo, peak, counts

    def observe(potential, atoms, halo):
        strain = jnp.zeros((3, 3), cell.dtype)
        energy = lambda e: domains.energy(potential, atoms["positions"], atoms["valid"], halo, cell, 0.5 * (e + e.T))  # noqa: E731
        epot, d_strain = jax.value_and_grad(energy)(strain)
        valid = atoms["valid"][..., None]
        ekin = 0.5 * jnp.sum(jnp.where(valid, atoms["momenta"] ** 2 / atoms["masses"][..., None], 0.0))
        volume = jnp.abs(jnp.linalg.det(cell))
        return {
            "positions": atoms["positions"], "velocities": atoms["momenta"] / atoms["masses"][..., None],
            "forces": atoms["forces"], "ids": atoms["ids"], "valid": atoms["valid"], "epot": epot, "ekin": ekin,
            "pressure": (2.0 * ekin - jnp.trace(d_strain)) / (3.0 * volume), "volume": volume,
        }  # fmt: skip

    def chunk(potential, atoms, halo, seed, first_step, n_steps):
        compilation.traced("distributed_md_chunk")
        carry = (atoms, halo, jnp.zeros(len(STATS), jnp.int32), jnp.zeros(2, jnp.int32))

        def record(carry, r):
            todo = jnp.clip(n_steps - r * options.every, 0, options.every)
            offset = first_step + r * options.every
            body = lambda i, c: step(potential, seed, offset + i, c)  # noqa: E731
            carry = lax.fori_loop(0, todo, body, carry)
            return carry, observe(potential, carry[0], carry[1])

        (atoms, halo, peak, counts), frames = lax.scan(record, carry, jnp.arange(records))
        return atoms, halo, peak, counts, frames

    def start(potential, atoms, halo):
        """The start frame, forces computed (a new or re-laid state has none yet)."""
        return observe(potential, {**atoms, "forces": forces(potential, atoms, halo)}, halo)

    starts = ("md_start", options)  # one compilation for every records_per_chunk
    domains._jitted.setdefault(starts, jax.jit(start))
    fns = jax.jit(chunk), domains._jitted[starts]
    domains._jitted[key] = fns
    return fns


def _langevin(atoms, key, damping: float, kT: float):
    """The O of BAOAB: the exact Ornstein–Uhlenbeck kick p → c p + √(1 − c²) √(m kT) ξ (c the
    one-step damping), the noise ξ drawn from (key, atom index): independent of the layout."""
    m = atoms["masses"][..., None]
    draw = lambda i: jax.random.normal(jax.random.fold_in(key, i), (3,), m.dtype)  # noqa: E731
    noise = jax.vmap(draw)(atoms["ids"].reshape(-1)).reshape(atoms["momenta"].shape)
    p = damping * atoms["momenta"] + math.sqrt(1.0 - damping**2) * jnp.sqrt(m * kT) * noise
    return jnp.where(atoms["valid"][..., None], p, 0.0)


def _without_drift(p, atoms):
    """Momenta without their centre-of-mass part (empty slots stay at zero)."""
    m, valid = atoms["masses"][..., None], atoms["valid"][..., None]
    total = jnp.sum(jnp.where(valid, p, 0.0), axis=(0, 1, 2, 3))
    mass = jnp.sum(jnp.where(valid, m, 0.0))
    return jnp.where(valid, p - m * total / mass, 0.0)


@dataclasses.dataclass
class _Tally(Tally):
    """The single-device loop's tally, plus rebuilds and migrations."""

    rebuilds: int = 0
    migrated: int = 0


def run(
    sim: DomainSimulation,
    steps: int,
    *,
    chunk_steps: int | None = None,
    callback: Callable[[int, int], None] | None = None,
    on_frames: Callable[[MDResult], None] | None = None,
) -> MDResult:
    """Run ``steps`` steps, recording every ``options.every``; ``sim`` continues from where it ends.

    Returns an :class:`MDResult` like :func:`nnpes.md.run` (backend ``"distributed"``;
    ``neighbor_reallocations`` counts plan growths) with, in ``state``, the rebuild and
    migration counts and the final plan. Raises :class:`SimulationError` when a recorded frame
    is unstable (its ``result`` holds the frames before) or an atom crossed more than one domain
    between two rebuilds."""
    from nnpes.md.driver import check_steps

    check_steps(steps)
    every = sim.options.every
    records = max(1, math.ceil(min(max(every, 200) if chunk_steps is None else chunk_steps, max(steps, 1)) / every))
    chunk_steps = records * every
    tally = _Tally(compilation.count("distributed_md_chunk"), sim.start_time_fs)
    seed = jax.random.PRNGKey(sim.options.seed)
    frames, done = [], 0
    first = _host_frames(
        sim,
        jax.tree.map(lambda x: x[None], _functions(sim, records)[1](sim.domains.potential, sim.atoms, sim.halo)),
        [0],
    )
    tally.limit_k = temperature_limit_k(sim.options, float(temperature_k(first["ekin"], sim.n_atoms)[0]))
    _accept(sim, frames, first, tally, on_frames)
    try:
        while done < steps:
            n = min(chunk_steps, steps - done)
            chunk_fn = _functions(sim, records)[0]
            compiled, t0 = compilation.count("distributed_md_chunk"), time.perf_counter()
            atoms, halo, peak, counts, out = chunk_fn(sim.domains.potential, sim.atoms, sim.halo, seed, done, n)
            needed = dict(zip(STATS, (int(v) for v in to_host(peak))))
            if overflowed(sim.domains.plan, needed):  # first: a truncated list may also have made atoms jump
                _regrow(sim, needed)
                continue
            if needed["jumped"]:
                raise SimulationError(
                    f"{needed['jumped']} atoms crossed more than one domain between two rebuilds "
                    f"at steps {done}–{done + n}: the time step is too long for the skin, or the system exploded",
                    _result(sim, frames, done, tally, stopped="unstable"),
                )
            if compilation.count("distributed_md_chunk") == compiled:
                tally.timed_steps, tally.timed_s = tally.timed_steps + n, tally.timed_s + time.perf_counter() - t0
            rebuilds, migrated = (int(v) for v in to_host(counts))
            tally.rebuilds, tally.migrated = tally.rebuilds + rebuilds, tally.migrated + migrated
            sim.atoms, sim.halo, done = atoms, halo, done + n
            step_numbers = done - n + np.minimum(np.arange(1, math.ceil(n / every) + 1) * every, n)
            _accept(sim, frames, _host_frames(sim, out, step_numbers), tally, on_frames)
            if callback is not None:
                callback(done, steps)
    except KeyboardInterrupt:
        result = _result(sim, frames, done, tally, stopped="interrupted")
        raise Interrupted(f"MD interrupted after {done} of {steps} steps", result) from None
    sim.start_time_fs += steps * sim.options.dt_fs
    return _result(sim, frames, steps, tally)


def _regrow(sim: DomainSimulation, needed: dict) -> None:
    """Re-lay the chunk's starting state with every outgrown capacity grown (the reallocation)."""
    log.info(f"decomposition: growing {', '.join(overflowed(sim.domains.plan, needed))} and recomputing the chunk")
    per_atom = {key: sim.domains.collect(sim.atoms, sim.atoms[key]) for key in PER_ATOM}
    domains = sim.domains.with_plan(grown(sim.domains.plan, needed, sim.options.capacity_multiplier))
    sim.domains, atoms, sim.halo = build(domains, per_atom, sim.options.capacity_multiplier)
    sim.atoms = atoms
    sim.reallocations += 1


def _host_frames(sim: DomainSimulation, out: dict, step_numbers) -> dict:
    """A chunk's first len(step_numbers) recorded frames on the host, atoms in input order."""
    k = len(step_numbers)
    host = {key: to_host(v)[:k] for key, v in out.items()}
    frames = {key: host[key] for key in ("epot", "ekin", "pressure", "volume")}
    for key in ("positions", "velocities", "forces"):
        values = np.zeros((k, sim.n_atoms, 3))
        for j in range(k):
            valid = host["valid"][j]
            values[j, host["ids"][j][valid]] = host[key][j][valid]
        frames[key] = values
    return {**frames, "step": np.asarray(step_numbers)}


def _accept(sim: DomainSimulation, frames: list, chunk: dict, tally: _Tally, on_frames) -> None:
    """Add checked frames to the run's (:func:`nnpes.md.guard.first_unstable`) and hand them on."""
    bad = first_unstable(chunk, sim.n_atoms, tally.limit_k)
    if bad is not None:
        j, reason = bad
        step = int(chunk["step"][j])
        kept = [*frames, jax.tree.map(lambda x: x[:j], chunk)]
        dt = sim.options.dt_fs
        result = _result(sim, [f for f in kept if len(f["ekin"])], step, tally, stopped="unstable")
        raise SimulationError(unstable_message(reason, step, tally.start_time_fs + step * dt, dt), result)
    frames.append(chunk)
    if on_frames is not None:
        on_frames(_result(sim, [chunk], int(chunk["step"][-1]), tally))


def _result(sim: DomainSimulation, frames: list, done: int, tally: _Tally, stopped=None) -> MDResult:
    cat = {k: np.concatenate([np.asarray(f[k], np.float64) for f in frames]) for k in frames[0]}
    n = len(cat["epot"])
    columns = {
        "time_fs": tally.start_time_fs + cat["step"] * sim.options.dt_fs, "positions": cat["positions"],
        "velocities": cat["velocities"], "forces": cat["forces"], "cells": np.repeat(sim.domains.cell[None], n, 0),
        "epot": cat["epot"], "ekin": cat["ekin"], "pressure_bar": cat["pressure"] / BAR, "volume_a3": cat["volume"],
    }  # fmt: skip
    wall = time.perf_counter() - tally.t_start
    state = {"plan": sim.domains.plan, "rebuilds": tally.rebuilds, "migrated": tally.migrated}
    return md_result(
        columns, numbers=sim.domains.numbers, pbc=np.ones(3, bool), options=sim.options, steps=done, wall_s=wall,
        steps_per_s=tally.timed_steps / tally.timed_s if tally.timed_s > 0 else done / wall,
        compilations=compilation.count("distributed_md_chunk") - tally.compiled_before, backend="distributed",
        neighbor_reallocations=sim.reallocations, state=state, stopped=stopped,
    )  # fmt: skip
