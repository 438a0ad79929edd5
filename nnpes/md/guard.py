"""When an MD run must stop early: numbers that blew up, and what to say about it.

A time step too long for the fastest motion, or a model asked about structures unlike its
training data, makes a trajectory explode: temperatures of 10⁵–10⁸ K, atoms flying apart, at
worst NaN. Neither jax-md nor ASE notices, so both backends pass every recorded frame through
:func:`first_unstable` and stop at the first bad one, keeping the frames before it.

A frame is unstable when a position, velocity, force or energy is not finite, or when its kinetic
temperature is above ``MDConfig.max_temperature_k`` (default: :func:`temperature_limit_k`, ten
times the hotter of the target and the start temperature, and at least 3 000 K — far outside the
fluctuations of any thermostatted or NVE run that conserves energy, even for a few atoms).
"""

from __future__ import annotations

import numpy as np

from nnpes.md.velocities import temperature_k

AUTO_FACTOR = 10.0  # the automatic limit: this many times the run's own temperature ...
MIN_AUTO_LIMIT_K = 3000.0  # ... and never below this (runs started at rest or very cold)
CHECKED = ("positions", "velocities", "forces", "epot", "ekin")  # keys both backends record


def temperature_limit_k(options, start_temperature_k: float) -> float:
    """The temperature, K, above which a frame counts as unstable: ``options.max_temperature_k``
    when set, else max(10 × max(target, start temperature), 3 000 K)."""
    if options.max_temperature_k is not None:
        return float(options.max_temperature_k)
    hottest = max(float(options.temperature_k), float(np.nan_to_num(start_temperature_k, nan=0.0)))
    return max(AUTO_FACTOR * hottest, MIN_AUTO_LIMIT_K)


def first_unstable(frames: dict, n_atoms: int, limit_k: float) -> tuple[int, str] | None:
    """(index, reason) of the first unstable frame among recorded frames (arrays with a leading
    frame axis under the keys of :data:`CHECKED`; ekin in eV), or None when all are fine."""
    finite = np.ones(len(np.asarray(frames["ekin"])), bool)
    for key in CHECKED:
        values = np.asarray(frames[key], np.float64)
        finite &= np.isfinite(values.reshape(len(finite), -1)).all(axis=1)
    temperature = temperature_k(np.asarray(frames["ekin"], np.float64), n_atoms)
    bad = ~finite | (temperature > limit_k)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    if not finite[i]:
        return i, "positions, velocities, forces or energies are no longer finite numbers"
    return i, (
        f"the temperature reached {temperature[i]:.4g} K, above the limit of {limit_k:.4g} K "
        "(max_temperature_k, --max-temperature)"
    )


def unstable_message(reason: str, step: int, time_fs: float, dt_fs: float) -> str:
    """One line: where the run went wrong, why, and what to try."""
    return (
        f"the simulation became unstable at step {step} (t = {time_fs:.6g} fs): {reason}; "
        f"try a shorter time step than {dt_fs:g} fs, or check the model on such structures"
    )
