"""Plots of the benchmark report, drawn from the results' JSON into PNG files beside them.

Each function takes the JSON loader and the results folder and returns the names of the PNG
files it wrote there (none when its JSON is missing or holds nothing to draw). A plot that a
script writes itself (accuracy.py's, uncertainty.py's, zbl_curve.py's) is reused, not redrawn.
"""

from __future__ import annotations

from pathlib import Path

from _tables import Load, fit_exponent, fit_line, memory_series, speed_series


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(label: str, colors: dict[str, str]) -> dict:
    """Line style of a series: jax-md's dashed, in the colour of the nnpes case it is compared with."""
    color = colors.setdefault(label.replace("jaxmd", "nnpes"), f"C{len(colors) % 10}")
    return {"color": color, "linestyle": "--" if label.startswith("jaxmd") else "-", "marker": "o"}


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path.name


def speed_vs_atoms(load: Load, results: Path) -> list[str]:
    """Step time against atoms, log-log, one line per speed.py case (jax-md dashed), fitted exponents in the legend."""
    series = speed_series(load("speed.json"))
    series |= {f"{case} (scaling.json)": points for case, points in speed_series(load("scaling.json")).items()}
    if not series:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors: dict[str, str] = {}
    for label, (atoms, ms) in series.items():
        p = fit_exponent(atoms, ms)
        ax.plot(atoms, ms, **_style(label, colors), label=label + (f": ∝ N^{p:.2f}" if p is not None else ""))
    ax.set(xscale="log", yscale="log", xlabel="atoms (fcc Cu)", ylabel="energy + forces, ms per call")
    ax.set_title("Speed vs atoms: nnpes (solid) and jax-md's NequIP (dashed)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return [_save(fig, results / "speed_vs_atoms.png")]


def memory_vs_atoms(load: Load, results: Path) -> list[str]:
    """Peak RSS against atoms, log-log, speed.py's cases and bp_memory.py's Behler–Parrinello, with line fits."""
    series = memory_series(load)
    if not series:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors: dict[str, str] = {}
    for label, (atoms, rss) in series.items():
        line = fit_line(atoms, rss)
        fit = f": {line[0]:.0f} MB + {1024 * line[1]:.1f} KB/atom" if line else ""
        ax.plot(atoms, rss, **_style(label, colors), label=label + fit)
    ax.set(xscale="log", yscale="log", xlabel="atoms", ylabel="peak RSS of the process, MB")
    ax.set_title("Memory vs atoms (compilation and neighbour list included)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return [_save(fig, results / "memory_vs_atoms.png")]


def accuracy_vs_time(load: Load, results: Path) -> list[str]:
    """accuracy.py's own plot when it exists, else test force MAE against budget per molecule and model."""
    if (results / "accuracy_budget.png").is_file():
        return ["accuracy_budget.png"]
    rows = [r for r in (load("accuracy_budget.json") or {}).get("rows", []) if r.get("status") == "ok"]
    if not rows:
        return []
    plt = _pyplot()
    molecules = list(dict.fromkeys(r["molecule"] for r in rows))
    fig, axes = plt.subplots(1, len(molecules), figsize=(5 * len(molecules), 4), squeeze=False)
    for ax, molecule in zip(axes[0], molecules):
        for label in dict.fromkeys(r.get("label", r.get("row")) for r in rows if r["molecule"] == molecule):
            points = sorted(
                (r["budget_s"] / 60, r["forces_mae_mev_per_a"])
                for r in rows
                if r["molecule"] == molecule and r.get("label", r.get("row")) == label
            )
            ax.plot(*zip(*points), marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="training budget, minutes", ylabel="test force MAE, meV/Å")
        ax.set_title(f"rMD17 {molecule}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return [_save(fig, results / "accuracy_budget.png")]


def nve_energy(load: Load, results: Path) -> list[str]:
    """md.py's NVE E_tot(t) − E_tot(0) per atom, meV, one panel per system, with the fitted drift."""
    rows = [r for r in (load("md.json") or {}).get("results", []) if (r.get("thermo") or {}).get("etot_ev")]
    if not rows:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.8 * len(rows), 3.8), squeeze=False)
    for ax, r in zip(axes[0], rows):
        thermo, atoms = r["thermo"], r.get("atoms") or 1
        t_ps = [t * 1e-3 for t in thermo["time_fs"]]
        etot = thermo["etot_ev"]
        ax.plot(t_ps, [1e3 * (e - etot[0]) / atoms for e in etot], "k-", lw=1.2, label="E_tot − E_tot(0)")
        if thermo.get("ekin_ev"):  # the swing E_tot should be far below
            ekin = thermo["ekin_ev"]
            swing = 1e3 * (max(ekin) - min(ekin)) / atoms
            ax.plot([], [], " ", label=f"E_kin swing: {swing:.3g} meV/atom")
        drift = r.get("drift_mev_per_atom_per_ps")
        title = f"{r.get('system')} ({atoms} atoms, {r.get('model')} model, {r.get('dtype')})"
        ax.set_title(title + (f"\ndrift {drift:.2g} meV/atom/ps" if drift is not None else ""), fontsize=9)
        ax.set(xlabel="time, ps", ylabel="E_tot − E_tot(0), meV/atom")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return [_save(fig, results / "md_nve_energy.png")]


def existing(*names: str):
    """A plot function that links PNG files a script wrote itself (those that exist)."""

    def plots(load: Load, results: Path) -> list[str]:
        return [name for name in names if (results / name).is_file()]

    return plots
