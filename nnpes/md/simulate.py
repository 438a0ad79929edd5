"""Molecular dynamics with jax-md: ensembles, the chunked run loop, and the driver the CLI calls.

Units at the interface: Å, eV, amu, fs, K, bar. Inside jax-md, time is in
√(amu·Å²/eV) ≈ 10.1805 fs (``dt = dt_fs * ase.units.fs``), temperature is kT in eV
(k_B = 8.617333e-5 eV/K) and pressure is in eV/Å³ (``ase.units.bar`` = 6.2415e-7 eV/Å³).
Velocities are stored in Å per that time unit, which is also ASE's velocity unit.

The loop (:func:`run`) runs jitted chunks of steps. jax-md's neighbour-list update never
raises: it flags an overflow and carries on with a truncated list. So after every chunk the
flag is checked on the host; on overflow the list is reallocated with more room and the chunk
is computed again from the last good state, so a run's trajectory does not depend on when the
list overflowed. Reallocations and compilations are counted and reported.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from functools import partial

import ase.units
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax_md import quantity, simulate, space

from nnpes.errors import ConfigError
from nnpes.md.jax_md import (DEFAULT_CAPACITY_MULTIPLIER, DEFAULT_SKIN_A, BoxTooSmallError, box_widths,
                             energy_neighbor_list, needs_reallocation)
from nnpes.potential import Potential

FS = ase.units.fs  # one femtosecond in jax-md/ASE time units (1 unit ≈ 10.1805 fs)
KB = ase.units.kB  # eV/K
BAR = ase.units.bar  # eV/Å³
ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "nose-hoover")

COMPILATIONS = {"md_chunk": 0, "md_observe": 0}  # incremented while tracing: one per XLA compilation


@dataclasses.dataclass(frozen=True)
class MDOptions:
    """What to simulate.

    Attributes:
        ensemble: "nve" (velocity Verlet), "nvt" or "npt" (isotropic Nosé–Hoover, jax-md's
            ``npt_nose_hoover``).
        thermostat: for NVT, "langevin" (BAOAB, centre-of-mass momentum removed every step) or
            "nose-hoover" (chain of 3).
        dt_fs: time step, fs.
        temperature_k: target temperature, K; also the Maxwell–Boltzmann temperature of the
            initial velocities when the structure has none (0: start at rest).
        pressure_bar: NPT target pressure, bar.
        tau_t_fs: thermostat time constant, fs (Langevin friction = 1/tau).
        tau_p_fs: barostat time constant, fs.
        seed: initial velocities and Langevin noise.
        dtype: "float32" or "float64" (needs ``jax_enable_x64``).
        skin_a: neighbour-list skin, Å. capacity_multiplier: list headroom at allocation.
        every: record (and write) every this many steps.
    """

    ensemble: str = "nve"
    thermostat: str = "langevin"
    dt_fs: float = 0.5
    temperature_k: float = 300.0
    pressure_bar: float = 1.01325
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    seed: int = 0
    dtype: str = "float32"
    skin_a: float = DEFAULT_SKIN_A
    capacity_multiplier: float = DEFAULT_CAPACITY_MULTIPLIER
    every: int = 10

    def __post_init__(self):
        if self.ensemble not in ENSEMBLES:
            raise ConfigError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.thermostat not in THERMOSTATS:
            raise ConfigError(f"thermostat must be one of {', '.join(THERMOSTATS)}, got {self.thermostat!r}")
        for name in ("dt_fs", "tau_t_fs", "tau_p_fs", "capacity_multiplier"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.temperature_k < 0 or (self.ensemble != "nve" and self.temperature_k <= 0):
            raise ConfigError(f"temperature must be > 0 K for {self.ensemble}, got {self.temperature_k}")
        if self.every < 1:
            raise ConfigError(f"every must be ≥ 1, got {self.every}")
        if self.skin_a < 0:
            raise ConfigError(f"skin must be ≥ 0 Å, got {self.skin_a}")


def initial_momenta(atoms, temperature_k: float, seed: int) -> np.ndarray:
    """(N, 3) momenta, amu·Å/time unit: the structure's own velocities when it has any, else
    Maxwell–Boltzmann at temperature_k with the centre-of-mass momentum removed."""
    if atoms.has("momenta") and np.any(atoms.get_momenta() != 0):
        return np.asarray(atoms.get_momenta(), np.float64)
    masses = atoms.get_masses()[:, None]
    p = np.sqrt(masses * KB * temperature_k) * np.random.default_rng(seed).standard_normal((len(atoms), 3))
    if len(atoms) > 1:
        p -= masses * p.sum(axis=0) / masses.sum()
    return p


def degrees_of_freedom(n_atoms: int) -> int:
    """3N − 3: the centre-of-mass momentum is removed at the start and kept at zero."""
    return max(3 * n_atoms - 3, 1)


@dataclasses.dataclass
class Simulation:
    """A jax-md simulation of one structure: the space, energy, neighbour list and integrator.

    Build with :func:`simulation`. Positions are Cartesian in free space and fractional
    (``space.periodic_general``) in periodic boxes; cells not in ASE's standard (lower-
    triangular rows) form are rotated into it and results rotated back.
    """

    options: MDOptions
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

    def current_box(self, state):
        """(3, 3) box of a state (changes only under NPT)."""
        return simulate.npt_box(state) if self.options.ensemble == "npt" else self.box

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
        ens, R = self.options.ensemble, self.positions
        if ens == "nve":
            return self.init_fn(key, R, self.kT, mass=mass, momenta=p, neighbor=neighbor, params=self.potential.params)
        if ens == "npt":
            state = self.init_fn(key, R, self.box, mass=mass, momenta=p, neighbor=neighbor, params=self.potential.params)
            return state.set(thermostat=state.thermostat.set(degrees_of_freedom=degrees_of_freedom(self.n_atoms)))
        state = self.init_fn(key, R, mass=mass, momenta=p, neighbor=neighbor, params=self.potential.params)
        if self.options.thermostat == "nose-hoover":
            state = state.set(chain=state.chain.set(degrees_of_freedom=degrees_of_freedom(self.n_atoms)))
        return state


def simulation(potential: Potential, atoms, options: MDOptions | None = None, **overrides) -> Simulation:
    """A jax-md :class:`Simulation` of an ``ase.Atoms`` (molecule, or cell periodic in 3-D and at
    least 2·(cutoff + skin) wide; smaller cells raise :class:`BoxTooSmallError`: use
    :func:`run_ase` or a supercell).

    Args:
        potential: the model. atoms: start structure (masses from ASE; its velocities are used
            when it has any). options: :class:`MDOptions`; keyword overrides replace its fields.
    """
    from nnpes.md.ase import resolve_dtype

    options = dataclasses.replace(options or MDOptions(), **overrides)
    dtype = resolve_dtype(options.dtype)
    pbc = np.asarray(atoms.pbc, bool)
    if pbc.any() and not pbc.all():
        raise ConfigError(f"jax-md needs a molecule or a cell periodic in all directions, got pbc={pbc.tolist()}: "
                          "use the ASE path (nnpes md picks it)")
    periodic = bool(pbc.all())
    if options.ensemble == "npt" and not periodic:
        raise ConfigError("npt needs a periodic cell")
    potential = potential.astype(dtype)
    cell = np.asarray(atoms.cell[:], np.float64)
    positions = np.asarray(atoms.positions, np.float64)
    momenta = initial_momenta(atoms, options.temperature_k, options.seed)
    rotation = np.eye(3)
    if periodic and not np.allclose(np.tril(cell), cell, atol=1e-10):
        std_cell, rotation = atoms.cell.standard_form()
        cell = np.asarray(std_cell[:], np.float64)
        positions, momenta = positions @ rotation.T, momenta @ rotation.T
    if periodic:
        box = jnp.asarray(cell.T, dtype)
        R = jnp.asarray(np.mod(np.linalg.solve(cell.T, positions.T).T, 1.0), dtype)
        displacement_fn, shift_fn = space.periodic_general(box, fractional_coordinates=True)
    else:
        box = jnp.eye(3, dtype=dtype)
        R = jnp.asarray(positions, dtype)
        displacement_fn, shift_fn = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(potential, displacement_fn, box, atoms.numbers,
                                                  dr_threshold=options.skin_a,
                                                  capacity_multiplier=options.capacity_multiplier,
                                                  fractional_coordinates=periodic)
    init_fn, apply_fn = _integrator(options, energy_fn, shift_fn)
    return Simulation(options=options, numbers=np.asarray(atoms.numbers), masses=atoms.get_masses(),
                      periodic=periodic, box=box, rotation=rotation, positions=R,
                      momenta=jnp.asarray(momenta, dtype), potential=potential, energy_fn=energy_fn, neighbor_fn=neighbor_fn,
                      displacement_fn=displacement_fn, shift_fn=shift_fn, init_fn=init_fn, apply_fn=apply_fn,
                      dtype=dtype, cutoff=potential.cutoff)


def _integrator(options: MDOptions, energy_fn, shift_fn):
    dt, kT = options.dt_fs * FS, options.temperature_k * KB
    tau_t, tau_p = options.tau_t_fs * FS, options.tau_p_fs * FS
    if options.ensemble == "nve":
        return simulate.nve(energy_fn, shift_fn, dt)
    if options.ensemble == "npt":
        return simulate.npt_nose_hoover(energy_fn, shift_fn, dt, options.pressure_bar * BAR, kT,
                                        barostat_kwargs={"tau": tau_p}, thermostat_kwargs={"tau": tau_t})
    if options.thermostat == "nose-hoover":
        return simulate.nvt_nose_hoover(energy_fn, shift_fn, dt, kT, chain_length=3, tau=tau_t)
    init_fn, step_fn = simulate.nvt_langevin(energy_fn, shift_fn, dt, kT, gamma=1.0 / tau_t)

    def langevin_step(state, **kwargs):
        # Langevin noise kicks the centre of mass too; removing its momentum every step keeps
        # the 3N − 3 remaining degrees of freedom at T (a projection of a Gaussian stays Gaussian).
        state = step_fn(state, **kwargs)
        p, m = state.momentum, state.mass
        return state.set(momentum=p - m * jnp.sum(p, axis=0) / jnp.sum(jnp.broadcast_to(m, p[:, :1].shape)))

    return init_fn, langevin_step


# ----------------------------------------------------------------------------------------------
# the run loop


@dataclasses.dataclass
class MDResult:
    """Recorded frames (every ``every`` steps, step 0 included) and run statistics.

    Arrays are float64 numpy in the structure's own frame: time_fs (M,), positions (M, N, 3) Å,
    velocities (M, N, 3) Å per ASE time unit, forces (M, N, 3) eV/Å, cells (M, 3, 3) rows Å,
    epot/ekin/etot (M,) eV, temperature_k (M,), pressure_bar and volume_a3 (M,) (NaN for a
    molecule; pressure includes the kinetic term 2·E_kin/(3V)).
    """

    numbers: np.ndarray
    pbc: np.ndarray
    time_fs: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray
    cells: np.ndarray
    epot: np.ndarray
    ekin: np.ndarray
    temperature_k: np.ndarray
    pressure_bar: np.ndarray
    volume_a3: np.ndarray
    ensemble: str
    steps: int
    dt_fs: float
    wall_s: float
    steps_per_s: float
    neighbor_reallocations: int
    compilations: int
    backend: str
    state: object = None
    neighbor: object = None

    @property
    def etot(self) -> np.ndarray:
        return self.epot + self.ekin

    @property
    def ns_per_day(self) -> float:
        return self.steps_per_s * self.dt_fs * 86400 * 1e-6

    def drift_mev_per_atom_per_ps(self) -> float | None:
        """Slope of a least-squares line through E_tot/N against time, meV/atom/ps (NVE only)."""
        if self.ensemble != "nve" or len(self.time_fs) < 2:
            return None
        slope = np.polyfit(self.time_fs * 1e-3, self.etot / len(self.numbers), 1)[0]
        return float(slope * 1e3)

    def summary(self) -> dict:
        """The JSON report of ``nnpes md``."""
        return {"atoms": int(len(self.numbers)), "steps": int(self.steps), "dt_fs": float(self.dt_fs),
                "ensemble": self.ensemble, "backend": self.backend, "steps_per_s": float(self.steps_per_s),
                "ns_per_day": float(self.ns_per_day), "drift_mev_per_atom_per_ps": self.drift_mev_per_atom_per_ps(),
                "neighbor_reallocations": int(self.neighbor_reallocations), "compilations": int(self.compilations)}

    def to_atoms(self, i: int):
        """Frame i as ``ase.Atoms`` with velocities and a calculator holding energy and forces."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions[i], cell=self.cells[i], pbc=self.pbc)
        atoms.set_velocities(self.velocities[i])
        atoms.calc = SinglePointCalculator(atoms, energy=float(self.epot[i]), forces=self.forces[i])
        atoms.info["time_fs"] = float(self.time_fs[i])
        return atoms

    def write_trajectory(self, path: str, append: bool = False) -> None:
        """extxyz with positions, velocities (momenta), energy and forces of every recorded frame."""
        import ase.io

        ase.io.write(path, [self.to_atoms(i) for i in range(len(self.time_fs))], format="extxyz", append=append)

    def write_thermo(self, path: str) -> None:
        """CSV: time_fs, epot_ev, ekin_ev, etot_ev, temperature_k, pressure_bar, volume_a3."""
        cols = np.column_stack([self.time_fs, self.epot, self.ekin, self.etot, self.temperature_k,
                                self.pressure_bar, self.volume_a3])
        np.savetxt(path, cols, delimiter=",", fmt="%.15g", comments="",
                   header="time_fs,epot_ev,ekin_ev,etot_ev,temperature_k,pressure_bar,volume_a3")


