"""MD benchmark: NVE energy drift and speed of nnpes with jax-md, next to jax-md's own NequIP.

For ethanol (rMD17, 9 atoms, free space) and the 192-atom periodic water box it runs NVE with
an nnpes model (a trained model directory via --model, else a random NequIP of the size below)
through :func:`nnpes.md.run_md`, and reports the drift (slope of E_tot/N against time,
meV/atom/ps), steps/s and ns/day; then it times jax-md's ``energy.nequip_neighbor_list`` with a
comparable configuration on the same structure (random weights, its own neighbour list,
``simulate.nve``). Prints a table and writes JSON; each system's row also holds the NVE time
series of the timed run (``thermo``: time_fs from its start, etot_ev, epot_ev, ekin_ev, every
--every steps, default ``max(1, steps // 100)``: the steps run on the device between two host
round trips), which ``benchmarks/run_all.py`` plots as E_tot(t).

    python benchmarks/md.py [--model DIR] [--steps 1000] [--every N] [--dt 0.5] [--dtype float64] [--json md.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import jax

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ci"
SYSTEMS = {"ethanol": ("rmd17_ethanol_train.xyz", "free"), "water192": ("water_10.xyz", "periodic")}
CHANNELS, L_MAX, LAYERS, CUTOFF = 16, 1, 2, 5.0


def nnpes_model(numbers, model_dir):
    import nnpes

    if model_dir:
        potential = nnpes.load(model_dir)
        if set(numbers) <= set(potential.atomic_numbers):
            return potential, "trained"
    model = nnpes.models.NequIP(channels=CHANNELS, l_max=L_MAX, num_layers=LAYERS, parity=False)
    return nnpes.Potential.create(
        model, sorted(set(numbers)), CUTOFF, seed=0, scale=0.05, avg_num_neighbors=20.0
    ), "random"


def jax_md_nequip_steps_per_s(atoms, kind, steps, dt_fs, dtype):
    """Steps/s of jax-md's own NequIP (random weights) in NVE on the same structure."""
    import jax.numpy as jnp
    import numpy as np
    from jax_md import energy, simulate, space
    from jax_md._nn import nequip

    from nnpes.md.units import FS, KB

    cfg = nequip.default_config()
    cfg.graph_net_steps = LAYERS
    cfg.hidden_irreps = f"{CHANNELS}x0e + {CHANNELS}x1o"
    cfg.sh_irreps = "1x0e + 1x1o"
    cfg.r_max = CUTOFF
    cfg.n_neighbors = 20.0
    cfg.shift, cfg.scale = 0.0, 0.05
    if kind == "periodic":
        side = float(atoms.cell.lengths()[0])
        displacement, shift = space.periodic(side)  # real coordinates: see nnpes.md.jaxmd_energy on fractional lists
        box, R = side, jnp.asarray(np.mod(atoms.positions, side), dtype)
        nl_kwargs = {"disable_cell_list": True}  # its cell list keeps an array in a static field (eval_shape fails)
    else:
        displacement, shift = space.free()
        box, R = 1000.0, jnp.asarray(atoms.positions, dtype)
        nl_kwargs = {"disable_cell_list": True}
    one_hot = jax.nn.one_hot(jnp.asarray(atoms.numbers), cfg.n_elements, dtype=dtype)
    neighbor_fn, init_fn, energy_fn = energy.nequip_neighbor_list(
        displacement, box, cfg, atoms=one_hot, dr_threshold=1.0, capacity_multiplier=1.5, **nl_kwargs
    )
    nbrs = neighbor_fn.allocate(R)
    params = init_fn(jax.random.PRNGKey(0), R, nbrs)
    params = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    init, apply = simulate.nve(lambda R, **kw: energy_fn(params, R, **kw), shift, dt_fs * FS)
    state = init(jax.random.PRNGKey(1), R, 300 * KB, mass=jnp.asarray(atoms.get_masses(), dtype), neighbor=nbrs)

    @jax.jit
    def chunk(state, nbrs):
        def body(_, carry):
            s, n = carry
            n = n.update(s.position)
            return apply(s, neighbor=n), n

        return jax.lax.fori_loop(0, steps, body, (state, nbrs))

    jax.block_until_ready(chunk(state, nbrs))  # compile
    t0 = time.perf_counter()
    state, nbrs = jax.block_until_ready(chunk(state, nbrs))
    seconds = time.perf_counter() - t0
    if nbrs.did_buffer_overflow:
        print("  (jax-md NequIP: neighbour list overflowed; timing is indicative only)", file=sys.stderr)
    return steps / seconds


