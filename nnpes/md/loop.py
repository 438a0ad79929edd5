"""The jax-md run loop: jitted chunks of steps, neighbour-list overflow caught and repaired.

jax-md's neighbour-list update never raises: it flags an overflow and carries on with a
truncated list. So after every chunk the flag is checked on the host; on overflow the list is
reallocated with more room and the chunk is computed again from the last good state, so a run's
trajectory does not depend on when the list overflowed. Reallocations and compilations (read
from :mod:`nnpes.compilation`) are counted and reported.

Memory: before its first list, a structure of :data:`~nnpes.md.jaxmd_simulation.MEMORY_CHECK_MIN_ATOMS`
atoms or more is estimated (:func:`~nnpes.md.jaxmd_simulation.check_memory`) and refused with a
one-line ModelError when it would not fit. Slow phases are logged (logger ``nnpes.md``, INFO).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnpes import compilation
from nnpes.errors import Interrupted, SimulationError
from nnpes.md import alarm
from nnpes.md.driver import check_steps
from nnpes.md.guard import first_unstable, temperature_limit_k, unstable_message
from nnpes.md.jaxmd_energy import BoxTooSmallError, needs_reallocation, quiet_jax_md
from nnpes.md.jaxmd_simulation import Simulation, check_memory, log
from nnpes.md.results import MDResult, md_result
from nnpes.md.units import BAR
from nnpes.md.velocities import temperature_k

TRACED = ("md_chunk", "md_observe")  # the names this loop's jitted functions count under
UNSTABLE_OVERFLOWS = 2  # reallocations of one chunk after which an unstable chunk stops the run


def _observe_fn(sim: Simulation):
    """(state, nbrs, params) → the recorded quantities of one frame (traced inside the jit)."""

    def observe(state, nbrs, params):
        box = sim.current_box(state)
        # not jax-md's quantity.kinetic_energy: it asks for a float64 sum, a warning in float32 runs
        ekin = 0.5 * jnp.sum(state.momentum**2 / state.mass)
        if sim.periodic:
            volume = jnp.abs(jnp.linalg.det(box))
            U = lambda eps: sim.energy_fn(
                state.position,
                nbrs,
                box=box,
                perturbation=1.0 + eps,  # noqa: E731
                params=params,
            )
            epot, dU = jax.value_and_grad(U)(jnp.zeros((), state.position.dtype))
            pressure = (2.0 * ekin - dU) / (3.0 * volume)
        else:
            volume = pressure = jnp.zeros((), state.position.dtype)  # NaN on the host (jax_debug_nans-safe)
            epot = sim.energy_fn(state.position, nbrs, params=params)
        out = {
            "positions": sim.real_positions(state, box),
            "velocities": state.momentum / state.mass,
            "forces": state.force,
            "box": box,
            "epot": epot,
            "ekin": ekin,
            "pressure": pressure,
            "volume": volume,
        }
        if sim.potential.members:  # an ensemble: what the extrapolation alarm watches (nnpes.md.alarm)
            box_kwargs = {"box": box} if sim.periodic else {}
            out["force_std"] = alarm.force_std(sim.energy_fn, state.position, nbrs, params=params, **box_kwargs)
        return out

    return observe


def _functions(sim: Simulation, records_per_chunk: int):
    """Jitted (chunk, observe), cached on the simulation (one compilation per list capacity)."""
    key = ("fns", records_per_chunk)
    if key in sim._jitted:
        return sim._jitted[key]
    every, dt = sim.options.every, sim.dt
    observe = _observe_fn(sim)

    def step(params, _, carry):
        state, nbrs = carry
        speed = jnp.sqrt(jnp.max(jnp.sum((state.momentum / state.mass) ** 2, axis=-1)))
        # the update precedes the step: leave room for twice the coming step's displacement
        nbrs = nbrs.update(state.position, margin=2.0 * dt * speed, **sim.box_kwargs(state))
        with quiet_jax_md():  # runs while tracing only (see quiet_jax_md)
            return sim.apply_fn(state, neighbor=nbrs, params=params), nbrs

    def chunk(state, nbrs, params, n_steps):
        compilation.traced("md_chunk")  # runs only while tracing: one count per compilation

        def record(carry, r):
            todo = jnp.clip(n_steps - r * every, 0, every)
            carry = lax.fori_loop(0, todo, partial(step, params), carry)
            return carry, observe(*carry, params)

        (state, nbrs), frames = lax.scan(record, (state, nbrs), jnp.arange(records_per_chunk))
        return state, nbrs, frames

    def observe_once(state, nbrs, params):
        compilation.traced("md_observe")
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


def _start(sim: Simulation, state, neighbor):
    """(state, neighbour list, reallocations) to start from: the given ones or the start structure's."""
    position = sim.positions if state is None else state.position
    kwargs = {} if state is None else sim.box_kwargs(state)
    if neighbor is None:
        log.info(f"building the neighbour list of {sim.n_atoms} atoms")
    nbrs = neighbor if neighbor is not None else sim.neighbor_fn.allocate(position, **kwargs)
    nbrs = nbrs.update(position, **kwargs)
    reallocations = 0
    if needs_reallocation(nbrs):
        nbrs, reallocations = sim.neighbor_fn.allocate(position, **kwargs), 1
    return (sim.init_state(nbrs) if state is None else state), nbrs, reallocations


