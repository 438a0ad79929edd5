"""``nnpes md MODEL STRUCTURE ...``: parse, call :func:`nnpes.md.driver.run_md`, write files.

The lead's ``nnpes/cli.py`` calls :func:`register` on its subparsers; errors the user can
cause are :class:`nnpes.errors.NnpesError` with one-line messages.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from nnpes.cli.outputs import check_outputs, dump_json, write
from nnpes.errors import ConfigError, DataError, Interrupted, NnpesError, SimulationError
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
        default=None,
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
    p.add_argument("--pressure", type=float, metavar="BAR", help="NPT pressure, bar (default: 1 atm)")
    p.add_argument("--tau-t", type=float, metavar="FS", help="NVT/NPT thermostat time constant, fs (default: 100)")
    p.add_argument("--tau-p", type=float, metavar="FS", help="NPT barostat time constant, fs (default: 1000)")
    p.add_argument("--every", type=int, default=10, metavar="K", help="record every K steps (default: 10)")
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="initial velocities and Langevin noise (default: 0)"
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default: float32")
    p.add_argument(
        "--max-temperature",
        type=float,
        default=None,
        metavar="K",
        help="stop as unstable, keeping the frames before, when a recorded frame is hotter than this "
        "(default: 10 x the target or start temperature, at least 3000 K)",
    )
    _add_uncertainty_options(p)
    p.add_argument("--skin", type=float, default=None, metavar="A", help="neighbour-list skin, Å (default: 1.0)")
    p.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="auto: jax-md when the structure allows it, else ASE"
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="spread a periodic structure over N devices by spatial domain decomposition (nve, nvt langevin; "
        "on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N; across hosts: see docs/md.md)",
    )
    p.add_argument("--out", metavar="TRAJ.xyz", help="extxyz trajectory (positions, velocities, energy, forces)")
    p.add_argument(
        "--log",
        metavar="THERMO.csv",
        help="thermo log: time_fs, epot_ev, ekin_ev, etot_ev, temperature_k, pressure_bar, volume_a3",
    )
    p.add_argument("--json", metavar="FILE", help="write the run summary as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write the thermo plot: energy changes per atom (for NVE, energy conservation), temperature, "
        "and for NPT volume, against time",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no status lines (memory estimate, neighbour list, compilation) and no progress bar on stderr",
    )
    p.set_defaults(func=main, quiet=False)
    return p


def _add_uncertainty_options(p: argparse.ArgumentParser) -> None:
    """The extrapolation alarm's options (ensembles; :mod:`nnpes.md.alarm`)."""
    p.add_argument(
        "--uncertainty-threshold",
        type=float,
        default=None,
        metavar="EV_A",
        help="ensembles: warn about (and write to --uncertain-out) a recorded frame whose largest per-atom force "
        "uncertainty is above this, eV/Å (default: the threshold fitted on validation data at training)",
    )
    p.add_argument(
        "--stop-on-uncertainty",
        action="store_true",
        help="ensembles: stop at the first such frame (exit status 3, the frames up to it written)",
    )
    p.add_argument(
        "--uncertain-out",
        metavar="FILE.xyz",
        default=None,
        help="where frames above the uncertainty threshold go (default: uncertain.xyz beside --out, "
        "or in the current directory); written only when there are such frames",
    )


# MDConfig key → the option that sets it (errors name the option)
OPTION_OF_KEY = {
    "ensemble": "--ensemble",
    "thermostat": "--thermostat",
    "dt_fs": "--dt",
    "temperature_k": "--temperature",
    "pressure_bar": "--pressure",
    "tau_t_fs": "--tau-t",
    "tau_p_fs": "--tau-p",
    "seed": "--seed",
    "dtype": "--dtype",
    "skin_a": "--skin",
    "every": "--every",
    "max_temperature_k": "--max-temperature",
    "uncertainty_threshold_ev_a": "--uncertainty-threshold",
}
# options that only some ensembles read: giving one to another ensemble is refused, not ignored
ENSEMBLES_OF_OPTION = {"thermostat": ("nvt",), "pressure": ("npt",), "tau_p": ("npt",), "tau_t": ("nvt", "npt")}


