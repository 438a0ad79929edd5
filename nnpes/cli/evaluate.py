"""``nnpes evaluate MODEL DATA... [--json FILE] [--plot FILE.png]``: table, JSON, parity plots."""

from __future__ import annotations

import json
import os

import numpy as np

_COLUMNS = [
    ("frames", "frames", "{:d}"),
    ("E MAE meV", "energy_mae_mev", "{:.2f}"),
    ("E MAE meV/atom", "energy_mae_mev_per_atom", "{:.3f}"),
    ("E RMSE meV/atom", "energy_rmse_mev_per_atom", "{:.3f}"),
    ("F MAE meV/Å", "forces_mae_mev_per_a", "{:.2f}"),
    ("F RMSE meV/Å", "forces_rmse_mev_per_a", "{:.2f}"),
    ("σ MAE meV/Å³", "stress_mae_mev_per_a3", "{:.3f}"),
    ("σ RMSE meV/Å³", "stress_rmse_mev_per_a3", "{:.3f}"),
]


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="errors of a model on labelled files")
    p.add_argument("model", help="model directory or run directory")
    p.add_argument("data", nargs="+", help="ASE-readable labelled files")
    p.add_argument("--json", help="write metrics as JSON to this file")
    p.add_argument("--plot", help="write energy and force parity plots to this PNG")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")
    p.set_defaults(func=run)


def run(args) -> int:
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from nnpes.data.io import read_frames
    from nnpes.evaluate import evaluate_frames
    from nnpes.md.calculator import resolve_dtype
    from nnpes.potential import load

    potential = load(args.model).astype(resolve_dtype(args.dtype))
    files, parity = [], []
    for path in args.data:
        frames = read_frames(path, energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key)
        metrics, preds = evaluate_frames(potential, frames, args.batch_size)
        files.append({"path": os.path.abspath(path), **metrics})
        parity.append((os.path.basename(path), frames, preds))
    _print_table(files)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": os.path.abspath(args.model), "files": files}, f, indent=2)
    if args.plot:
        parity_plot(parity, args.plot)
    return 0


def _print_table(files: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="nnpes evaluate")
    table.add_column("file")
    for name, _, _ in _COLUMNS:
        table.add_column(name, justify="right")
    for f in files:
        cells = [os.path.basename(f["path"])]
        for _, key, fmt in _COLUMNS:
            cells.append("—" if f[key] is None else fmt.format(f[key]))
        table.add_row(*cells)
    Console(width=200).print(table)


def parity_plot(parity, path: str) -> None:
    """Energy-per-atom and force-component parity plots (predicted against reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, frames, preds in parity:
        e = [(f.energy / f.n_atoms, p["energy"] / f.n_atoms) for f, p in zip(frames, preds) if f.energy is not None]
        if e:
            ref, pred = np.array(e).T
            ax_e.scatter(ref, pred, s=6, label=name)
        fs = [(f.forces.ravel(), p["forces"].ravel()) for f, p in zip(frames, preds) if f.forces is not None]
        if fs:
            ax_f.scatter(np.concatenate([a for a, _ in fs]), np.concatenate([b for _, b in fs]), s=2, label=name)
    for ax, title, unit in ((ax_e, "energy", "eV/atom"), (ax_f, "force components", "eV/Å")):
        lims = ax.get_xlim()
        ax.plot(lims, lims, "k--", lw=0.8)
        ax.set_xlabel(f"reference ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