def _columns(sim: Simulation, frames: list, start_time_fs: float) -> dict:
    """Recorded frames (host dicts of chunks, with their ``step`` numbers) as
    :data:`nnpes.md.results.COLUMNS`, in the input frame."""
    cat = {k: np.concatenate([np.asarray(f[k], np.float64) for f in frames]) for k in frames[0]}
    n_frames = len(cat["epot"])
    q = sim.rotation
    cells = np.swapaxes(cat["box"], 1, 2)  # columns → rows
    nan = np.full(n_frames, np.nan)
    return {
        "time_fs": start_time_fs + cat["step"] * sim.options.dt_fs,
        "positions": cat["positions"] @ q,
        "velocities": cat["velocities"] @ q,
        "forces": cat["forces"] @ q,
        "cells": cells @ q if sim.periodic else np.zeros_like(cells),
        "epot": cat["epot"],
        "ekin": cat["ekin"],
        "pressure_bar": cat["pressure"] / BAR if sim.periodic else nan,
        "volume_a3": cat["volume"] if sim.periodic else nan,
        **({"force_std": cat["force_std"]} if "force_std" in cat else {}),
    }


def _check_box_kept(sim: Simulation, nbrs, done: int, n: int) -> None:
    """Raise :class:`BoxTooSmallError` when an NPT box shrank below 2·(cutoff + skin) in a chunk."""
    if bool(nbrs.box_too_small):
        width = 2 * (sim.cutoff + sim.options.skin_a)
        raise BoxTooSmallError(
            f"the NPT box shrank below 2·(cutoff + skin) = {width:.2f} Å at step {done}–{done + n}: "
            "use a larger supercell"
        )


