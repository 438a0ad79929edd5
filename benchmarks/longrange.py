"""Long-range physics: accuracy with and without the electrostatics term, and its cost.

Accuracy: on the synthetic rigid-ion set (benchmarks/data/rigid_ions: 128-atom periodic Na⁺/Cl⁻
boxes, Gaussian-smeared Coulomb + repulsion, labelled in plain numpy) and on the GFN2-xTB
water-dimer set (benchmarks/data/water_dimers), the same NequIP model (r_c = 5 Å) is trained by
the ordinary training loop twice under the same wall-clock budget (``training.time_budget_s``):
local only, and with ``terms.electrostatics`` (latent charges learned from energies and forces
alone), and for water also with the optional dipole label (``loss.dipole_weight``, GFN2-xTB's
dipole moment). Reported: test energy and force MAE; for rigid ions the R² of the learned charges
against the true ±1 (up to the sign gauge q → −q, which leaves the energy unchanged); for water
the error of the binding curve beyond r_c, E(d) − E(12 Å) for O–O distances d > 5 Å.

Cost: energy + forces (jit, float32, 2 CPU threads as given) of the electrostatic term alone
(Ewald at accuracy 1e-5 and PME at 1e-3, smearing 1 Å, r_c = 5 Å, fixed charges; the
PME-vs-Ewald relative energy error is measured and reported) and of the network alone
(the rigid-ion NequIP model, random weights) on rattled rock-salt NaCl supercells of 192, 1 536
and 12 288 atoms, with the fitted exponent of time ∝ atoms^p.

Usage:
    python benchmarks/longrange.py [--budget-s 300] [--sizes 192 1536 12288] [--skip-training]
        [--json benchmarks/results/longrange.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
MODEL = {
    "family": "nequip",
    "cutoff": 5.0,
    "channels": 16,
    "l_max": 1,
    "parity": False,
    "num_layers": 2,
    "radial_features": [32],
}
ELECTROSTATICS = {"smearing": 1.0, "accuracy": 1e-5}
PME_ACCURACY = 1e-3  # jax-pme's 4-point Lagrange PME needs a 0.1 Å mesh for 1e-5 (see nnpes.electrostatics.pme_spacing)
DATASETS = {  # water: the tail beyond r_c is a few meV per dimer, so energies weigh more
    "rigid_ions": {"batch_size": 2, "learning_rate": 0.005, "energy_weight": 10.0, "variants": ("local", "charges")},
    "water_dimers": {
        "batch_size": 8,
        "learning_rate": 0.005,
        "energy_weight": 100.0,
        "variants": ("local", "charges", "charges+dipole"),
    },
}


def train_config(dataset: str, variant: str, budget_s: float, workdir: str) -> dict:
    folder = os.path.join(DATA, dataset)
    settings = DATASETS[dataset]
    cfg = {
        "workdir": workdir,
        "seed": 0,
        "data": {
            "train": os.path.join(folder, "train.xyz"),
            "test": os.path.join(folder, "test.xyz"),
            "validation_fraction": 0.1,
            "energy_key": "REF_energy",
            "forces_key": "REF_forces",
            "stress_key": "REF_stress",
        },
        "model": dict(MODEL),
        "loss": {"energy_weight": settings["energy_weight"], "forces_weight": 1.0},
        "optimizer": {"learning_rate": settings["learning_rate"], "schedule": "cosine", "warmup_steps": 20},
        "training": {
            "batch_size": settings["batch_size"],
            "time_budget_s": budget_s,
            "max_steps": 10**7,
            "max_epochs": 10**6,  # the budget stops the run
            "checkpoint_every_steps": 100000,
            "log_every_s": 60.0,
        },
    }
    if variant != "local":
        cfg["terms"] = {"electrostatics": dict(ELECTROSTATICS)}
    if variant == "charges+dipole":  # the optional label: GFN2-xTB's dipole moment
        cfg["data"]["dipole_key"] = "REF_dipole"
        cfg["loss"]["dipole_weight"] = 1.0
    return cfg


def charge_r2(frames, true_charges, predictions) -> dict:
    """R² of learned vs true charges, with the sign gauge chosen to fit best, and the learned
    mean charge per element."""
    true = np.concatenate(true_charges)
    learned = np.concatenate([p["charges"] for p in predictions])
    numbers = np.concatenate([f.numbers for f in frames])
    ss = np.sum((true - true.mean()) ** 2)
    r2 = max(1 - np.sum((true - sign * learned) ** 2) / ss for sign in (1.0, -1.0))
    return {
        "charge_r2": float(r2),
        "charge_by_element": {int(z): float(learned[numbers == z].mean()) for z in np.unique(numbers)},
    }


def binding_curve_error(potential) -> dict:
    """MAE (meV) of E(d) − E(d_max) along the water-dimer binding curve for O–O d > r_c, and the
    reference curve's own size there."""
    import ase.io

    from nnpes.data.io import read_frames
    from nnpes.evaluate import evaluate_frames

    path = os.path.join(DATA, "water_dimers", "binding_curve.xyz")
    frames = read_frames(path, energy_key="REF_energy", forces_key="REF_forces")
    distance = np.array([a.info["REF_d_OO"] for a in ase.io.read(path, ":")])
    _, predictions = evaluate_frames(potential, frames)
    pred = np.array([p["energy"] for p in predictions])
    ref = np.array([f.energy for f in frames])
    far = np.argmax(distance)
    beyond = distance > potential.cutoff
    error = (pred - pred[far]) - (ref - ref[far])
    return {
        "curve_mae_beyond_rc_meV": float(1e3 * np.mean(np.abs(error[beyond]))),
        "curve_reference_tail_meV": float(1e3 * np.mean(np.abs(ref[beyond] - ref[far]))),
        "curve_points_beyond_rc": int(beyond.sum()),
    }