def _functions(sim: Simulation, records_per_chunk: int):
    """Jitted (chunk, observe), cached on the simulation (one compilation per list capacity)."""
    key = ("fns", records_per_chunk)
    if key in sim._jitted:
        return sim._jitted[key]
    every, dt = sim.options.every, sim.dt

    def observe(state, nbrs, params):
        box = sim.current_box(state)
        ekin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        if sim.periodic:
            volume = jnp.abs(jnp.linalg.det(box))
            U = lambda eps: sim.energy_fn(state.position, nbrs, box=box, perturbation=1.0 + eps,  # noqa: E731
                                          params=params)
            epot, dU = jax.value_and_grad(U)(jnp.zeros((), state.position.dtype))
            pressure = (2.0 * ekin - dU) / (3.0 * volume)
        else:
            volume = pressure = jnp.zeros((), state.position.dtype)  # NaN on the host (jax_debug_nans-safe)
            epot = sim.energy_fn(state.position, nbrs, params=params)
        return {"positions": sim.real_positions(state, box), "velocities": state.momentum / state.mass,
                "forces": state.force, "box": box, "epot": epot, "ekin": ekin, "pressure": pressure,
                "volume": volume}

    def step(params, _, carry):
        state, nbrs = carry
        speed = jnp.sqrt(jnp.max(jnp.sum((state.momentum / state.mass) ** 2, axis=-1)))
        # the update precedes the step: leave room for twice the coming step's displacement
        nbrs = nbrs.update(state.position, margin=2.0 * dt * speed, **sim.box_kwargs(state))
        return sim.apply_fn(state, neighbor=nbrs, params=params), nbrs

    def chunk(state, nbrs, params, n_steps):
        COMPILATIONS["md_chunk"] += 1  # runs only while tracing: one count per compilation

        def record(carry, r):
            todo = jnp.clip(n_steps - r * every, 0, every)
            carry = lax.fori_loop(0, todo, partial(step, params), carry)
            return carry, observe(*carry, params)

        (state, nbrs), frames = lax.scan(record, (state, nbrs), jnp.arange(records_per_chunk))
        return state, nbrs, frames

    def observe_once(state, nbrs, params):
        COMPILATIONS["md_observe"] += 1
        return observe(state, nbrs, params)

    fns = jax.jit(chunk), jax.jit(observe_once)
    sim._jitted[key] = fns
    return fns