def run(
    sim: Simulation,
    steps: int,
    *,
    state=None,
    neighbor=None,
    chunk_steps: int | None = None,
    callback: Callable[[int, int], None] | None = None,
    start_time_fs: float | None = None,
    on_frames: Callable[[MDResult], None] | None = None,
) -> MDResult:
    """Run ``steps`` MD steps in jitted chunks, recording every ``sim.options.every`` steps.

    Args:
        sim: from :func:`nnpes.md.simulation`.
        steps: number of time steps.
        state: continue from this integrator state (default: the start structure).
        neighbor: start from this neighbour list (default: allocated at the start); it may be
            too small: overflows are caught and repaired.
        chunk_steps: steps per jitted chunk (rounded to a multiple of ``every``; default ≈ 200; no more
            than the run needs).
        callback: called as callback(steps_done, steps) after each accepted chunk.
        start_time_fs: time of the first frame, fs (default: the start structure's, ``sim.start_time_fs``;
            pass ``result.time_fs[-1]`` when continuing from ``result.state``).
        on_frames: called with an :class:`MDResult` of the newly recorded frames alone, the start
            frame first, then each accepted chunk's (``nnpes md`` writes its files from these as
            the run goes, so a killed run keeps what it recorded).

    Returns:
        :class:`MDResult`; its ``state`` and ``neighbor`` continue the run.

    Raises:
        SimulationError: a recorded frame was unstable (:mod:`nnpes.md.guard`); ``.result`` holds
            the frames before it.
        Interrupted: Ctrl-C; ``.result`` holds the steps completed, and continues the run.

    Overflow: after each chunk the list's overflow flag is read; if set, the list is reallocated at
    the chunk's starting state with room for the pairs the chunk needed (times ``capacity_multiplier``)
    and the chunk recomputed, so the trajectory equals one run with a large enough list from the start.
    """
    check_steps(steps)
    every = sim.options.every
    requested = max(every, 200) if chunk_steps is None else chunk_steps
    # a run shorter than a chunk: fewer records per chunk (each costs an energy evaluation, wasted past the end)
    records = max(1, math.ceil(min(requested, max(steps, 1)) / every))
    chunk_steps = records * every  # chunks start on recorded steps
    chunk_fn, observe_fn = _functions(sim, records)
    tally = Tally(compilation.count(*TRACED), sim.start_time_fs if start_time_fs is None else float(start_time_fs))
    if neighbor is None:  # before the first list of this size is allocated
        check_memory(sim, recorded_frames=math.ceil(steps / every) + 1, records_per_chunk=records)
    state, nbrs, tally.reallocations = _start(sim, state, neighbor)
    log.info(f"compiling the MD step ({sim.n_atoms} atoms, {nbrs.idx.shape[1]} list slots) unless cached")
    params = sim.potential.params
    frames, done, attempt = [], 0, 0
    try:
        _accept(sim, frames, _start_frame(sim, observe_fn(state, nbrs, params), tally), 0, tally, on_frames)
        while done < steps:
            n = min(chunk_steps, steps - done)
            compiled, t0 = compilation.count(*TRACED), time.perf_counter()
            new_state, new_nbrs, out = chunk_fn(state, nbrs, params, n)
            jax.block_until_ready(new_state.position)
            _check_box_kept(sim, new_nbrs, done, n)
            chunk = _host(out, done + np.minimum(np.arange(1, math.ceil(n / every) + 1) * every, n))
            if needs_reallocation(new_nbrs):
                if attempt >= UNSTABLE_OVERFLOWS:  # a list that never suffices: an exploding chunk?
                    _stop_if_unstable(sim, frames, chunk, tally, keep_chunk=False)  # its forces missed pairs
                attempt, tally.reallocations = attempt + 1, tally.reallocations + 1
                nbrs = _reallocate(sim, state, nbrs, new_state, attempt)
                continue
            if compilation.count(*TRACED) == compiled:
                tally.timed_steps, tally.timed_s = tally.timed_steps + n, tally.timed_s + time.perf_counter() - t0
            attempt, state, nbrs, done = 0, new_state, new_nbrs, done + n  # before on_frames, which Ctrl-C may cut
            _accept(sim, frames, chunk, done, tally, on_frames)
            if callback is not None:
                callback(done, steps)
    except KeyboardInterrupt:
        result = _result(sim, frames, done, tally, state, nbrs, stopped="interrupted") if frames else None
        raise Interrupted(f"MD interrupted after {done} of {steps} steps", result) from None
    return _result(sim, frames, steps, tally, state, nbrs)


