"""Cost of one ASE calculator call, and accuracy per millisecond: nnpes vs apax vs mlip, same run.

    .venv/bin/python benchmarks/calculator.py [--peers-dir benchmarks/results/peers]
        [--models NAME=MODEL_DIR ...] [--random] [--calls 200] [--json FILE]

Systems: ethanol (the first frame of rMD17 ethanol, ``nnpes/data/files/ethanol_test.xyz``, 9 atoms,
free space) and water192 (the first frame of ``../shared/data/water/water.xyz``: 64 H2O in a
12.44 Å periodic cube; a model trained on ethanol knows H and O, so its time per call is
measured on it even though its energies there mean nothing).

Rows (each model × system in its own subprocess, one after another):
    nnpes models    every ``--models NAME=DIR`` (a model or run directory), and the nnpes rows of
                    ``--peers-dir`` (``benchmarks/peers.py``'s work directory: ``<name>/model``).
    apax, mlip      the peers trained by ``benchmarks/peers.py`` in ``--peers-dir`` (``apax/apax``,
                    ``mlip/mace.zip``), each run with its own interpreter (``--apax-python``,
                    ``--mlip-python``) through its own ASE calculator: ``apax.md.ASECalculator`` and
                    mlip's ``MLIPForceFieldASECalculator`` (edge capacity ×1.25).
    --random        untrained nnpes models of the shipped configs' sizes (time only, no MAE).

Per row: test force MAE (meV/Å, through the same ASE calculator on the 1 000 rMD17 ethanol test
frames, --test) and, per system, ms per ``atoms.get_forces()`` (median of --calls calls after 3
warm-up calls, each at new positions: atom 0 moved by 1e-4 Å, so nothing is cached), the
call a user's ASE MD makes. For nnpes rows also the compiled energy+forces program alone on the
same inputs already on the device (``compiled ms``) and the difference, the calculator's host
time (neighbour list, padding, copies, Python: ``host ms``).

A Pareto table follows: rows sorted by force MAE, each marked when no other row is both more
accurate and faster on that system. Results: the tables on stdout and JSON (--json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
from _harness import emit, fmt, run_limited, worker_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
PEER_VENVS = os.path.join(os.path.dirname(ROOT), "peer-venvs")
SYSTEMS = {
    "ethanol": os.path.join(ROOT, "nnpes", "data", "files", "ethanol_test.xyz"),
    "water192": os.path.join(SHARED, "water", "water.xyz"),
}
TEST_XYZ = os.path.join(SHARED, "rmd17", "ethanol_test.xyz")
RANDOM_MODELS = {  # untrained models (time only): the shipped configs' model sections
    "nequip-quickstart": {"family": "nequip", "channels": 16, "l_max": 2, "parity": False, "num_layers": 2,
                          "radial_features": [32]},
    "nequip-rmd17": {"family": "nequip", "channels": 32, "l_max": 2, "parity": False, "num_layers": 3,
                     "radial_features": [64]},
    "nequip-small": {"family": "nequip", "channels": 8, "l_max": 1, "parity": False, "num_layers": 2,
                     "radial_features": [16]},
}  # fmt: skip


# -- workers -----------------------------------------------------------------------------------
def _moving_calls(atoms, calls: int) -> list[float]:
    """ms of each of ``calls`` get_forces() calls, atom 0 moved by 1e-4 Å before each (3 warm-ups)."""
    times = []
    for k in range(calls + 3):
        atoms.positions[0, 0] += 1e-4 if k % 2 else -1e-4
        start = time.perf_counter()
        atoms.get_forces()
        if k >= 3:
            times.append(1e3 * (time.perf_counter() - start))
    return times


def _force_mae(make_calc, test_xyz: str) -> float:
    """Force-component MAE (meV/Å) on the test frames, through one calculator."""
    import ase.io

    frames = ase.io.read(test_xyz, ":")
    calc, errors = make_calc(frames[0]), []
    for atoms in frames:
        reference = atoms.get_forces().copy()
        atoms.calc = calc
        errors.append(np.abs(atoms.get_forces() - reference).ravel())
    return 1e3 * float(np.mean(np.concatenate(errors)))


def _read(system: str):
    import ase.io

    return ase.io.read(SYSTEMS[system], 0)


def nnpes_worker(model: str, system: str, calls: int, test: str) -> None:
    import jax

    import nnpes
    from nnpes.data.io import geometry_from_atoms

    if model.startswith("random:"):
        from nnpes.models import family_class

        spec = dict(RANDOM_MODELS[model.removeprefix("random:")])
        family = family_class(spec.pop("family"))
        potential = nnpes.Potential.create(family(**spec), [1, 6, 8], 5.0, avg_num_neighbors=8.0)
        mae = None
    else:
        potential = nnpes.load(model)
        mae = _force_mae(lambda _: nnpes.Calculator(potential), test) if test else None
    atoms = _read(system)
    calc = nnpes.Calculator(potential)
    atoms.calc = calc
    times = _moving_calls(atoms, calls)
    # the compiled program alone, on the last call's inputs already on the device
    arrays, n_node, n_edge = calc._padded(*geometry_from_atoms(atoms, "benchmark"))
    compiled = calc._function(n_node, n_edge, bool(np.all(atoms.pbc)), arrays)
    on_device = jax.device_put(arrays)
    compiled_ms = []
    for k in range(calls + 3):
        start = time.perf_counter()
        jax.block_until_ready(compiled(calc._leaves, on_device))
        if k >= 3:
            compiled_ms.append(1e3 * (time.perf_counter() - start))
    call, program = float(np.median(times)), float(np.median(compiled_ms))
    emit({"call_ms": call, "compiled_ms": program, "host_ms": call - program, "forces_mae_mev_per_a": mae})


def apax_worker(model: str, system: str, calls: int, test: str) -> None:
    from apax.md import ASECalculator

    mae = _force_mae(lambda _: ASECalculator(model_dir=model), test) if test else None
    atoms = _read(system)
    atoms.calc = ASECalculator(model_dir=model)
    emit({"call_ms": float(np.median(_moving_calls(atoms, calls))), "forces_mae_mev_per_a": mae})


def mlip_worker(model: str, system: str, calls: int, test: str) -> None:
    from mlip.models import Mace
    from mlip.models.model_io import load_model_from_zip
    from mlip.simulation.ase.mlip_ase_calculator import MLIPForceFieldASECalculator

    force_field = load_model_from_zip(Mace, model)

    def make(atoms):
        return MLIPForceFieldASECalculator(atoms, 1.25, force_field)

    mae = _force_mae(make, test) if test else None
    atoms = _read(system)
    atoms.calc = make(atoms)
    emit({"call_ms": float(np.median(_moving_calls(atoms, calls))), "forces_mae_mev_per_a": mae})


WORKERS = {"nnpes": nnpes_worker, "apax": apax_worker, "mlip": mlip_worker}


# -- driver ------------------------------------------------------------------------------------
def rows_to_run(args) -> list[dict]:
    """(name, kind, model path, interpreter) of every row asked for."""
    rows = [{"name": name, "kind": "nnpes", "model": path, "python": sys.executable} for name, path in args.models]
    if args.peers_dir:
        for name in sorted(os.listdir(args.peers_dir)) if os.path.isdir(args.peers_dir) else []:
            where = os.path.join(args.peers_dir, name)
            if os.path.isdir(os.path.join(where, "model")):
                rows.append({"name": f"nnpes {name}", "kind": "nnpes", "model": os.path.join(where, "model"),
                             "python": sys.executable})  # fmt: skip
            elif name == "apax" and os.path.isdir(os.path.join(where, "apax")):
                rows.append({"name": "apax (GMNN)", "kind": "apax", "model": os.path.join(where, "apax"),
                             "python": args.apax_python})  # fmt: skip
            elif name == "mlip" and os.path.isfile(os.path.join(where, "mace.zip")):
                rows.append({"name": "mlip (MACE)", "kind": "mlip", "model": os.path.join(where, "mace.zip"),
                             "python": args.mlip_python})  # fmt: skip
    if args.random:
        rows += [{"name": f"{n} (untrained)", "kind": "nnpes", "model": f"random:{n}", "python": sys.executable}
                 for n in RANDOM_MODELS]  # fmt: skip
    return rows


def run_row(row: dict, args) -> dict:
    out = {"name": row["name"], "kind": row["kind"], "model": row["model"], "systems": {}}
    for k, system in enumerate(args.systems):
        test = args.test if k == 0 and not row["model"].startswith("random:") else ""
        cmd = worker_command(__file__, row["kind"], row["model"], system, "--calls", str(args.calls))
        cmd = [row["python"], *cmd[1:], "--test", test]
        print(f"running {row['name']} on {system} ...", file=sys.stderr, flush=True)
        result = run_limited(cmd, args.timeout, args.memory_gb)
        if "forces_mae_mev_per_a" in result and result["forces_mae_mev_per_a"] is not None:
            out["forces_mae_mev_per_a"] = result["forces_mae_mev_per_a"]
        out["systems"][system] = {k: v for k, v in result.items() if k != "forces_mae_mev_per_a"}
    return out


def pareto(rows: list[dict], system: str) -> set[str]:
    """Names of the rows no other row beats on both force MAE and ms per call on ``system``."""
    scored = [
        (r["forces_mae_mev_per_a"], r["systems"][system]["call_ms"], r["name"])
        for r in rows
        if r.get("forces_mae_mev_per_a") is not None and r["systems"].get(system, {}).get("status") == "ok"
    ]
    return {n for e, t, n in scored if not any(e2 <= e and t2 <= t and (e2, t2) != (e, t) for e2, t2, _ in scored)}


def print_tables(rows: list[dict], systems: list[str]) -> None:
    head = f"{'model':32s} {'F MAE':>7s}"
    for s in systems:
        head += f" {s + ' ms':>12s} {'compiled':>9s} {'host':>7s}"
    print(head + "\n" + "-" * len(head))
    fronts = {s: pareto(rows, s) for s in systems}
    for r in sorted(rows, key=lambda r: (r.get("forces_mae_mev_per_a") is None, r.get("forces_mae_mev_per_a") or 0)):
        line = f"{r['name']:32s} {fmt(r.get('forces_mae_mev_per_a'), '.1f'):>7s}"
        for s in systems:
            res = r["systems"].get(s, {})
            if res.get("status") != "ok":
                line += f" {res.get('status', '-')[:30]:>30s}"
                continue
            mark = "*" if r["name"] in fronts[s] else " "
            line += f" {fmt(res['call_ms'], '.3f'):>11s}{mark} {fmt(res.get('compiled_ms'), '.3f'):>9s}"
            line += f" {fmt(res.get('host_ms'), '.3f'):>7s}"
        print(line)
    print("F MAE: test force-component MAE, meV/Å (rMD17 ethanol, 1 000 frames); ms: one ASE get_forces() call;")
    print("compiled: nnpes's compiled program alone; host: the difference; *: on the Pareto front (MAE vs ms)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=[], metavar="NAME=DIR", help="trained nnpes models")
    parser.add_argument("--peers-dir", default=None, help="benchmarks/peers.py's work directory")
    parser.add_argument("--random", action="store_true", help="also untrained nnpes models (time only)")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--calls", type=int, default=200, help="timed calls per model and system")
    parser.add_argument("--test", default=TEST_XYZ, help="labelled test set for the force MAE")
    parser.add_argument("--apax-python", default=os.path.join(PEER_VENVS, "apax", "bin", "python"))
    parser.add_argument("--mlip-python", default=os.path.join(PEER_VENVS, "mlip", "bin", "python"))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    parser.add_argument("--memory-gb", type=float, default=16.0, help="address-space limit per case, GiB")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "calculator.json"))
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "MODEL", "SYSTEM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, model, system = args.worker
        WORKERS[kind](model, system, args.calls, args.test)
        return
    args.models = [tuple(m.split("=", 1)) for m in args.models]
    if any(len(m) != 2 for m in args.models):
        parser.error("--models takes NAME=DIR pairs")
    if not os.path.isfile(args.test):
        print(f"no test set at {args.test}: force MAE not measured", file=sys.stderr)
        args.test = ""
    rows = [run_row(row, args) for row in rows_to_run(args)]
    if not rows:
        parser.error("nothing to run: give --models, --peers-dir or --random")
    print_tables(rows, args.systems)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "calls": args.calls,
        "test": args.test,
        "systems": SYSTEMS,
        "units": {"call_ms": "ms per ASE get_forces() call", "forces_mae_mev_per_a": "meV/Å"},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
