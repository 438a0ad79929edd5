"""Extrapolation alarms: an ensemble's force uncertainty watched during MD.

A potential is only trustworthy near its training data. An ensemble (``model.ensemble: M``)
knows when it is not: its members disagree. Both MD backends record, at every recorded frame
(every ``MDConfig.every`` steps), the largest per-atom force uncertainty σ_F = max_i √(Σ_c σ_ic²),
eV/Å (calibrated, :mod:`nnpes.uncertainty`). Above the threshold (``MDConfig.uncertainty_threshold_ev_a``,
default: the one fitted on the validation data at training, :func:`threshold_ev_a`) the run warns
(:class:`UncertaintyWarning`, one line), ``nnpes md`` writes the frame to ``uncertain.xyz``, and
with ``stop_on_uncertainty`` the run stops there (:class:`UncertaintyStop`, keeping the frames
up to that one).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from nnpes.errors import SimulationError
from nnpes.uncertainty import max_atom_force_std, spread


class UncertaintyWarning(UserWarning):
    """A recorded MD frame whose force uncertainty is above the alarm threshold."""


class UncertaintyStop(SimulationError):
    """An MD run stopped at a frame whose force uncertainty is above the threshold
    (``stop_on_uncertainty``); ``.result`` holds the frames up to and including it."""


def uncertainty(energy_fn, R, neighbor, **kwargs) -> dict:
    """An ensemble's prediction and its calibrated uncertainty through the jax-md adaptor.

    Args:
        energy_fn: from :func:`nnpes.md.energy_neighbor_list` of an ensemble.
        R, neighbor, kwargs: as ``energy_fn`` takes them (``params``, ``box``...).

    Returns:
        dict: energy (eV, the members' mean), energy_std (eV), forces (N, 3) eV/Å (mean),
        forces_std (N, 3) eV/Å, all jax arrays (jit-compatible). Forces are −∂E/∂R of each
        member (one backward pass per member).
    """
    energies, pullback = jax.vjp(lambda r: energy_fn(r, neighbor, members=True, **kwargs), R)
    (grads,) = jax.vmap(pullback)(jnp.eye(energies.shape[0], dtype=energies.dtype))
    forces = -grads
    e_std, f_std = spread(energies, forces, energy_fn.calibration)
    return {"energy": jnp.mean(energies), "energy_std": e_std, "forces": jnp.mean(forces, 0), "forces_std": f_std}


def force_std(energy_fn, R, neighbor, **kwargs):
    """The largest per-atom force uncertainty, eV/Å, what the alarm watches (traceable)."""
    return max_atom_force_std(uncertainty(energy_fn, R, neighbor, **kwargs)["forces_std"])


def threshold_ev_a(potential, options) -> float | None:
    """The alarm threshold, eV/Å: ``options.uncertainty_threshold_ev_a`` when given, else the
    potential's own (fitted on validation data), else None (no alarm: not an ensemble, or an
    ensemble trained without validation frames)."""
    if not potential.members:
        return None
    if options.uncertainty_threshold_ev_a is not None:
        return float(options.uncertainty_threshold_ev_a)
    return potential.force_std_alarm_ev_a


def check(frames: dict, threshold: float | None, stop: bool, time_fs) -> int | None:
    """Warn once per chunk of recorded frames (host arrays, ``force_std`` eV/Å, their ``step``)
    whose force uncertainty exceeds ``threshold``; return the index of the first such frame
    when the run is to stop there (``stop``), else None."""
    if threshold is None or "force_std" not in frames:
        return None
    sigma = np.asarray(frames["force_std"], np.float64)
    above = np.flatnonzero(~(sigma <= threshold))  # NaN counts as above
    if not above.size:
        return None
    i = int(above[0])
    warnings.warn(
        f"md: force uncertainty {sigma[i]:.3g} eV/Å above the alarm threshold {threshold:.3g} eV/Å at step "
        f"{int(frames['step'][i])} (t = {float(time_fs[i]):.6g} fs; {above.size} frame(s) of this chunk): "
        "the structure is outside the training data",
        UncertaintyWarning,
        stacklevel=2,
    )
    return i if stop else None


def stop_message(sigma: float, threshold: float, step: int, time_fs: float) -> str:
    """One line: where and why a run stopped on its uncertainty."""
    return (
        f"stopped at step {step} (t = {time_fs:.6g} fs): force uncertainty {sigma:.3g} eV/Å above the threshold "
        f"{threshold:.3g} eV/Å (--stop-on-uncertainty): label such structures and retrain (nnpes learn)"
    )