def _start_frame(sim, observed: dict, tally: Tally) -> dict:
    """The start frame (step 0) on the host; its temperature sets the run's automatic limit."""
    first = _host(jax.tree.map(lambda x: x[None], observed), np.zeros(1, int))
    tally.limit_k = temperature_limit_k(sim.options, float(temperature_k(first["ekin"], sim.n_atoms)[0]))
    return first


def _host(out: dict, steps: np.ndarray) -> dict:
    """The first len(steps) recorded frames of a chunk's output as numpy arrays, with their step numbers."""
    return {**jax.device_get(jax.tree.map(lambda x: x[: len(steps)], out)), "step": np.asarray(steps)}


@dataclasses.dataclass
class Tally:
    """What a run counts as it goes: for the summary of :func:`run`'s result."""

    compiled_before: int
    start_time_fs: float
    limit_k: float = math.inf
    reallocations: int = 0
    timed_steps: int = 0
    timed_s: float = 0.0
    t_start: float = dataclasses.field(default_factory=time.perf_counter)


def _result(sim, frames, done, tally, state=None, nbrs=None, stopped=None) -> MDResult:
    """The :class:`MDResult` of the recorded frames, ``done`` steps in."""
    wall = time.perf_counter() - tally.t_start
    return md_result(
        _columns(sim, frames, tally.start_time_fs), numbers=sim.numbers, pbc=np.full(3, sim.periodic),
        options=sim.options, steps=done, wall_s=wall,
        steps_per_s=tally.timed_steps / tally.timed_s if tally.timed_s > 0 else done / wall,
        compilations=compilation.count(*TRACED) - tally.compiled_before, backend="jax-md",
        neighbor_reallocations=tally.reallocations, state=state, neighbor=nbrs, stopped=stopped,
        uncertainty_threshold_ev_a=alarm.threshold_ev_a(sim.potential, sim.options),
    )  # fmt: skip


def _accept(sim, frames: list, chunk: dict, done: int, tally: Tally, on_frames) -> None:
    """Add a chunk's frames to the run's, after checking them (:func:`_stop_if_unstable`), and
    hand them to ``on_frames`` as an :class:`MDResult` of these frames alone."""
    _stop_if_unstable(sim, frames, chunk, tally)
    threshold = alarm.threshold_ev_a(sim.potential, sim.options)
    time_fs = tally.start_time_fs + chunk["step"] * sim.options.dt_fs
    stop_at = alarm.check(chunk, threshold, sim.options.stop_on_uncertainty, time_fs)
    if stop_at is not None:  # keep the frames up to the uncertain one, then stop
        chunk = jax.tree.map(lambda x: x[: stop_at + 1], chunk)
        done = int(chunk["step"][-1])
    frames.append(chunk)
    if on_frames is not None:
        on_frames(_result(sim, [chunk], done, tally))
    if stop_at is not None:
        sigma = float(chunk["force_std"][-1])
        message = alarm.stop_message(sigma, threshold, done, float(time_fs[stop_at]))
        raise alarm.UncertaintyStop(message, _result(sim, frames, done, tally, stopped="uncertainty"))


def _stop_if_unstable(sim, frames: list, chunk: dict, tally: Tally, keep_chunk: bool = True) -> None:
    """Raise :class:`SimulationError` when ``chunk`` (recorded frames with their ``step``
    numbers) holds an unstable frame; its result holds ``frames`` and, with ``keep_chunk``, the
    chunk's frames before that one."""
    bad = first_unstable(chunk, sim.n_atoms, tally.limit_k)
    if bad is None:
        return
    j, reason = bad
    step = int(chunk["step"][j])
    kept = [f for f in [*frames, jax.tree.map(lambda x: x[: j * keep_chunk], chunk)] if len(f["ekin"])]
    result = _result(sim, kept, int(kept[-1]["step"][-1]), tally, stopped="unstable") if kept else None
    dt = sim.options.dt_fs
    raise SimulationError(unstable_message(reason, step, tally.start_time_fs + step * dt, dt), result)