def read_structure(path: str, potential=None, options=None):
    """The last frame of any ASE-readable file, validated as every nnpes entry point validates a
    frame (:func:`nnpes.md.structure.check_structure`, which calls
    :func:`nnpes.data.io.frame_from_atoms`), and, given them, against the elements ``potential``
    knows and the cell the ensemble of ``options`` needs. Every problem is one NnpesError line."""
    import ase.io

    from nnpes.md.structure import check_structure

    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a structure file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        atoms = ase.io.read(path, index=-1)
    except Exception as e:  # ASE raises many types for a bad file; the user needs one line
        text = str(e).strip().splitlines()[0] if str(e).strip() else "bad format"
        raise DataError(f"{path}: cannot read a structure ({type(e).__name__}: {text})") from None
    if len(atoms) == 0:
        raise DataError(f"{path}: the structure has no atoms")
    try:
        check_structure(atoms, potential, options, source=path)
    except NnpesError:
        # the same error again, naming the frame by its number: counted only now (slow for long files)
        last = _last_index(path)
        if last is not None:
            check_structure(atoms, potential, options, source=path, index=last)
        raise
    return atoms


def _last_index(path: str) -> int | None:
    """The index of the last frame of a file ASE has read once already (None if counting fails)."""
    import ase.io

    try:
        return sum(1 for _ in ase.io.iread(path)) - 1
    except Exception:  # the frame goes unnamed rather than the error becoming a traceback
        return None


def _options(args: argparse.Namespace):
    """The validated :class:`~nnpes.md.config.MDConfig` of the command line (errors name the option)."""
    from nnpes.md.config import from_options

    if args.steps < 1:
        raise ConfigError(f"--steps must be ≥ 1, got {args.steps}")
    for dest, ensembles in ENSEMBLES_OF_OPTION.items():
        if getattr(args, dest) is not None and args.ensemble not in ensembles:
            raise ConfigError(
                f"--{dest.replace('_', '-')} does nothing with --ensemble {args.ensemble} "
                f"(it is an option of {' and '.join(ensembles)})"
            )
    given = {"thermostat": args.thermostat, "pressure_bar": args.pressure, "tau_t_fs": args.tau_t}
    given |= {"tau_p_fs": args.tau_p, "skin_a": args.skin, "max_temperature_k": args.max_temperature}
    given |= {"uncertainty_threshold_ev_a": args.uncertainty_threshold}
    if args.stop_on_uncertainty:
        given["stop_on_uncertainty"] = True
    return from_options(
        OPTION_OF_KEY,
        ensemble=args.ensemble,
        dt_fs=args.dt,
        temperature_k=args.temperature,
        seed=args.seed,
        dtype=args.dtype,
        every=args.every,
        **{k: v for k, v in given.items() if v is not None},
    )


def _check_backend(args: argparse.Namespace, potential, atoms, options) -> None:
    """Refuse ``--backend jax-md`` for a structure jax-md cannot run (before anything compiles)."""
    from nnpes.md.driver import choose_backend

    if args.backend == "jax-md" and choose_backend(potential, atoms, options.skin_a) == "ase":
        width = 2.0 * (potential.cutoff + options.skin_a)
        raise ConfigError(
            f"{args.structure}: --backend jax-md needs a molecule or a cell periodic in all directions and at "
            f"least 2·(cutoff + skin) = {width:.2f} Å wide: use --backend auto or ase, or a supercell"
        )