def accuracy_case(dataset: str, variant: str, budget_s: float, workdir: str) -> dict:
    import ase.io

    import nnpes
    from nnpes.data.io import read_frames
    from nnpes.evaluate import error_metrics, evaluate_frames
    from nnpes.train import train
    from nnpes.train.config import load_config

    cfg = load_config(raw=train_config(dataset, variant, budget_s, workdir))
    result = train(cfg)
    potential = nnpes.load(result.model_dir)
    test_path = os.path.join(DATA, dataset, "test.xyz")
    frames = read_frames(test_path, energy_key="REF_energy", forces_key="REF_forces")
    _, predictions = evaluate_frames(potential, frames)
    metrics = error_metrics(frames, predictions)
    row = {
        "dataset": dataset,
        "variant": variant,
        "steps": result.step,
        "elapsed_s": round(result.elapsed_s, 1),
        "energy_mae_meV_per_atom": metrics["energy_mae_mev_per_atom"],
        "forces_mae_meV_per_A": metrics["forces_mae_mev_per_a"],
    }
    if variant != "local":
        true = [np.asarray(a.arrays["REF_charges"], float) for a in ase.io.read(test_path, ":")]
        row.update(charge_r2(frames, true, predictions))
    if dataset == "water_dimers":
        row.update(binding_curve_error(potential))
    return row


