"""Ensemble uncertainty: the members' spread of energy and forces, its calibration, and how well
it ranks the actual errors.

An ensemble (``Potential.members`` = M ≥ 2, trained with ``model.ensemble: M``) predicts the
members' mean; the uncertainty of the energy (eV) and of every force component (eV/Å) is the
members' standard deviation times a calibration factor fitted on validation data so that
predicted variances match observed squared errors (:func:`calibrate`). Every path that reports
an uncertainty (``nnpes evaluate``, the ASE calculator, the jax-md adaptor, the MD alarm) uses
:func:`spread`; the members are evaluated by :func:`member_outputs` (:func:`ensemble_outputs`:
their mean and spread, for evaluation and the calculator).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nnpes.physics import energy_forces_stress, total_energy

_TINY = 1e-12  # a floor for standard deviations (eV, eV/Å) before dividing by them


def member_outputs(potential, graph, compute_stress: bool = False) -> dict:
    """:func:`nnpes.physics.energy_forces_stress` of every member of an ensemble: each value with
    a leading member axis, e.g. energy (M, G) eV and forces (M, N, 3) eV/Å."""
    return potential.member_map(lambda member: energy_forces_stress(member, graph, compute_stress))


def member_energies_and_projections(potential, graph, directions):
    """Every member's interaction energies (M, G) eV (E0 excluded) and forces projected on
    ``directions`` (N, 3), summed per graph: Σ_i F_i^m · v_i (M, G), eV/Å per unit of v. One
    forward-mode pass (``jax.jvp``), no backward pass: what a shallow ensemble's likelihood
    loss reads (its shared network runs once; an unused projection is compiled away)."""
    positions = graph.nodes["positions"]
    cell = graph.globals["cell"].astype(positions.dtype)

    def energies(pos):
        return potential.member_map(lambda member: total_energy(member, pos, cell, graph)[1])

    energy, tangent = jax.jvp(energies, (positions,), (directions.astype(positions.dtype),))
    return energy, -tangent


def ensemble_outputs(potential, graph, compute_stress: bool = False) -> tuple[dict, tuple]:
    """An ensemble's prediction and uncertainty from its members (:func:`member_outputs`): the
    members' mean of every output of :func:`nnpes.physics.energy_forces_stress`, and the
    calibrated (energy σ (G,) eV, forces σ (N, 3) eV/Å) of their spread. The energy σ is that of
    the interaction energies: the members share E0, and float32 totals would lose its digits."""
    members = member_outputs(potential, graph, compute_stress)
    mean = jax.tree.map(lambda v: jnp.mean(v, axis=0), members)
    return mean, spread(members["interaction_energy"], members["forces"], potential.calibration)


evaluate_ensemble = jax.jit(ensemble_outputs, static_argnames=("compute_stress",))
"""Jitted :func:`ensemble_outputs`."""


def spread(energies, forces, calibration=(1.0, 1.0)):
    """(energy_std, forces_std): the members' standard deviation (ddof 1) of energies (M, ...) eV
    and forces (M, ..., 3) eV/Å along axis 0, times the (energy, forces) calibration factors.
    Works on numpy and JAX arrays (inside jit too)."""
    xp = jnp if isinstance(energies, jax.Array) or isinstance(forces, jax.Array) else np
    return calibration[0] * xp.std(energies, axis=0, ddof=1), calibration[1] * xp.std(forces, axis=0, ddof=1)


def max_atom_force_std(forces_std) -> float:
    """The largest per-atom force uncertainty, eV/Å: max over atoms of √(Σ_c σ_c²) of (N, 3)."""
    return jnp.max(jnp.sqrt(jnp.sum(forces_std**2, axis=-1)))


def _errors(frames, predictions):
    """(energy errors eV, energy σ eV, force errors eV/Å, force σ eV/Å, per-frame (force RMSE, RMS σ))."""
    de, se, df, sf, per_frame = [], [], [], [], []
    for f, p in zip(frames, predictions):
        if "energy_std" not in p:
            raise ValueError("predictions carry no uncertainty: the potential is not an ensemble")
        if f.energy is not None:
            de.append(p["energy"] - f.energy)
            se.append(p["energy_std"])
        if f.forces is not None:
            d, s = np.ravel(p["forces"] - f.forces), np.ravel(p["forces_std"])
            df.append(d)
            sf.append(s)
            per_frame.append((np.sqrt(np.mean(d**2)), np.sqrt(np.mean(s**2))))
    cat = lambda xs: np.concatenate([np.ravel(x) for x in xs]) if xs else np.zeros(0)  # noqa: E731
    return cat(de), cat(se), cat(df), cat(sf), np.array(per_frame).reshape(-1, 2)


ALARM_FACTOR = 2.0  # the MD alarm's default: this many times the largest σ_F seen on validation frames


def calibrate(potential, frames: Sequence, predictions: Sequence[dict]):
    """The potential with calibration factors s_E, s_F such that the calibrated variances match
    the observed squared errors on these (validation) frames: s² = ⟨Δ²/σ²⟩ over energies and over
    force components (σ: the members' spread before any calibration); a label no frame carries
    keeps its factor. Also sets the MD alarm's threshold ``force_std_alarm_ev_a``:
    :data:`ALARM_FACTOR` × the largest per-atom calibrated force σ of any of these frames, eV/Å."""
    de, se, df, sf, _ = _errors(frames, predictions)
    old = potential.calibration
    factors = []
    for err, sigma, s_old in ((de, se, old[0]), (df, sf, old[1])):
        raw = np.maximum(sigma / s_old, _TINY)
        factors.append(float(np.sqrt(np.mean((err / raw) ** 2))) if err.size else s_old)
    worst = max(float(np.max(np.linalg.norm(p["forces_std"], axis=-1))) for p in predictions)
    alarm = ALARM_FACTOR * worst * factors[1] / old[1]
    return potential.replace(calibration=tuple(factors), force_std_alarm_ev_a=alarm)


def _nll(err, sigma) -> float | None:
    """Mean Gaussian negative log-likelihood of errors under σ (in the errors' unit, eV or eV/Å)."""
    if not err.size:
        return None
    s2 = np.maximum(sigma, _TINY) ** 2
    return float(np.mean(0.5 * (np.log(2 * np.pi * s2) + err**2 / s2)))


def calibration_bins(err, sigma, bins: int = 10) -> list[dict]:
    """Errors grouped by predicted σ into equal-count bins: each bin's RMS predicted σ ("rmv") and
    its RMSE, same unit as the inputs; a calibrated model has rmse ≈ rmv in every bin."""
    if not err.size:
        return []
    order = np.argsort(sigma, kind="stable")
    out = []
    for idx in np.array_split(order, min(bins, err.size)):
        out.append({"rmv": float(np.sqrt(np.mean(sigma[idx] ** 2))), "rmse": float(np.sqrt(np.mean(err[idx] ** 2)))})
    return out


def _spearman(a, b) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def uncertainty_metrics(frames: Sequence, predictions: Sequence[dict], bins: int = 10) -> dict:
    """How well an ensemble's (calibrated) uncertainty describes its errors on labelled frames.

    Returns:
        energy_nll, forces_nll: mean Gaussian negative log-likelihood per energy (σ in eV) and
        per force component (σ in eV/Å); energy_std_mean_mev, forces_std_mean_mev_per_a:
        mean predicted σ; forces_spearman: rank correlation between each frame's predicted
        force σ (RMS over components) and its actual force RMSE; energy_spearman: between |ΔE|
        and σ_E; energy_bins, forces_bins: :func:`calibration_bins` in meV and meV/Å;
        energy_ence, forces_ence: mean |RMV − RMSE| / RMV over the bins (0 = calibrated).
        Values are None where no frame carries the label.
    """
    de, se, df, sf, per_frame = _errors(frames, predictions)
    out = {
        "energy_nll": _nll(de, se),
        "forces_nll": _nll(df, sf),
        "energy_std_mean_mev": float(np.mean(se)) * 1e3 if se.size else None,
        "forces_std_mean_mev_per_a": float(np.mean(sf)) * 1e3 if sf.size else None,
        "forces_spearman": _spearman(per_frame[:, 1], per_frame[:, 0]) if len(per_frame) else None,
        "energy_spearman": _spearman(se, np.abs(de)) if de.size else None,
    }
    for name, err, sigma in (("energy", de, se), ("forces", df, sf)):
        b = calibration_bins(err * 1e3, sigma * 1e3, bins)
        out[f"{name}_bins"] = b
        out[f"{name}_ence"] = (
            float(np.mean([abs(x["rmv"] - x["rmse"]) / max(x["rmv"], _TINY) for x in b])) if b else None
        )
    return out


def calibration_figure(named_metrics: Sequence[tuple[str, dict]]):
    """Calibration plots (RMSE against RMS predicted σ per bin, log–log, the diagonal = perfect)
    for energy and forces, one series per (name, :func:`uncertainty_metrics`) pair."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (label, unit) in zip(axes, (("energy", "meV"), ("forces", "meV/Å"))):
        lo, hi = np.inf, 0.0
        for name, m in named_metrics:
            b = m.get(f"{label}_bins") or []
            if b:
                x, y = [v["rmv"] for v in b], [v["rmse"] for v in b]
                ax.loglog(x, y, "o-", ms=4, label=name)
                lo, hi = min(lo, *x, *y), max(hi, *x, *y)
        if hi > 0:
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="calibrated")
        for axis in (ax.xaxis, ax.yaxis):  # log axes spanning less than a decade: label the minor ticks plainly
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel(f"predicted σ (RMS per bin), {unit}")
        ax.set_ylabel(f"actual RMSE, {unit}")
        ax.set_title(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def calibration_plot(named_metrics: Sequence[tuple[str, dict]], path: str) -> None:
    """:func:`calibration_figure` written to a PNG."""
    import matplotlib.pyplot as plt

    fig = calibration_figure(named_metrics)
    fig.savefig(path, dpi=120)
    plt.close(fig)
