"""Model families side by side: accuracy after the same wall-clock training budget, and speed.

Training: every family in ``nnpes.models.FAMILIES`` is trained by the ordinary training loop on
the same base config (default: configs/quickstart.yaml, the 100 shipped rMD17 ethanol frames)
with ``training.time_budget_s = --budget-s`` (the budget counts data loading and compilation),
then tested on --test (default: rMD17 ethanol test split of shared/data, else the 100 test
frames shipped in nnpes). The base config's model is used for its own family; every other
family takes its ``model`` section and ``optimizer.learning_rate`` from its shipped config
(``FAMILY_CONFIGS``); data, loss, schedule, batch size and budgets stay the base config's.

Speed: the energy + forces call (``nnpes.physics.evaluate``, no stress, float32, prebuilt
padded graph; compile time = lower + compile) of each trained model on periodic liquid-water
boxes of --atoms (default ~256 and ~2048 atoms): round(N/3) rigid H2O molecules (ase
``molecule("H2O")``) placed at random positions and orientations in a cubic box at 0.997 g/cm³,
every inter-molecular atom pair ≥ 1.6 Å and every O–O pair ≥ 2.5 Å apart (random sequential
addition, seed 0). The models were trained on H, C, O, so H2O is inside their species table.
On the same boxes, in the same run: jax-md's own ``energy.behler_parrinello_neighbor_list``
(random weights; its default symmetry functions: 8 radial and 22 angular per species pair;
cutoff and MLP widths those of the nnpes Behler–Parrinello model), timed as
``jit(value_and_grad(energy))`` on a prebuilt neighbour list (no skin: dr_threshold 0, so it
holds the same pairs as nnpes' list; default capacity multiplier 1.25), in its Dense format and
in its default Sparse format (whose angular sum runs over all pairs of *edges*: memory ∝ edges²).

Every training and every timed case runs in its own subprocess under a timeout and an
address-space limit (benchmarks/_harness.py); out-of-memory is recorded as "oom".

Usage:
    python benchmarks/families.py [--budget-s 300] [--config configs/quickstart.yaml] [--test PATH]
        [--atoms 256 2048] [--json benchmarks/results/families.json] [--workdir DIR --reuse]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time

from _harness import emit, fmt, median_ms, peak_rss_mb, run_limited, time_energy_forces, worker_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TEST = os.path.join(os.path.dirname(ROOT), "shared", "data", "rmd17", "ethanol_test.xyz")
# model section + learning rate of a family that is not the base config's own
FAMILY_CONFIGS = {
    "nequip": "configs/quickstart.yaml",
    "behler_parrinello": "configs/rmd17_ethanol_behler_parrinello.yaml",
    "deepsets": "configs/rmd17_ethanol_deepsets.yaml",
}
JAXMD_CASES = ("jax-md BP dense", "jax-md BP sparse")
WATER_DENSITY_G_CM3 = 0.997
MIN_INTER_A, MIN_OO_A = 1.6, 2.5


# -- structures ----------------------------------------------------------------------------------
def water_box(n_atoms: int, seed: int = 0):
    """Periodic cubic box of round(n_atoms/3) randomly placed, randomly oriented rigid H2O
    molecules at liquid density (see the module docstring). Returns ase.Atoms."""
    import ase
    import ase.build
    import numpy as np

    n_mol = max(1, round(n_atoms / 3))
    volume = n_mol * 18.015 / (WATER_DENSITY_G_CM3 * 0.602214076)  # Å³
    side = volume ** (1 / 3)
    h2o = ase.build.molecule("H2O")
    local = h2o.positions - h2o.positions[0]  # O at the origin
    rng = np.random.default_rng(seed)
    placed = np.zeros((0, 3))
    for _ in range(n_mol):
        for _attempt in range(100000):
            q, r = np.linalg.qr(rng.normal(size=(3, 3)))
            rotation = q * np.sign(np.diag(r))
            trial = rng.uniform(0, side, 3) + local @ rotation.T
            if len(placed) == 0:
                break
            d = trial[:, None, :] - placed[None, :, :]
            d = np.linalg.norm(d - side * np.round(d / side), axis=-1)  # minimum image
            if d.min() >= MIN_INTER_A and d[0, ::3].min() >= MIN_OO_A:
                break
        else:
            raise RuntimeError(f"could not place molecule {len(placed) // 3} of {n_mol}")
        placed = np.concatenate([placed, trial])
    atoms = ase.Atoms("OH2" * n_mol, positions=placed, cell=[side] * 3, pbc=True)
    atoms.wrap()
    return atoms


# -- workers ---------------------------------------------------------------------------------------
def family_overrides(base_config: str, family: str) -> list[str]:
    """``key=value`` overrides that turn the base config into a run of this family."""
    import yaml

    with open(base_config) as f:
        base = yaml.safe_load(f)
    if base.get("model", {}).get("family", "nequip") == family:
        return []
    with open(os.path.join(ROOT, FAMILY_CONFIGS[family])) as f:
        own = yaml.safe_load(f)
    out = ["model=" + json.dumps(own["model"])]  # JSON is YAML: the override replaces the section
    if "learning_rate" in own.get("optimizer", {}):
        out.append(f"optimizer.learning_rate={own['optimizer']['learning_rate']}")
    return out


def num_params(tree) -> int:
    import jax
    import numpy as np

    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def train_worker(family: str, args) -> dict:
    import nnpes
    from nnpes.train import load_config, train

    overrides = family_overrides(args.config, family) + [
        f"training.time_budget_s={args.budget_s}",
        "training.progress=false",
        f"data.test={args.test}",
    ]
    cfg = load_config(args.config, overrides, workdir=os.path.join(args.workdir, family))
    result = train(cfg, args.config)
    potential = nnpes.load(result.model_dir)
    test = result.test or {}
    return {
        "family": family,
        "overrides": overrides,
        "params": num_params(potential.params),
        "steps": result.step,
        "stop_reason": result.stop_reason,
        "elapsed_s": result.elapsed_s,
        "test_energy_mae_mev": test.get("energy_mae_mev"),
        "test_energy_mae_mev_per_atom": test.get("energy_mae_mev_per_atom"),
        "test_forces_mae_mev_per_a": test.get("forces_mae_mev_per_a"),
        "test": test,
        "best_validation": result.best_validation,
        "model_dir": result.model_dir,
    }


def time_nnpes(family: str, n_atoms: int, args) -> dict:
    import jax
    import numpy as np

    import nnpes
    from nnpes.data.graph import batch_graphs, frame_to_graph
    from nnpes.data.io import frame_from_atoms

    atoms = water_box(n_atoms)
    potential = nnpes.load(os.path.join(args.workdir, family, "model")).astype(np.float32)
    frame = frame_from_atoms(atoms, source="water box")
    start = time.perf_counter()
    graph = frame_to_graph(frame, potential.cutoff, potential.atomic_numbers)
    batch = jax.device_put(batch_graphs([graph], dtype=np.float32))
    neighbor_ms = 1e3 * (time.perf_counter() - start)

    out, timing = time_energy_forces(potential, batch, args.repeats)
    forces = np.asarray(out["forces"][: len(atoms)])
    return {
        "atoms": len(atoms),
        "edges": int(graph.n_edge),
        "neighbor_ms": neighbor_ms,
        **timing,
        "finite": bool(np.isfinite(forces).all() and np.isfinite(float(out["energy"][0]))),
    }


def time_jaxmd_bp(case: str, n_atoms: int, args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax_md import energy, partition, space

    atoms = water_box(n_atoms)
    side = float(atoms.cell[0, 0])
    positions = jnp.asarray(atoms.positions, jnp.float32)
    species = jnp.asarray(np.unique(atoms.numbers, return_inverse=True)[1].reshape(-1), jnp.int32)
    displacement, _ = space.periodic(side)
    bp = bp_hyperparameters(args)
    neighbor_fn, energy_fn = energy.behler_parrinello_neighbor_list(
        displacement,
        side,
        key=jax.random.PRNGKey(0),
        species=species,
        mlp_sizes=bp["hidden"],
        sym_kwargs={"cutoff_distance": bp["cutoff"]},
        dr_threshold=0.0,
        format=partition.Dense if case.endswith("dense") else partition.Sparse,
    )

    start = time.perf_counter()
    nbrs = neighbor_fn.allocate(positions)
    jax.block_until_ready(nbrs.idx)
    neighbor_ms = 1e3 * (time.perf_counter() - start)
    graphdef, params = nnx.split(energy_fn.model)

    def total_energy(params, R, nbrs):
        return nnx.merge(graphdef, params)(R, nbrs)

    value_and_grad = jax.jit(jax.value_and_grad(total_energy, argnums=1))
    start = time.perf_counter()
    compiled = value_and_grad.lower(params, positions, nbrs).compile()
    compile_s = time.perf_counter() - start
    e, grad = jax.block_until_ready(compiled(params, positions, nbrs))
    step_ms, times = median_ms(lambda: jax.block_until_ready(compiled(params, positions, nbrs)), args.repeats)
    idx = np.asarray(nbrs.idx)  # Dense: (N, K) neighbours of each atom; Sparse: (2, capacity)
    real = idx < len(atoms) if case.endswith("dense") else idx[0] < len(atoms)
    return {
        "atoms": len(atoms),
        "edges": int(real.sum()),
        "padded_edges": int(real.size),
        "neighbor_ms": neighbor_ms,
        "compile_s": compile_s,
        "step_ms": step_ms,
        "step_ms_all": times,
        "params": num_params(params),
        "overflow": bool(nbrs.did_buffer_overflow),
        "finite": bool(np.isfinite(float(e)) and np.isfinite(np.asarray(grad)).all()),
    }


def bp_hyperparameters(args) -> dict:
    """Cutoff and hidden widths of the Behler–Parrinello model the run trains."""
    from nnpes.train import load_config

    cfg = load_config(args.config, family_overrides(args.config, "behler_parrinello"))
    return {"cutoff": cfg.model.cutoff, "hidden": tuple(cfg.model.hidden_features)}


def worker(kind: str, name: str, n_atoms: int, args) -> None:
    if kind == "train":
        result = train_worker(name, args)
    elif name in JAXMD_CASES:
        result = time_jaxmd_bp(name, n_atoms, args)
    else:
        result = time_nnpes(name, n_atoms, args)
    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)


# -- driver ----------------------------------------------------------------------------------------
def run(kind: str, name: str, n_atoms: int, args, timeout_s: float) -> dict:
    cmd = worker_command(
        __file__,
        kind,
        name,
        str(n_atoms),
        "--config",
        args.config,
        "--test",
        args.test,
        "--workdir",
        args.workdir,
        "--budget-s",
        str(args.budget_s),
        "--repeats",
        str(args.repeats),
    )
    return run_limited(cmd, timeout_s, args.memory_gb)


def table(rows: list[dict], atoms: list[int], atoms_used: dict) -> str:
    """One line per family: parameters, training steps, test MAEs, ms per call and compile s per size."""
    speed_heads = "".join(f" {f'ms@{atoms_used[n] or n}':>9} {f'comp s@{atoms_used[n] or n}':>11}" for n in atoms)
    head = (
        f"{'family':<18} {'params':>8} {'steps':>6} {'stop':>11} {'E MAE meV':>10} {'F MAE meV/A':>11}"
        + speed_heads
        + "  status"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        train = r.get("train", {})
        speed = "".join(
            f" {fmt(r['speed'][n].get('step_ms'), '.1f'):>9} {fmt(r['speed'][n].get('compile_s'), '.1f'):>11}"
            for n in atoms
        )
        notes = [f"train {train['status']}"] if train and train["status"] != "ok" else []
        notes += [f"{n}: {r['speed'][n]['status']}" for n in atoms if r["speed"][n]["status"] != "ok"]
        lines.append(
            f"{r['family']:<18} {fmt(r.get('params'), 'd'):>8} {fmt(train.get('steps'), 'd'):>6} "
            f"{train.get('stop_reason', '-'):>11} "
            f"{fmt(train.get('test_energy_mae_mev'), '.1f'):>10} "
            f"{fmt(train.get('test_forces_mae_mev_per_a'), '.1f'):>11}{speed}  {'; '.join(notes) or 'ok'}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    from nnpes.models import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=300.0, help="wall-clock training budget per family, s")
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "quickstart.yaml"), help="base config")
    default_test = (
        SHARED_TEST if os.path.isfile(SHARED_TEST) else os.path.join(ROOT, "nnpes", "data", "files", "ethanol_test.xyz")
    )
    parser.add_argument("--test", default=default_test, help="test frames (extended XYZ)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--atoms", type=int, nargs="+", default=[256, 2048], help="water box sizes (~atoms)")
    parser.add_argument("--no-jaxmd", action="store_true", help="skip jax-md's Behler–Parrinello")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case after one warm-up")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per timed case")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit per subprocess, GiB")
    parser.add_argument("--workdir", help="training runs go to WORKDIR/FAMILY (default: a new temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished trainings found in --workdir")
    default_json = os.path.join(ROOT, "benchmarks", "results", "families.json")
    parser.add_argument("--json", default=default_json, help="where to write the results")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "NAME", "ATOMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.config, args.test = os.path.abspath(args.config), os.path.abspath(args.test)

    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), args)
        return
    args.workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="nnpes_families_"))

    import jax

    load_before = os.getloadavg()
    rows = []
    for family in args.families:
        saved = os.path.join(args.workdir, family, "train.json")
        if args.reuse and os.path.isfile(saved):
            with open(saved) as f:
                train = json.load(f)
        else:
            if os.path.exists(os.path.join(args.workdir, family)):
                parser.error(
                    f"{os.path.join(args.workdir, family)} exists (a run there would resume): "
                    "pass --reuse or another --workdir"
                )
            print(f"training {family} for {args.budget_s:g} s ...", file=sys.stderr, flush=True)
            train = run("train", family, 0, args, timeout_s=args.budget_s + args.timeout)
            if train["status"] == "ok":
                with open(saved, "w") as f:
                    json.dump(train, f, indent=2)
        rows.append({"family": family, "params": train.get("params"), "train": train, "speed": {}})
    if not args.no_jaxmd:
        rows += [{"family": case, "speed": {}} for case in JAXMD_CASES]

    for n_atoms in args.atoms:
        for r in rows:
            if "train" in r and r["train"]["status"] != "ok":
                r["speed"][n_atoms] = {"status": "skipped (no trained model)"}
                continue
            print(f"timing {r['family']} on ~{n_atoms} atoms ...", file=sys.stderr, flush=True)
            r["speed"][n_atoms] = run("time", r["family"], n_atoms, args, timeout_s=args.timeout)
            if r["family"] in JAXMD_CASES and r["speed"][n_atoms].get("params") is not None:
                r["params"] = r["speed"][n_atoms]["params"]

    atoms_used = {n: next((r["speed"][n]["atoms"] for r in rows if "atoms" in r["speed"][n]), None) for n in args.atoms}
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "budget_s": args.budget_s,
        "base_config": args.config,
        "test": args.test,
        "workdir": args.workdir,
        "family_configs": FAMILY_CONFIGS,
        "dtype": "float32",
        "structures": {
            str(n): f"{atoms_used[n]} atoms: water box, {math.floor((atoms_used[n] or 0) / 3)} rigid H2O "
            f"at random positions/orientations, {WATER_DENSITY_G_CM3} g/cm3, seed 0"
            for n in args.atoms
        },
        "timed_call": "nnpes: physics.evaluate(compute_stress=False) on a prebuilt padded graph; "
        "jax-md: jit(value_and_grad(energy)) on a prebuilt neighbour list (Dense or Sparse format)",
        "jaxmd_bp": "energy.behler_parrinello_neighbor_list, random weights, default symmetry functions "
        "(8 radial, 22 angular per species pair), one MLP shared by all species",
        "memory_limit_gib": args.memory_gb,
        "repeats": args.repeats,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)
    print(
        f"Families after {args.budget_s:g} s of training each ({os.path.relpath(args.config, ROOT)}; "
        f"test: {args.test}); energy+forces speed on water boxes of "
        + ", ".join(str(atoms_used[n]) for n in args.atoms)
        + " atoms, float32, "
        + jax.default_backend()
    )
    print(table(rows, args.atoms, atoms_used))
    print(
        f"\nload average before/after: {load_before[0]:.2f} / {meta['load_average_after'][0]:.2f} "
        f"on {os.cpu_count()} CPUs; trainings in {args.workdir}; JSON: {args.json}"
    )


if __name__ == "__main__":
    main()