def _reallocate(sim: Simulation, state, old, bad_state, attempt: int):
    """A list at the good state with room for what the bad chunk needed, growing on retries."""
    growth = max(sim.options.capacity_multiplier, 1.25)
    target = math.ceil(old.max_occupancy * growth**attempt)
    bad_R = bad_state.position
    if bool(jnp.all(jnp.isfinite(bad_R))):
        try:
            target = max(target, sim.neighbor_fn.allocate(bad_R, **sim.box_kwargs(bad_state)).max_occupancy)
        except BoxTooSmallError:
            pass
    kwargs = sim.box_kwargs(state)
    base = sim.neighbor_fn.allocate(state.position, **kwargs)
    extra = max(0, math.ceil((target - base.max_occupancy) / sim.n_atoms)) + (attempt - 1)
    return sim.neighbor_fn.allocate(state.position, extra_capacity=extra, **kwargs) if extra else base


def run(sim: Simulation, steps: int, *, state=None, neighbor=None, chunk_steps: int | None = None,
        callback: Callable[[int, int], None] | None = None) -> MDResult:
    """Run ``steps`` MD steps in jitted chunks, recording every ``sim.options.every`` steps.

    Args:
        sim: from :func:`simulation`.
        steps: number of time steps.
        state: continue from this integrator state (default: the start structure).
        neighbor: start from this neighbour list (default: allocated at the start); it may be
            too small: overflows are caught and repaired.
        chunk_steps: steps per jitted chunk (rounded to a multiple of ``every``; default ≈ 200).
        callback: called as callback(steps_done, steps) after each accepted chunk.

    Returns:
        :class:`MDResult`; its ``state`` and ``neighbor`` continue the run.

    Overflow handling: after each chunk the list's overflow flag is read; if set, the list is
    reallocated at the chunk's starting state with room for the pairs the chunk needed
    (times ``capacity_multiplier``) and the chunk recomputed, so the trajectory equals one run
    with a large enough list from the start.
    """
    every = sim.options.every
    if chunk_steps is None:
        chunk_steps = max(every, 200)
    records = max(1, math.ceil(chunk_steps / every))
    chunk_steps = records * every  # chunks start on recorded steps
    chunk_fn, observe_fn = _functions(sim, records)
    compiled_before = sum(COMPILATIONS.values())
    reallocations = 0
    t_start = time.perf_counter()

    if state is None:
        nbrs = neighbor if neighbor is not None else sim.neighbor_fn.allocate(sim.positions)
        nbrs = nbrs.update(sim.positions)
        if needs_reallocation(nbrs):
            nbrs, reallocations = sim.neighbor_fn.allocate(sim.positions), reallocations + 1
        state = sim.init_state(nbrs)
    else:
        kwargs = sim.box_kwargs(state)
        nbrs = neighbor if neighbor is not None else sim.neighbor_fn.allocate(state.position, **kwargs)
        nbrs = nbrs.update(state.position, **kwargs)
        if needs_reallocation(nbrs):
            nbrs, reallocations = sim.neighbor_fn.allocate(state.position, **kwargs), reallocations + 1
    params = sim.potential.params
    frames = [jax.device_get(jax.tree.map(lambda x: x[None], observe_fn(state, nbrs, params)))]

    done, timed_steps, timed_s, attempt = 0, 0, 0.0, 0
    while done < steps:
        n = min(chunk_steps, steps - done)
        compiled = sum(COMPILATIONS.values())
        t0 = time.perf_counter()
        new_state, new_nbrs, out = chunk_fn(state, nbrs, params, n)
        jax.block_until_ready(new_state.position)
        if bool(new_nbrs.box_too_small):
            raise BoxTooSmallError(f"the NPT box shrank below 2·(cutoff + skin) = {2 * (sim.cutoff + sim.options.skin_a):.2f}"
                                   f" Å at step {done}–{done + n}: use a larger supercell")
        if needs_reallocation(new_nbrs):
            attempt += 1
            reallocations += 1
            nbrs = _reallocate(sim, state, nbrs, new_state, attempt)
            continue
        if sum(COMPILATIONS.values()) == compiled:
            timed_steps, timed_s = timed_steps + n, timed_s + time.perf_counter() - t0
        attempt = 0
        state, nbrs = new_state, new_nbrs
        n_rec = math.ceil(n / every)
        frames.append(jax.device_get(jax.tree.map(lambda x: x[:n_rec], out)))
        done += n
        if callback is not None:
            callback(done, steps)
    wall = time.perf_counter() - t_start
    steps_per_s = timed_steps / timed_s if timed_s > 0 else steps / wall

    cat = {k: np.concatenate([np.asarray(f[k], np.float64) for f in frames]) for k in frames[0]}
    n_frames = len(cat["epot"])
    step_index = np.concatenate([[0], np.minimum(np.arange(1, n_frames) * every, steps)]) if n_frames > 1 else [0]
    # frames of each chunk are at multiples of `every` from the chunk start, chunk starts are multiples too
    q = sim.rotation
    cells = np.swapaxes(cat["box"], 1, 2)  # columns → rows
    result = MDResult(
        numbers=sim.numbers, pbc=np.full(3, sim.periodic), time_fs=np.asarray(step_index, np.float64) * sim.options.dt_fs,
        positions=cat["positions"] @ q, velocities=cat["velocities"] @ q, forces=cat["forces"] @ q,
        cells=cells @ q if sim.periodic else np.zeros_like(cells), epot=cat["epot"], ekin=cat["ekin"],
        temperature_k=2.0 * cat["ekin"] / (degrees_of_freedom(sim.n_atoms) * KB),
        pressure_bar=cat["pressure"] / BAR if sim.periodic else np.full(n_frames, np.nan),
        volume_a3=cat["volume"] if sim.periodic else np.full(n_frames, np.nan), ensemble=sim.options.ensemble, steps=steps,
        dt_fs=sim.options.dt_fs, wall_s=wall, steps_per_s=steps_per_s, neighbor_reallocations=reallocations,
        compilations=sum(COMPILATIONS.values()) - compiled_before, backend="jax-md", state=state, neighbor=nbrs)
    return result