def thermo(result) -> dict:
    """The run's recorded energies: time_fs (from the run's first frame), etot_ev, epot_ev, ekin_ev."""
    return {
        "time_fs": [float(t - result.time_fs[0]) for t in result.time_fs],
        "etot_ev": [float(e) for e in result.etot],
        "epot_ev": [float(e) for e in result.epot],
        "ekin_ev": [float(e) for e in result.ekin],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="trained nnpes model directory for every system (random NequIP when absent)")
    parser.add_argument(
        "--system-model",
        action="append",
        default=[],
        metavar="SYSTEM=DIR",
        help="model directory for one system (e.g. water192=runs/water/model); wins over --model",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, help="record (and return to the host) every N steps; default steps // 100")
    parser.add_argument("--dt", type=float, default=0.5, help="fs")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--systems", default="ethanol,water192")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "md.json"))
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import ase.io
    import jax.numpy as jnp

    from nnpes.md import MDOptions, run, simulation

    per_system = dict(item.split("=", 1) for item in args.system_model)
    rows = []
    for name in args.systems.split(","):
        filename, kind = SYSTEMS[name]
        atoms = ase.io.read(DATA / filename, 0)
        potential, origin = nnpes_model(atoms.numbers, per_system.get(name, args.model))
        options = MDOptions(
            ensemble="nve",
            dt_fs=args.dt,
            temperature_k=300.0,
            dtype=args.dtype,
            every=args.every or max(1, args.steps // 100),
        )
        sim = simulation(potential, atoms, options)
        # compile outside the timing: one chunk of the timed run's length (nnpes.md.run's chunks are
        # max(every, 200) steps, a shorter run one chunk of its own length)
        run(sim, min(args.steps, max(options.every, 200)))
        result = run(sim, args.steps)
        row = {
            "system": name,
            "atoms": len(atoms),
            "model": origin,
            "backend": result.backend,
            "dtype": args.dtype,
            "dt_fs": args.dt,
            "steps": args.steps,
            "every": options.every,
            "drift_mev_per_atom_per_ps": result.drift_mev_per_atom_per_ps(),
            "steps_per_s": result.steps_per_s,
            "ns_per_day": result.ns_per_day,
            "neighbor_reallocations": result.neighbor_reallocations,
            "compilations_in_timed_run": result.compilations,
            "jax_md_nequip_steps_per_s": jax_md_nequip_steps_per_s(
                atoms, kind, args.steps, args.dt, getattr(jnp, args.dtype)
            ),
            "thermo": thermo(result),
        }
        rows.append(row)
        print(f"done {name}", file=sys.stderr)

    header = (
        f"{'system':10s} {'atoms':>5s} {'model':>7s} {'drift meV/atom/ps':>18s} {'steps/s':>9s} "
        f"{'ns/day':>8s} {'jax-md NequIP steps/s':>22s}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['system']:10s} {r['atoms']:5d} {r['model']:>7s} {r['drift_mev_per_atom_per_ps']:18.5f} "
            f"{r['steps_per_s']:9.1f} {r['ns_per_day']:8.3f} {r['jax_md_nequip_steps_per_s']:22.1f}"
        )
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "nnpes_model": {"channels": CHANNELS, "l_max": L_MAX, "num_layers": LAYERS, "cutoff_a": CUTOFF},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