class _StatusLines(logging.Handler):
    """Prints the library's status messages (logger ``nnpes.md``) as ``nnpes md: ...`` lines on
    stderr, with the seconds since the run started; sys.stderr is looked up at each line, so the
    progress bar (which redirects it while shown) keeps its place below them."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.start = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        print(
            f"nnpes md: [{time.perf_counter() - self.start:6.1f} s] {record.getMessage()}", file=sys.stderr, flush=True
        )


@contextlib.contextmanager
def _status_lines(enabled: bool):
    """Show the ``nnpes.md`` logger's INFO messages on stderr while the run lasts."""
    logger = logging.getLogger("nnpes.md")
    if not enabled:
        yield
        return
    handler, level, propagate = _StatusLines(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def main(args: argparse.Namespace) -> int:
    """Run ``nnpes md``; returns the exit status. Options, output paths, the model and the
    structure are all checked before anything is compiled."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from nnpes.md.alarm import UncertaintyStop
    from nnpes.md.driver import run_md
    from nnpes.md.results import UncertainWriter

    quiet = getattr(args, "quiet", False)
    options, potential, atoms = _checked_inputs(args)
    progress = Progress(
        TextColumn("md"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        transient=True,
        disable=quiet,
    )
    writer, uncertain = _frame_writer(args), UncertainWriter(_uncertain_path(args))
    stopped = None
    with _status_lines(not quiet), progress:
        task = progress.add_task("md", total=args.steps)
        try:
            result = run_md(
                potential,
                atoms,
                args.steps,
                options,
                backend=args.backend,
                devices=args.devices,
                callback=lambda done, total: progress.update(task, completed=done),
                source=args.structure,
                on_frames=lambda frames: [write(w.add, frames) for w in (writer, uncertain)],
            )
        except (SimulationError, Interrupted) as e:  # keep what was done before saying why it ended
            stopped, result = e, e.result
    written = _finish_outputs(args, writer, result) if result is not None else "nothing written"
    if uncertain.count:
        written += f"; {uncertain.count} frame(s) above the uncertainty threshold written to {uncertain.path}"
    if isinstance(stopped, UncertaintyStop):
        print(f"nnpes md: {stopped}; {written}", file=sys.stderr)
        return 3
    if isinstance(stopped, SimulationError):
        raise SimulationError(f"{args.structure}: {stopped}; {written}") from None
    if stopped is not None:
        raise KeyboardInterrupt(f"{stopped}; {written}")
    print(_summary_line(result))
    return 0


def _checked_inputs(args: argparse.Namespace) -> tuple:
    """(options, potential, start structure), every option, output path and input checked."""
    from nnpes.potential import load

    options = _options(args)  # ConfigError: one line naming the option
    outputs = ("--out", args.out), ("--log", args.log), ("--json", args.json), ("--uncertain-out", args.uncertain_out)
    check_outputs(*outputs, ("--plot", args.plot))
    if args.out and os.path.splitext(args.out)[1].lower() not in ("", ".xyz", ".extxyz"):
        # ASE picks a file's format by its name: a .traj holding extxyz could not be read back
        raise ConfigError(f"--out {args.out}: trajectories are written as extended XYZ; name the file .xyz")
    potential = load(args.model)
    atoms = read_structure(args.structure, potential, options)
    if args.devices is None:
        _check_backend(args, potential, atoms, options)
    elif args.devices < 1:
        raise ConfigError(f"--devices must be ≥ 1, got {args.devices}")
    return options, potential, atoms


def _frame_writer(args: argparse.Namespace):
    """The writer of ``--out`` and ``--log`` as frames are recorded.

    When ``--out`` is the start structure's own file (a restart from a trajectory), the run is
    appended to it without repeating the start frame, and so is the log to an existing ``--log``:
    continuing a run never overwrites the frames before it."""
    from nnpes.md.results import FrameWriter

    continued = args.out is not None and os.path.exists(args.out) and os.path.samefile(args.out, args.structure)
    return FrameWriter(args.out, args.log, continued, continued and args.log is not None and os.path.exists(args.log))


def _uncertain_path(args: argparse.Namespace) -> str:
    if args.uncertain_out:
        return args.uncertain_out
    return os.path.join(os.path.dirname(os.path.abspath(args.out)) if args.out else os.getcwd(), "uncertain.xyz")


def _finish_outputs(args: argparse.Namespace, writer, result) -> str:
    """Write the frames not yet written and the JSON summary; say what was written."""
    write(writer.finish, result)
    if args.json:
        write(dump_json, result.summary(), args.json)
    if args.plot:
        from nnpes.md.plots import thermo_plot

        write(thermo_plot, result, args.plot)
    files = [path for path in (args.out, args.log, args.json, args.plot) if path]
    frames = f"{len(result.time_fs)} frame{'s' * (len(result.time_fs) != 1)}"
    where = f"written to {', '.join(files)}" if files else "recorded (no --out, --log or --json given)"
    return f"{frames} up to t = {result.time_fs[-1]:.6g} fs (step {result.steps}) {where}"


def _summary_line(result) -> str:
    """The line ``nnpes md`` prints at the end of a run."""
    summary = result.summary()
    drift = summary["drift_mev_per_atom_per_ps"]
    return (
        f"{summary['ensemble']} ({summary['backend']}): {summary['atoms']} atoms, {summary['steps']} steps of "
        f"{summary['dt_fs']} fs, {summary['steps_per_s']:.1f} steps/s ({summary['ns_per_day']:.3f} ns/day), "
        f"T = {result.temperature_k[len(result.temperature_k) // 2 :].mean():.1f} K (second half)"
        + (f", drift {drift:+.4f} meV/atom/ps" if drift is not None else "")
        + f", {summary['neighbor_reallocations']} neighbour reallocations, {summary['compilations']} compilations"
    )