# ----------------------------------------------------------------------------------------------
# the ASE path and the driver


def run_ase(potential: Potential, atoms, steps: int, options: MDOptions | None = None,
            callback: Callable[[int, int], None] | None = None, **overrides) -> MDResult:
    """The same simulation with ASE's integrators and :class:`nnpes.Calculator` (any cell,
    small periodic cells and mixed boundary conditions included; slower: one host round trip
    per step). NVT Nosé–Hoover uses ``NoseHooverChainNVT``, NPT ``IsotropicMTKNPT``."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.verlet import VelocityVerlet

    from nnpes.md.ase import Calculator
    from nnpes.physics import TRACE_COUNT

    options = dataclasses.replace(options or MDOptions(), **overrides)
    atoms = atoms.copy()
    atoms.calc = Calculator(potential, dtype=options.dtype)
    atoms.set_momenta(initial_momenta(atoms, options.temperature_k, options.seed))
    periodic = bool(np.all(atoms.pbc))
    dt, tau_t, tau_p = options.dt_fs * FS, options.tau_t_fs * FS, options.tau_p_fs * FS
    if options.ensemble == "nve":
        dyn = VelocityVerlet(atoms, dt)
    elif options.ensemble == "npt":
        if not periodic:
            raise ConfigError("npt needs a cell periodic in all directions")
        dyn = IsotropicMTKNPT(atoms, dt, temperature_K=options.temperature_k, pressure_au=options.pressure_bar * BAR,
                              tdamp=tau_t, pdamp=tau_p)
    elif options.thermostat == "nose-hoover":
        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=options.temperature_k, tdamp=tau_t)
    else:
        atoms.set_constraint(FixCom())  # the centre of mass stays put: 3N − 3 degrees of freedom
        dyn = Langevin(atoms, dt, temperature_K=options.temperature_k, friction=1.0 / tau_t, fixcm=False,
                       rng=np.random.default_rng(options.seed))
    compiled_before = TRACE_COUNT["energy_forces_stress"]
    frames, t0 = [], time.perf_counter()

    def record():
        e = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        volume = atoms.get_volume() if periodic else np.nan
        pressure = np.nan
        if periodic:
            pressure = -np.mean(atoms.get_stress(include_ideal_gas=False)[:3]) + 2.0 * ekin / (3.0 * volume)
        frames.append((dyn.nsteps * options.dt_fs, atoms.positions.copy(), atoms.get_velocities(),
                       atoms.get_forces(), atoms.cell[:].copy(), e, ekin, pressure, volume))
        if callback is not None and dyn.nsteps > 0:
            callback(dyn.nsteps, steps)

    record()
    dyn.attach(record, interval=options.every)
    dyn.run(steps)
    if steps % options.every:
        record()
    wall = time.perf_counter() - t0
    cols = list(zip(*frames))
    ekin = np.asarray(cols[6], np.float64)
    return MDResult(
        numbers=atoms.numbers.copy(), pbc=atoms.pbc.copy(), time_fs=np.asarray(cols[0], np.float64),
        positions=np.asarray(cols[1]), velocities=np.asarray(cols[2]), forces=np.asarray(cols[3]),
        cells=np.asarray(cols[4]), epot=np.asarray(cols[5], np.float64), ekin=ekin,
        temperature_k=2.0 * ekin / (degrees_of_freedom(len(atoms)) * KB),
        pressure_bar=np.asarray(cols[7], np.float64) / BAR, volume_a3=np.asarray(cols[8], np.float64),
        ensemble=options.ensemble, steps=steps, dt_fs=options.dt_fs, wall_s=wall, steps_per_s=steps / wall,
        neighbor_reallocations=0, compilations=TRACE_COUNT["energy_forces_stress"] - compiled_before, backend="ase")


def choose_backend(potential: Potential, atoms, skin_a: float = DEFAULT_SKIN_A) -> str:
    """"jax-md" for molecules and periodic cells at least 2·(cutoff + skin) wide, else "ase"."""
    pbc = np.asarray(atoms.pbc, bool)
    if not pbc.any():
        return "jax-md"
    if not pbc.all():
        return "ase"
    widths = np.asarray(box_widths(np.asarray(atoms.cell[:], np.float64).T))
    return "jax-md" if widths.min() >= 2.0 * (potential.cutoff + skin_a) else "ase"


def run_md(potential: Potential, atoms, steps: int, options: MDOptions | None = None, backend: str = "auto",
           callback: Callable[[int, int], None] | None = None) -> MDResult:
    """Simulate ``atoms`` for ``steps`` steps with jax-md, or with ASE when the cell is too small
    for jax-md's minimum image (backend "auto"); "jax-md" or "ase" force one."""
    options = options or MDOptions()
    if backend == "auto":
        backend = choose_backend(potential, atoms, options.skin_a)
    if backend == "ase":
        return run_ase(potential, atoms, steps, options, callback=callback)
    if backend != "jax-md":
        raise ConfigError(f"backend must be auto, jax-md or ase, got {backend!r}")
    return run(simulation(potential, atoms, options), steps, callback=callback)
