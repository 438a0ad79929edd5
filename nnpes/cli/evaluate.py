"""``nnpes evaluate MODEL DATA... [--json FILE] [--plot FILE.png] [--calibration-plot FILE.png]``:
table, JSON, parity plots; for an ensemble also its uncertainty (:mod:`nnpes.uncertainty`:
negative log-likelihood, binned calibration, rank correlation of predicted and actual force errors).

Labels are read under the keys the model was trained with (``potential.json``'s
``label_keys``; the label's own name for a model without the record) unless ``--energy-key``
and the like say otherwise. Every file is read and checked before any is evaluated: a file
without any label is an error; a label absent from a whole file, and magnitudes that look
like a unit mistake (:mod:`nnpes.data.sanity`), are one warning line each. The JSON records
the keys used (``label_keys``) next to the metrics of each file.
"""

from __future__ import annotations

import os

import numpy as np

from nnpes.cli.outputs import check_outputs, dump_json, write
from nnpes.errors import ConfigError

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
_UNCERTAINTY_COLUMNS = [
    ("σ_E mean meV", "energy_std_mean_mev", "{:.2f}"),
    ("σ_F mean meV/Å", "forces_std_mean_mev_per_a", "{:.2f}"),
    ("NLL E", "energy_nll", "{:.3f}"),
    ("NLL F", "forces_nll", "{:.3f}"),
    ("ENCE E", "energy_ence", "{:.3f}"),
    ("ENCE F", "forces_ence", "{:.3f}"),
    ("Spearman F", "forces_spearman", "{:.3f}"),
]
KEY_LABELS = ("energy", "forces", "stress", "virial")
GPA_PER_EV_A3 = 160.21766


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="errors of a model on labelled files")
    p.add_argument("model", help="model directory or run directory")
    p.add_argument("data", nargs="+", help="ASE-readable labelled files")
    p.add_argument("--json", help="write metrics as JSON to this file")
    p.add_argument("--plot", help="write energy, force (and stress) parity plots to this PNG")
    p.add_argument(
        "--calibration-plot",
        metavar="FILE.png",
        help="ensembles: write the calibration plot (actual RMSE against predicted σ, binned) to this PNG",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    for label in KEY_LABELS:
        p.add_argument(
            f"--{label}-key", default=None, help=f"key of the {label} label (default: the model's training key)"
        )
    p.set_defaults(func=run)


def run(args) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive number of frames, got {args.batch_size}")
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from nnpes.evaluate import evaluate_frames
    from nnpes.md.calculator import resolve_dtype
    from nnpes.potential import load

    # before the work, not after it
    check_outputs(("--json", args.json), ("--plot", args.plot), ("--calibration-plot", args.calibration_plot))
    potential = load(args.model).astype(resolve_dtype(args.dtype))
    if args.calibration_plot and not potential.members:
        raise ConfigError(f"--calibration-plot: {args.model} is one network, not an ensemble (model.ensemble: M)")
    keys = {label: getattr(args, f"{label}_key") or potential.label_key(label) for label in KEY_LABELS}
    expect_stress = args.stress_key is not None or args.virial_key is not None
    datasets = [(path, _read_checked(path, keys, expect_stress)) for path in args.data]  # every file checked first
    files, parity = [], []
    for path, frames in datasets:
        metrics, preds = evaluate_frames(potential, frames, args.batch_size)
        if potential.members:
            from nnpes.uncertainty import uncertainty_metrics

            metrics["uncertainty"] = uncertainty_metrics(frames, preds)
        files.append({"path": os.path.abspath(path), **metrics})
        parity.append((os.path.basename(path), frames, preds))
    _print_table(files)
    if potential.members:
        _print_table(files, _UNCERTAINTY_COLUMNS, "uncertainty", "nnpes evaluate: ensemble uncertainty")
    if args.calibration_plot:
        from nnpes.uncertainty import calibration_plot

        named = [(os.path.basename(f["path"]), f["uncertainty"]) for f in files]
        write(calibration_plot, named, args.calibration_plot)
    if args.json:
        write(dump_json, {"model": os.path.abspath(args.model), "label_keys": keys, "files": files}, args.json)
    if args.plot:
        write(parity_plot, parity, args.plot)
    return 0


def _read_checked(path: str, keys: dict, expect_stress: bool) -> list:
    """Frames of one file, read with ``keys``; DataError without labels, warnings for the rest."""
    from nnpes.data.io import read_frames
    from nnpes.data.sanity import warn_units
    from nnpes.evaluate import check_labels

    frames = read_frames(path, **{f"{label}_key": key for label, key in keys.items()})
    check_labels(frames, keys, path, expect_stress=expect_stress)
    warn_units(frames)
    return frames


def _print_table(files: list[dict], columns=_COLUMNS, section: str | None = None, title="nnpes evaluate") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("file")
    for name, _, _ in columns:
        table.add_column(name, justify="right")
    for f in files:
        cells = [os.path.basename(f["path"])]
        values = f[section] if section else f
        for _, key, fmt in columns:
            cells.append("—" if values[key] is None else fmt.format(values[key]))
        table.add_row(*cells)
    Console(width=200).print(table)


def _pairs(frames, preds, label: str):
    """(reference, predicted) components of a label over the frames that carry it, plot units."""
    ref, pred = [], []
    for f, p in zip(frames, preds):
        value = getattr(f, label)
        if value is None or label not in p:
            continue
        if label == "energy":  # per atom
            ref.append([value / f.n_atoms])
            pred.append([p[label] / f.n_atoms])
        else:
            ref.append(np.ravel(value))
            pred.append(np.ravel(p[label]))
    if not ref:
        return None
    scale = GPA_PER_EV_A3 if label == "stress" else 1.0
    return np.concatenate(ref) * scale, np.concatenate(pred) * scale


# label, title, axis unit, MAE unit, MAE factor (axis unit → MAE unit)
_PANELS = (
    ("energy", "energy per atom", "eV/atom", "meV/atom", 1e3),
    ("forces", "force components", "eV/Å", "meV/Å", 1e3),
    ("stress", "stress components", "GPa", "GPa", 1.0),
)


def parity_figure(parity):
    """Parity plots (predicted against reference) as a matplotlib Figure.

    Panels: energy per atom (eV/atom), force components (eV/Å) and, when any frame has stress,
    stress components (GPa, ASE sign: positive = tensile). Each file's legend entry gives its
    MAE on that panel (meV/atom, meV/Å, GPa).

    Drawing order: files whose name contains "train" (any case) are drawn first, underneath
    (zorder 1); every other file (test, validation) is drawn afterwards on top (zorder 2), so
    training points never hide test points. Within each group the given order is kept.

    Args:
        parity: (name, frames, predictions) per file, predictions as from
            :func:`nnpes.evaluate.evaluate_frames`.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    has_stress = any(f.stress is not None for _, frames, _ in parity for f in frames)
    panels = _PANELS if has_stress else _PANELS[:2]
    fig = Figure(figsize=(5 * len(panels), 4.5))
    axes = fig.subplots(1, len(panels))
    ordered = sorted(parity, key=lambda item: "train" not in item[0].lower())  # stable: train first
    for ax, (label, title, unit, mae_unit, factor) in zip(axes, panels):
        for name, frames, preds in ordered:
            pairs = _pairs(frames, preds, label)
            if pairs is None:
                continue
            ref, pred = pairs
            mae = float(np.mean(np.abs(pred - ref))) * factor
            zorder = 1 if "train" in name.lower() else 2
            ax.scatter(
                ref, pred, s=6 if label == "energy" else 2, zorder=zorder, label=f"{name}: MAE {mae:.3g} {mae_unit}"
            )
        _finish_panel(ax, title, unit)
    fig.tight_layout()
    return fig


def _finish_panel(ax, title: str, unit: str) -> None:
    if ax.collections:
        lo, hi = min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, zorder=0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, f"no {title.split()[0]} labels", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"reference ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.set_title(title)


def parity_plot(parity, path: str) -> None:
    """Write :func:`parity_figure` of ``parity`` to the PNG ``path``."""
    parity_figure(parity).savefig(path, dpi=120)
