"""The thermo plot of an MD run (``nnpes md --plot``): energies, temperature and, for NPT, volume
against time. For NVE its top panel is the energy-conservation plot: E_tot − E_tot(0) per atom
(meV/atom) beside the kinetic and potential energies' swings, which it should be far smaller than.
"""

from __future__ import annotations

import numpy as np

from nnpes.md.results import MDResult


def thermo_figure(result: MDResult):
    """A matplotlib Figure of ``result``: energy changes per atom (meV/atom) and temperature (K)
    against time (fs), and volume (Å³) when the cell changes (NPT)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n = len(result.numbers)
    npt = result.ensemble == "npt"
    fig = Figure(figsize=(7, 7.5 if npt else 5.5))
    axes = fig.subplots(3 if npt else 2, 1, sharex=True)
    t = result.time_fs
    energy = axes[0]
    for values, label, style in (
        (result.epot, "E_pot", {"lw": 0.8, "alpha": 0.7}),
        (result.ekin, "E_kin", {"lw": 0.8, "alpha": 0.7}),
        (result.etot, "E_tot", {"lw": 1.6, "color": "k"}),
    ):
        energy.plot(t, (values - values[:1].sum()) / n * 1e3, label=label, **style)
    drift = result.drift_mev_per_atom_per_ps()
    title = f"{result.ensemble.upper()}, {n} atoms, dt = {result.dt_fs:g} fs"
    energy.set_title(title + (f": E_tot drift {drift:+.3g} meV/atom/ps" if drift is not None else ""))
    energy.set_ylabel("E − E(0) (meV/atom)")
    energy.legend(fontsize=8, loc="upper right")
    axes[1].plot(t, result.temperature_k, lw=0.8)
    axes[1].set_ylabel("temperature (K)")
    if npt:
        axes[2].plot(t, result.volume_a3, lw=0.8)
        axes[2].set_ylabel("volume (Å³)")
    axes[-1].set_xlabel("time (fs)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def thermo_plot(result: MDResult, path: str) -> None:
    """Write :func:`thermo_figure` of ``result`` to the PNG ``path``."""
    finite = np.isfinite(result.etot)
    if not finite.all():  # a run that blew up is plotted up to its first non-finite frame
        result = result.window(0, int(np.argmin(finite)))
    thermo_figure(result).savefig(path, dpi=120)
