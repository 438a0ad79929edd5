"""``nnpes md MODEL STRUCTURE ...``: parse, call :func:`nnpes.md.driver.run_md`, write files.

The lead's ``nnpes/cli.py`` calls :func:`register` on its subparsers; errors the user can
cause are :class:`nnpes.errors.NnpesError` with one-line messages.
"""

from __future__ import annotations

import argparse
import json
import os

from nnpes.errors import DataError
from nnpes.md.driver import BACKENDS
from nnpes.md.ensembles import ENSEMBLE_NAMES, THERMOSTATS


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``md`` subcommand (its handler is :func:`main`)."""
    p = subparsers.add_parser(
        "md",
        help="run molecular dynamics with a trained model",
        description="Molecular dynamics with jax-md (molecules, and periodic cells at least 2·(cutoff + skin) wide) "
        "or ASE (smaller or partly periodic cells). The start structure is the last frame of any "
        "ASE-readable file, so a trajectory written by --out restarts a run (velocities included).",
    )
    p.add_argument("model", help="model directory (or a run directory holding model/)")
    p.add_argument("structure", help="start structure: any file ASE reads; its last frame is used")
    p.add_argument("--ensemble", choices=ENSEMBLE_NAMES, default="nvt", help="default: nvt")
    p.add_argument(
        "--thermostat",
        choices=THERMOSTATS,
        default="langevin",
        help="NVT thermostat (default: langevin); NPT always uses Nosé–Hoover chains",
    )
    p.add_argument("--dt", type=float, default=0.5, metavar="FS", help="time step, fs (default: 0.5)")
    p.add_argument("--steps", type=int, default=1000, metavar="N", help="number of steps (default: 1000)")
    p.add_argument(
        "--temperature",
        type=float,
        default=300.0,
        metavar="K",
        help="target temperature and that of the initial velocities when the file has none (default: 300)",
    )
    p.add_argument("--pressure", type=float, default=1.01325, metavar="BAR", help="NPT pressure, bar (default: 1 atm)")
    p.add_argument(
        "--tau-t", type=float, default=100.0, metavar="FS", help="thermostat time constant, fs (default: 100)"
    )
    p.add_argument(
        "--tau-p", type=float, default=1000.0, metavar="FS", help="barostat time constant, fs (default: 1000)"
    )
    p.add_argument("--every", type=int, default=10, metavar="K", help="record every K steps (default: 10)")
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="initial velocities and Langevin noise (default: 0)"
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default: float32")
    p.add_argument("--skin", type=float, default=None, metavar="A", help="neighbour-list skin, Å (default: 1.0)")
    p.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="auto: jax-md when the structure allows it, else ASE"
    )
    p.add_argument("--out", metavar="TRAJ.xyz", help="extxyz trajectory (positions, velocities, energy, forces)")
    p.add_argument(
        "--log",
        metavar="THERMO.csv",
        help="thermo log: time_fs, epot_ev, ekin_ev, etot_ev, temperature_k, pressure_bar, volume_a3",
    )
    p.add_argument("--json", metavar="FILE", help="write the run summary as JSON")
    p.set_defaults(func=main)
    return p


def read_structure(path: str):
    """The last frame of any ASE-readable file; a missing or unreadable file is a DataError."""
    import ase.io

    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        atoms = ase.io.read(path, index=-1)
    except Exception as e:  # ASE raises many types for a bad file; the user needs one line
        raise DataError(
            f"{path}: cannot read a structure ({type(e).__name__}: {str(e).strip() or 'bad format'})"
        ) from None
    if len(atoms) == 0:
        raise DataError(f"{path}: the structure has no atoms")
    return atoms


def main(args: argparse.Namespace) -> int:
    """Run ``nnpes md``; returns the exit status."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from nnpes.md.config import MDConfig
    from nnpes.md.driver import run_md
    from nnpes.potential import load

    potential = load(args.model)
    atoms = read_structure(args.structure)
    if args.steps < 1:
        raise DataError(f"--steps must be ≥ 1, got {args.steps}")
    options = MDConfig(
        ensemble=args.ensemble,
        thermostat=args.thermostat,
        dt_fs=args.dt,
        temperature_k=args.temperature,
        pressure_bar=args.pressure,
        tau_t_fs=args.tau_t,
        tau_p_fs=args.tau_p,
        seed=args.seed,
        dtype=args.dtype,
        every=args.every,
        **({"skin_a": args.skin} if args.skin is not None else {}),
    )  # ConfigError: one line

    with Progress(
        TextColumn("md"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task("md", total=args.steps)
        result = run_md(
            potential,
            atoms,
            args.steps,
            options,
            backend=args.backend,
            callback=lambda done, total: progress.update(task, completed=done),
        )

    if args.out:
        result.write_trajectory(args.out)
    if args.log:
        result.write_thermo(args.log)
    summary = result.summary()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    drift = summary["drift_mev_per_atom_per_ps"]
    print(
        f"{summary['ensemble']} ({summary['backend']}): {summary['atoms']} atoms, {summary['steps']} steps of "
        f"{summary['dt_fs']} fs, {summary['steps_per_s']:.1f} steps/s ({summary['ns_per_day']:.3f} ns/day), "
        f"T = {result.temperature_k[len(result.temperature_k) // 2 :].mean():.1f} K (second half)"
        + (f", drift {drift:+.4f} meV/atom/ps" if drift is not None else "")
        + f", {summary['neighbor_reallocations']} neighbour reallocations, {summary['compilations']} compilations"
    )
    return 0
