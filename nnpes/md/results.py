"""What an MD run gives back (:class:`MDResult`), built the same way by both backends, and its
writers: extxyz trajectory, thermo CSV, JSON summary, NVE energy drift."""

from __future__ import annotations

import dataclasses

import numpy as np

from nnpes.md.velocities import temperature_k

COLUMNS = ("time_fs", "positions", "velocities", "forces", "cells", "epot", "ekin", "pressure_bar", "volume_a3")
THERMO = ("time_fs", "epot_ev", "ekin_ev", "etot_ev", "temperature_k", "pressure_bar", "volume_a3")


@dataclasses.dataclass
class MDResult:
    """Recorded frames (every ``every`` steps, step 0 included) and run statistics.

    Arrays are float64 numpy in the structure's own frame: time_fs (M,), positions (M, N, 3) Å,
    velocities (M, N, 3) Å per ASE time unit, forces (M, N, 3) eV/Å, cells (M, 3, 3) rows Å,
    epot/ekin/etot (M,) eV, temperature_k (M,), pressure_bar and volume_a3 (M,) (NaN for a
    molecule; pressure includes the kinetic term 2·E_kin/(3V)). ``steps`` counts the steps done;
    ``stopped`` is None for a run that did them all, else why it ended early ("unstable" or
    "interrupted", :class:`nnpes.errors.SimulationError` / :class:`nnpes.errors.Interrupted`;
    "uncertainty", :class:`nnpes.md.alarm.UncertaintyStop`). An ensemble's runs also record
    force_std_ev_a (M,): the largest per-atom force uncertainty, eV/Å, and the alarm's
    uncertainty_threshold_ev_a (:mod:`nnpes.md.alarm`).
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
    stopped: str | None = None
    force_std_ev_a: np.ndarray | None = None
    uncertainty_threshold_ev_a: float | None = None

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
        return {
            "atoms": int(len(self.numbers)),
            "steps": int(self.steps),
            "dt_fs": float(self.dt_fs),
            "ensemble": self.ensemble,
            "backend": self.backend,
            "steps_per_s": float(self.steps_per_s),
            "ns_per_day": float(self.ns_per_day),
            "drift_mev_per_atom_per_ps": self.drift_mev_per_atom_per_ps(),
            "neighbor_reallocations": int(self.neighbor_reallocations),
            "compilations": int(self.compilations),
            "stopped": self.stopped,
            "max_force_std_ev_a": None if self.force_std_ev_a is None else float(np.max(self.force_std_ev_a)),
            "uncertainty_threshold_ev_a": self.uncertainty_threshold_ev_a,
            "uncertain_frames": len(self.uncertain()),
        }

    def since(self, start: int) -> MDResult:
        """The same result with the recorded frames from index ``start`` on."""
        return self.window(start, None)

    def window(self, start: int, stop: int | None) -> MDResult:
        """The same result with the recorded frames ``start`` to ``stop`` (exclusive; None: the last)."""
        keys = (*COLUMNS, "temperature_k") + (("force_std_ev_a",) if self.force_std_ev_a is not None else ())
        return dataclasses.replace(self, **{k: getattr(self, k)[start:stop] for k in keys})

    def uncertain(self) -> np.ndarray:
        """Indices of the recorded frames above the uncertainty alarm's threshold (NaN counts as above)."""
        if self.force_std_ev_a is None or self.uncertainty_threshold_ev_a is None:
            return np.zeros(0, int)
        return np.flatnonzero(~(self.force_std_ev_a <= self.uncertainty_threshold_ev_a))

    def to_atoms(self, i: int):
        """Frame i as ``ase.Atoms`` with velocities and a calculator holding energy and forces."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions[i], cell=self.cells[i], pbc=self.pbc)
        atoms.set_velocities(self.velocities[i])
        atoms.calc = SinglePointCalculator(atoms, energy=float(self.epot[i]), forces=self.forces[i])
        atoms.info["time_fs"] = float(self.time_fs[i])
        if self.force_std_ev_a is not None:
            atoms.info["force_std_ev_a"] = float(self.force_std_ev_a[i])
        return atoms

    def write_trajectory(self, path: str, append: bool = False, start: int = 0) -> None:
        """extxyz with positions, velocities (momenta), energy and forces of the recorded frames
        from ``start`` on (1: not the start frame, when appending to the file the run began from)."""
        import ase.io

        frames = [self.to_atoms(i) for i in range(start, len(self.time_fs))]
        ase.io.write(path, frames, format="extxyz", append=append)

    def write_thermo(self, path: str, append: bool = False, start: int = 0) -> None:
        """CSV: time_fs, epot_ev, ekin_ev, etot_ev, temperature_k, pressure_bar, volume_a3, a row
        per recorded frame from ``start`` on; appended rows come without the header."""
        cols = np.column_stack(
            [self.time_fs, self.epot, self.ekin, self.etot, self.temperature_k, self.pressure_bar, self.volume_a3]
        )[start:]
        with open(path, "a" if append else "w") as f:
            np.savetxt(f, cols, delimiter=",", fmt="%.15g", comments="", header="" if append else ",".join(THERMO))


class FrameWriter:
    """Writes a run's frames to an extxyz trajectory and a thermo CSV as they are recorded
    (``add`` is a run's ``on_frames``), so a run that is killed keeps what it recorded.

    A file opened with ``append`` continues an earlier run that ended with the frame this one
    starts from: that start frame is not written again. ``finish(result)`` writes the frames of
    the whole run's ``result`` not yet written (those of a chunk cut short by an instability).
    """

    def __init__(self, trajectory: str | None, thermo: str | None, append_trajectory=False, append_thermo=False):
        self.files = [
            (trajectory, MDResult.write_trajectory, append_trajectory),
            (thermo, MDResult.write_thermo, append_thermo),
        ]
        self.written = 0  # frames of the run handed over so far

    def add(self, frames: MDResult) -> None:
        for path, write, append in self.files:
            first = self.written == 0
            skip = int(first and append)  # the start frame: the last of the file continued
            if path is not None and len(frames.time_fs) > skip:
                write(frames, path, append=append or not first, start=skip)
        self.written += len(frames.time_fs)

    def finish(self, result: MDResult) -> None:
        if len(result.time_fs) > self.written:
            self.add(result.since(self.written))


class UncertainWriter:
    """Writes the recorded frames above the uncertainty alarm's threshold (:meth:`MDResult.uncertain`)
    to an extxyz file as they come (``add`` is a run's ``on_frames``): the file is replaced at the
    run's first such frame and appended to after; it is not created when there is none."""

    def __init__(self, path: str):
        self.path, self.count = path, 0

    def add(self, frames: MDResult) -> None:
        import ase.io

        picked = [frames.to_atoms(int(i)) for i in frames.uncertain()]
        if picked:
            ase.io.write(self.path, picked, format="extxyz", append=self.count > 0)
            self.count += len(picked)


def md_result(
    columns: dict,
    *,
    numbers,
    pbc,
    options,
    steps: int,
    wall_s: float,
    steps_per_s: float,
    compilations: int,
    backend: str,
    neighbor_reallocations: int = 0,
    state=None,
    neighbor=None,
    stopped: str | None = None,
    uncertainty_threshold_ev_a: float | None = None,
) -> MDResult:
    """An :class:`MDResult` from recorded columns (the keys of ``COLUMNS``, frame-major), the
    temperature from the kinetic energy over 3N − 3 degrees of freedom; an ensemble's runs add
    the column ``force_std`` (eV/Å)."""
    cols = {k: np.asarray(columns[k], np.float64) for k in COLUMNS}
    if "force_std" in columns:
        cols["force_std_ev_a"] = np.asarray(columns["force_std"], np.float64)
    # fmt: off
    return MDResult(numbers=np.asarray(numbers), pbc=np.asarray(pbc), **cols,
                    temperature_k=temperature_k(cols["ekin"], len(numbers)), ensemble=options.ensemble, steps=steps,
                    dt_fs=options.dt_fs, wall_s=wall_s, steps_per_s=steps_per_s,
                    neighbor_reallocations=neighbor_reallocations, compilations=compilations, backend=backend,
                    state=state, neighbor=neighbor, stopped=stopped,
                    uncertainty_threshold_ev_a=uncertainty_threshold_ev_a)
    # fmt: on