def rocksalt(atoms_wanted: int, seed: int = 0):
    """A rattled rock-salt NaCl supercell (a = 5.64 Å) of 8·k·l·m ≈ atoms_wanted atoms."""
    import ase.build

    cells = max(1, atoms_wanted // 8)
    shapes = [
        (a, b, cells // (a * b)) for a in range(1, cells + 1) for b in range(a, cells + 1) if cells % (a * b) == 0
    ]
    reps = min(shapes, key=lambda r: (max(r) / min(r), abs(np.prod(r) - cells)))  # the most cubic exact box
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(reps)
    atoms.rattle(0.1, seed=seed)
    return atoms


def time_case(atoms, repeats: int) -> dict:
    """ms per energy + forces call: Ewald term, PME term, network alone (float32)."""
    import jax
    import jax.numpy as jnp
    from _harness import median_ms, time_energy_forces

    import nnpes
    from nnpes.data.graph import batch_graphs, frame_to_graph
    from nnpes.data.io import frame_from_atoms
    from nnpes.electrostatics import Electrostatics, coulomb_energy_function
    from nnpes.models import NequIP

    hyper = {k: (tuple(v) if isinstance(v, list) else v) for k, v in MODEL.items() if k not in ("family", "cutoff")}
    network = nnpes.Potential.create(NequIP(**hyper), [11, 17], cutoff=5.0, avg_num_neighbors=30.0)
    graph = frame_to_graph(frame_from_atoms(atoms), 5.0, network.atomic_numbers)
    n = len(atoms)
    batch = batch_graphs([graph], n + 1, len(graph.senders) + 2, 2)
    out = {"atoms": n, "edges": int(len(graph.senders))}
    _, timing = time_energy_forces(network, batch, repeats)
    out["network_ms"] = timing["step_ms"]
    charges = jnp.asarray(np.where(atoms.numbers == 11, 1.0, -1.0), jnp.float32)
    positions = jnp.asarray(atoms.positions, jnp.float32)
    no_strain = jnp.zeros((3, 3), jnp.float32)
    for method in ("ewald", "pme"):
        settings = {**ELECTROSTATICS, "accuracy": PME_ACCURACY} if method == "pme" else ELECTROSTATICS
        energy = coulomb_energy_function(atoms.positions, atoms.cell.array, real_cutoff=5.0, method=method, **settings)
        fn = jax.jit(jax.value_and_grad(lambda pos, energy=energy: energy(pos, charges, no_strain)))
        start = time.perf_counter()
        jax.block_until_ready(fn(positions))
        out[f"{method}_compile_s"] = round(time.perf_counter() - start, 2)
        out[f"{method}_ms"], _ = median_ms(lambda fn=fn: jax.block_until_ready(fn(positions)), repeats)
        term = Electrostatics(method=method, **settings).for_cells(atoms.cell.array[None], 5.0)
        out[f"{method}_grid"] = list(term.grid)
        out[f"{method}_energy_eV"] = float(fn(positions)[0])
    out["pme_relative_error"] = abs(out["pme_energy_eV"] - out["ewald_energy_eV"]) / abs(out["ewald_energy_eV"])
    return out


def exponent(sizes, times) -> float | None:
    ok = [(s, t) for s, t in zip(sizes, times) if t]
    if len(ok) < 2:
        return None
    x, y = np.log([s for s, _ in ok]), np.log([t for _, t in ok])
    return float(np.polyfit(x, y, 1)[0])


def markdown(accuracy: list[dict], timing: list[dict]) -> str:
    lines = []
    if accuracy:
        lines += [
            "| data | model | steps | E MAE (meV/atom) | F MAE (meV/Å) | charge R² | curve beyond r_c (meV) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in accuracy:
            r2 = f"{r['charge_r2']:.3f}" if "charge_r2" in r else "–"
            curve = f"{r['curve_mae_beyond_rc_meV']:.2f}" if "curve_mae_beyond_rc_meV" in r else "–"
            lines.append(
                f"| {r['dataset']} | {r['variant']} | {r['steps']} | "
                f"{r['energy_mae_meV_per_atom']:.3f} | {r['forces_mae_meV_per_A']:.1f} | {r2} | {curve} |"
            )
    if timing:
        lines += [
            "",
            "| atoms | network (ms) | Ewald (ms) | PME (ms) | Ewald k range | PME mesh | PME vs Ewald ΔE/E |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in timing:
            lines.append(
                f"| {t['atoms']} | {t['network_ms']:.1f} | {t['ewald_ms']:.1f} | {t['pme_ms']:.1f} | "
                f"{tuple(t['ewald_grid'])} | {tuple(t['pme_grid'])} | {t['pme_relative_error']:.1e} |"
            )
        sizes = [t["atoms"] for t in timing]
        fits = {k: exponent(sizes, [t[f"{k}_ms"] for t in timing]) for k in ("network", "ewald", "pme")}
        lines.append("")
        lines.append("Fitted exponent p of time ∝ atoms^p: " + ", ".join(f"{k} {v:.2f}" for k, v in fits.items() if v))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=300.0, help="training wall-clock budget per model, s")
    parser.add_argument("--sizes", type=int, nargs="*", default=[192, 1536, 12288])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "longrange.json"))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    workdir = args.workdir or tempfile.mkdtemp(prefix="nnpes-longrange-")
    accuracy = []
    if not args.skip_training:
        for dataset in args.datasets:
            for variant in DATASETS[dataset]["variants"]:
                run = os.path.join(workdir, f"{dataset}-{variant}")
                accuracy.append(accuracy_case(dataset, variant, args.budget_s, run))
                print(json.dumps(accuracy[-1]), flush=True)
    timing = []
    for size in args.sizes:
        timing.append(time_case(rocksalt(size), args.repeats))
        print(json.dumps(timing[-1]), flush=True)
    table = markdown(accuracy, timing)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(
            {"machine": platform.platform(), "cpus": os.cpu_count(), "budget_s": args.budget_s,
             "accuracy": accuracy, "timing": timing, "markdown": table},
            f, indent=1,
        )  # fmt: skip


if __name__ == "__main__":
    main()
