"""Exploration: NVT runs of the current ensemble, whose recorded frames are the candidates.

Each temperature gets ``md.trajectories_per_temperature`` runs; the start structures are taken
in turn, continuing from round to round, so successive rounds explore from different starts. A
run that blows up (:class:`nnpes.errors.SimulationError`) keeps the frames recorded before: a
model that cannot hold a trajectory together is exactly where labels are needed.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence

import numpy as np

from nnpes.errors import SimulationError
from nnpes.learn.config import MDConfigSection
from nnpes.learn.select import Candidate, descriptor


@dataclasses.dataclass
class Trajectory:
    """One exploration run: its name (file stem), temperature (K), start index, and what it recorded."""

    name: str
    temperature_k: float
    start: int
    result: object  # MDResult, or None when it blew up before recording anything
    unstable: str | None = None  # the one-line reason it stopped early

    @property
    def sigma(self) -> np.ndarray:
        """σ_F of the recorded frames after the start frame, eV/Å."""
        if self.result is None or self.result.force_std_ev_a is None:
            return np.zeros(0)
        return np.asarray(self.result.force_std_ev_a[1:], np.float64)


def explore(
    potential, starts: Sequence, md: MDConfigSection, round_index: int, seed: int, outdir: str
) -> list[Trajectory]:
    """Run the round's trajectories and write each to ``outdir/NAME.xyz`` (extxyz with the
    model's energy, forces and ``force_std_ev_a`` per frame).

    Args:
        potential: the round's ensemble. starts: ``ase.Atoms`` start structures (velocities and
            clocks they carry are dropped: each run starts from Maxwell–Boltzmann velocities).
        md: the ``md:`` section. round_index, seed: the runs' seeds are seed + 1000·round + run.
    """
    from nnpes.md import MDConfig, run_md
    from nnpes.md.alarm import UncertaintyWarning

    os.makedirs(outdir, exist_ok=True)
    runs = [(t, k) for t in md.temperatures_k for k in range(md.trajectories_per_temperature)]
    out = []
    for j, (temperature, k) in enumerate(runs):
        start = (round_index * len(runs) + j) % len(starts)
        atoms = starts[start].copy()
        atoms.arrays.pop("momenta", None)
        atoms.info.pop("time_fs", None)
        options = MDConfig(
            ensemble="nvt", thermostat=md.thermostat, temperature_k=temperature, dt_fs=md.dt_fs,
            tau_t_fs=md.tau_t_fs, every=md.every, seed=(seed + 1000 * round_index + j) % 2**32,
        )  # fmt: skip
        name = f"T{temperature:g}_{k}"
        unstable = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UncertaintyWarning)  # expected here: the table counts them
            try:
                result = run_md(potential, atoms, md.steps, options, backend=md.backend, source=f"start {start}")
            except SimulationError as e:
                result, unstable = e.result, str(e).splitlines()[0]
        if unstable is not None:
            warnings.warn(f"md {name}: {unstable}; its recorded frames are kept as candidates", stacklevel=2)
        if result is not None:
            result.write_trajectory(os.path.join(outdir, f"{name}.xyz"))
        out.append(Trajectory(name, temperature, start, result, unstable))
    return out


def candidates(trajectories: Sequence[Trajectory], threshold: float) -> list[Candidate]:
    """The recorded frames after each start frame above ``threshold`` (eV/Å; NaN counts as
    above), with finite positions, as :class:`Candidate` (descriptors computed for these only)."""
    out = []
    for t, traj in enumerate(trajectories):
        r = traj.result
        for i, sigma in enumerate(traj.sigma, start=1):
            if sigma <= threshold or not np.all(np.isfinite(r.positions[i])):
                continue
            d = descriptor(r.numbers, r.positions[i], r.cells[i], r.pbc)
            out.append(Candidate(t, i, float(sigma), d))
    return out


def structure(trajectory: Trajectory, frame: int):
    """A recorded frame as bare ``ase.Atoms`` (no velocities, no model labels) with its origin in info."""
    import ase

    r = trajectory.result
    atoms = ase.Atoms(numbers=r.numbers, positions=r.positions[frame], cell=r.cells[frame], pbc=r.pbc)
    atoms.info.update(
        learn_origin=f"{trajectory.name}:{frame}",
        temperature_k=float(trajectory.temperature_k),
        force_std_ev_a=float(r.force_std_ev_a[frame]),
    )
    return atoms
