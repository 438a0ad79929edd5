"""The ASE backend: the same simulation with ASE's integrators and :class:`nnpes.Calculator`
(any cell, small periodic cells and mixed boundary conditions included; slower: one host round
trip per step). The integrator comes from the ensemble table (:mod:`nnpes.md.ensembles`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from nnpes import compilation
from nnpes.errors import DataError, Interrupted, SimulationError
from nnpes.md import alarm
from nnpes.md.config import MDConfig, configure
from nnpes.md.driver import check_steps
from nnpes.md.ensembles import ensemble, require_cell
from nnpes.md.guard import first_unstable, temperature_limit_k, unstable_message
from nnpes.md.results import COLUMNS, MDResult, md_result
from nnpes.md.structure import check_structure, start_time_fs
from nnpes.md.units import BAR
from nnpes.md.velocities import initial_momenta, temperature_k
from nnpes.potential import Potential
from nnpes.uncertainty import max_atom_force_std

TRACED = ("energy_forces_stress",)  # the calculator's jitted function in nnpes.physics


def _frame(atoms, dyn, options: MDConfig, periodic: bool, start_time_fs: float) -> tuple:
    """One recorded frame, in the order of :data:`nnpes.md.results.COLUMNS`."""
    epot = atoms.get_potential_energy()
    ekin = atoms.get_kinetic_energy()
    volume = atoms.get_volume() if periodic else np.nan
    pressure = np.nan
    if periodic:
        pressure = -np.mean(atoms.get_stress(include_ideal_gas=False)[:3]) + 2.0 * ekin / (3.0 * volume)
    return (
        start_time_fs + dyn.nsteps * options.dt_fs,
        atoms.positions.copy(),
        atoms.get_velocities(),
        atoms.get_forces(),
        atoms.cell[:].copy(),
        epot,
        ekin,
        pressure / BAR,
        volume,
    )


def run_ase(
    potential: Potential,
    atoms,
    steps: int,
    options: MDConfig | None = None,
    callback: Callable[[int, int], None] | None = None,
    on_frames: Callable[[MDResult], None] | None = None,
    **overrides,
) -> MDResult:
    """Run ``steps`` steps of ``atoms`` with ASE (NVT Nosé–Hoover: ``NoseHooverChainNVT``, NPT:
    ``IsotropicMTKNPT``); keyword overrides replace fields of ``options`` (validated).

    Frames are recorded at step 0, every ``options.every`` steps and at the last step, once each;
    their times start at ``atoms.info["time_fs"]`` when the structure has one (a restart). The
    structure is refused first as :func:`nnpes.md.structure.check_structure` refuses it.
    ``on_frames``, errors and interrupts: as for :func:`nnpes.md.loop.run` (here a frame at a time)."""
    from nnpes.md.calculator import Calculator

    options = configure(options, **overrides)
    check_steps(steps)
    check_structure(atoms, potential, options)
    periodic = require_cell(options, bool(np.all(atoms.pbc)))
    start_time = start_time_fs(atoms)
    atoms = atoms.copy()
    atoms.calc = Calculator(potential, dtype=options.dtype)
    atoms.set_momenta(initial_momenta(atoms, options.temperature_k, options.seed))
    dyn = ensemble(options).ase(atoms, options)
    compiled_before = compilation.count(*TRACED)
    frames, recorded, t0 = [], [], time.perf_counter()
    threshold = alarm.threshold_ev_a(potential, options)
    limit = temperature_limit_k(options, float(temperature_k(np.array([atoms.get_kinetic_energy()]), len(atoms))[0]))

    def record():
        # once per step: whether ASE's observers fire at step 0 (and how often) differs between versions
        if recorded and recorded[-1] == dyn.nsteps:
            return
        frame = _frame(atoms, dyn, options, periodic, start_time)
        bad = first_unstable({k: [v] for k, v in zip(COLUMNS, frame)}, len(atoms), limit)
        if bad is not None:
            raise _Unstable(bad[1])
        if potential.members:  # an ensemble: the extrapolation alarm's number (nnpes.md.alarm)
            frame += (float(max_atom_force_std(atoms.calc.results["forces_std"])),)
        recorded.append(dyn.nsteps)
        frames.append(frame)
        if on_frames is not None:
            on_frames(result(frames[-1:]))
        if callback is not None and dyn.nsteps > 0:
            callback(dyn.nsteps, steps)
        watched = {"force_std": [frame[-1]], "step": [dyn.nsteps]} if potential.members else {}
        if alarm.check(watched, threshold, options.stop_on_uncertainty, [frame[0]]) is not None:
            raise _Uncertain(alarm.stop_message(frame[-1], threshold, dyn.nsteps, frame[0]))

    def result(some: list, stopped: str | None = None) -> MDResult | None:
        if not some:
            return None
        wall = time.perf_counter() - t0
        return md_result(
            dict(zip((*COLUMNS, "force_std"), zip(*some))), numbers=atoms.numbers.copy(), pbc=atoms.pbc.copy(),
            options=options, steps=recorded[-1], wall_s=wall, steps_per_s=recorded[-1] / wall,
            compilations=compilation.count(*TRACED) - compiled_before, backend="ase", stopped=stopped,
            uncertainty_threshold_ev_a=threshold,
        )  # fmt: skip

    try:
        record()
        dyn.attach(record, interval=options.every)
        dyn.run(steps)
        record()  # the last step, when it is not a multiple of every
    except _Uncertain as e:
        raise alarm.UncertaintyStop(str(e), result(frames, "uncertainty")) from None
    except KeyboardInterrupt:
        done = recorded[-1] if recorded else 0
        raise Interrupted(f"MD interrupted after {done} of {steps} steps", result(frames, "interrupted")) from None
    except (_Unstable, DataError) as e:
        # DataError: the calculator refused the structure the integrator made for the next step
        step = dyn.nsteps + isinstance(e, DataError)
        message = unstable_message(str(e), step, start_time + step * options.dt_fs, options.dt_fs)
        raise SimulationError(message, result(frames, "unstable")) from None
    return result(frames)


class _Unstable(Exception):
    """Raised from inside ASE's integrator loop (an observer) to end an unstable run."""


class _Uncertain(Exception):
    """Raised from inside ASE's integrator loop to stop at an uncertain frame (stop_on_uncertainty)."""
