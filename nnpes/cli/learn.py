"""``nnpes learn CONFIG [key.sub=value ...] [--workdir DIR]``: the active-learning loop
(:mod:`nnpes.learn`), a table row per round; rerunning the command resumes the run."""

from __future__ import annotations

import argparse
import os

# (header, row key, format); key None: frames above the threshold / MD frames
_COLUMNS = (
    ("round", "round", "{:d}"),
    ("labels", "labelled_frames", "{:d}"),
    ("test F MAE meV/Å", "test_forces_mae_mev_per_a", "{:.1f}"),
    ("test E MAE meV", "test_energy_mae_mev", "{:.1f}"),
    ("mean σ_F MD eV/Å", "mean_force_std_ev_a", "{:.3f}"),
    ("threshold eV/Å", "threshold_ev_a", "{:.3g}"),
    ("above / MD frames", None, None),
    ("unstable runs", "unstable_runs", "{:d}"),
    ("selected", "selected", "{:d}"),
    ("labelled", "labelled_new", "{:d}"),
    ("time s", "elapsed_s", "{:.0f}"),
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "learn", help="active learning: train an ensemble, run MD, label uncertain frames, retrain (resumable)"
    )
    p.add_argument("config", help="learn YAML config (docs/trust.md: Active learning)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. rounds=6")
    p.add_argument("--workdir", help="work directory (wins over the config's workdir)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from nnpes.learn import learn, load_learn_config
    from nnpes.learn.label import LabellingWarning

    cfg = load_learn_config(args.config, args.overrides, workdir=args.workdir)
    if cfg.train.dtype == "float64":  # the entry point, not the library, flips process-wide settings
        import jax

        jax.config.update("jax_enable_x64", True)
    warnings.simplefilter("always", LabellingWarning)  # one line per frame skipped
    rows = learn(cfg, on_round=print_table, config_dir=os.path.dirname(os.path.abspath(args.config)))
    print(
        f"nnpes learn: {len(rows)} round(s) in {os.path.abspath(cfg.workdir)} (rounds.csv, rounds.json, labelled.xyz)"
    )
    return 0


def print_table(rows: list[dict]) -> None:
    """The rounds so far as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="nnpes learn")
    for name, _, _ in _COLUMNS:
        table.add_column(name, justify="right")
    for row in rows:
        cells = []
        for _, key, fmt in _COLUMNS:
            if key is None:
                cells.append(f"{row['above_threshold']} / {row['md_frames']}")
            else:
                cells.append("—" if row.get(key) is None else fmt.format(row[key]))
        table.add_row(*cells)
    Console(width=200).print(table)
