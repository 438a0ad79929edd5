"""Fine-tuning vs training from scratch: the quickstart model (rMD17 ethanol) fine-tuned on
rMD17 malonaldehyde (the same elements, H, C, O; another molecule), against the same
architecture trained from scratch with the same config and the same step budget.

    .venv/bin/python benchmarks/finetune.py [--molecule malonaldehyde] [--train-frames 200]
        [--steps 2000] [--factors 0.1 1] [--reuse-base] [--json FILE]

1. ``nnpes train configs/quickstart.yaml`` (its own 150 s budget) gives the base model.
2. ``../shared/data/rmd17/<molecule>_train.xyz``: the first N frames train (for ethanol, the N
   after the 100 the quickstart model saw: in-domain fine-tuning), the last 50 validate;
   ``<molecule>_test.xyz`` (1 000 frames) tests.
3. ``nnpes train`` runs with the quickstart config's loss, optimiser and batch size, a fixed
   step budget (no wall-clock budget, so all take exactly the same steps) and validation after
   every epoch: "scratch" (the quickstart model section) and one "fine-tuned" run per
   ``--factors`` value (``init_from`` the quickstart run; learning rate = the config's ×
   ``finetune.learning_rate_factor``, 0.1 by default, 1: the scratch run's rate).

Reported: the validation force MAE/RMSE curves (metrics.csv), the first step at which each
fine-tuned run reaches the scratch run's final validation force MAE, and the test errors.
Acceptance: a fine-tuned run gets there in at most half the steps. Runs are directories under
``benchmarks/results/finetune/``; the JSON (``benchmarks/results/finetune.json``, or
``finetune_<molecule>.json`` for another molecule) holds curves and summary.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import fmt, worker_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RMD17 = ROOT.parent / "shared" / "data" / "rmd17"
BOTNET = ROOT.parent / "shared" / "data" / "botnet_ethanol"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def nnpes_train(config: Path, workdir: Path, log: Path) -> dict:
    """``nnpes train CONFIG --workdir DIR`` in a subprocess; its result.json and wall seconds."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "nnpes", "train", str(config), "--workdir", str(workdir)]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, env=worker_env(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    with open(workdir / "result.json") as f:
        return {**json.load(f), "wall_s": time.perf_counter() - start}


def split(molecule: str, train_frames: int, out: Path) -> tuple[Path, Path, Path]:
    """(train, validation, test) files: the first ``train_frames`` of the molecule's rMD17 train
    file train (for ethanol, those after the 100 the quickstart model was trained on), its last 50
    validate, its test file tests. "methanol": the 300 methanol frames of BOTNet's
    train_eth_meth.xyz (500 K MD, PBE/def2-SVP like rMD17) and the 145 of test_eth_meth.xyz."""
    import ase.io

    if molecule == "methanol":
        frames = [a for a in ase.io.read(BOTNET / "train_eth_meth.xyz", index=":") if len(a) == 6]
        test = out / "methanol_test.xyz"
        ase.io.write(test, [a for a in ase.io.read(BOTNET / "test_eth_meth.xyz", index=":") if len(a) == 6])
    else:
        frames, test = ase.io.read(RMD17 / f"{molecule}_train.xyz", index=":"), RMD17 / f"{molecule}_test.xyz"
    first = 100 if molecule == "ethanol" else 0
    train, val = out / f"{molecule}_train.xyz", out / f"{molecule}_val.xyz"
    ase.io.write(train, frames[first : first + min(train_frames, len(frames) - 50 - first)])
    ase.io.write(val, frames[-50:])
    return train, val, test


def run_config(base: dict, data: dict, steps: int, init_from: Path | None, factor: float = 0.1) -> dict:
    """The quickstart config on the malonaldehyde data with a fixed step budget (and, fine-tuning,
    ``init_from`` in place of the model section, with this ``finetune.learning_rate_factor``)."""
    cfg = {k: v for k, v in base.items() if k not in ("workdir", "data")}
    cfg["data"] = data
    cfg["training"] = {**cfg["training"], "max_steps": steps, "checkpoint_every_steps": steps, "progress": False}
    cfg["training"].pop("time_budget_s", None)
    if init_from is not None:
        cfg.pop("model")
        cfg["init_from"] = str(init_from)
        cfg["finetune"] = {"learning_rate_factor": factor}
    return cfg


def curve(workdir: Path) -> list[dict]:
    """Per epoch: step, validation force MAE and RMSE (meV/Å), energy MAE (meV/atom)."""
    with open(workdir / "metrics.csv") as f:
        return [
            {
                "step": int(r["step"]),
                "forces_mae": float(r["val_forces_mae_mev_per_a"]),
                "forces_rmse": float(r["val_forces_rmse_mev_per_a"]),
                "energy_mae": float(r["val_energy_mae_mev_per_atom"]),
            }
            for r in csv.DictReader(f)
        ]


def zero_shot(model_dir: Path, val: Path) -> dict:
    """The base model's errors on the validation frames before any fine-tuning (forces meV/Å)."""
    import nnpes
    from nnpes.data.io import read_frames
    from nnpes.evaluate import evaluate_frames

    metrics, _ = evaluate_frames(nnpes.load(model_dir), read_frames(str(val)))
    return {"forces_mae": metrics["forces_mae_mev_per_a"], "forces_rmse": metrics["forces_rmse_mev_per_a"]}


def summarise(scratch: list[dict], tuned: list[dict], steps: int) -> dict:
    """When a fine-tuned curve first reaches the scratch run's final validation force MAE."""
    target = scratch[-1]["forces_mae"]
    reached = next((p["step"] for p in tuned if p["forces_mae"] <= target), None)
    return {
        "scratch_final_forces_mae": target,
        "final_forces_mae": tuned[-1]["forces_mae"],
        "steps_to_scratch_final": reached,
        "fraction_of_budget": None if reached is None else reached / steps,
        "accepted": reached is not None and reached <= steps / 2,
    }


def table(results: dict) -> str:
    """Validation curves side by side, test errors and the acceptance line of every fine-tuned run."""
    runs = results["runs"]
    marks = sorted(set.intersection(*({p["step"] for p in run["curve"]} for run in runs.values())))
    marks = [m for i, m in enumerate(marks) if i in (0, 1, 3) or m % 500 == 0 or m == marks[-1]]
    at = {name: {p["step"]: p for p in run["curve"]} for name, run in runs.items()}
    lines = [
        f"validation force MAE / RMSE, meV/Å ({results['molecule']}, 50 frames)",
        f"{'step':>6s} " + " ".join(f"{name:>17s}" for name in runs),
    ]
    for m in marks:
        cells = [f"{fmt(at[n][m]['forces_mae'], '.1f')} / {fmt(at[n][m]['forces_rmse'], '.1f')}" for n in runs]
        lines.append(f"{m:6d} " + " ".join(f"{c:>17s}" for c in cells))
    z = results["zero_shot"]
    lines.append(f"quickstart model before fine-tuning: {z['forces_mae']:.1f} / {z['forces_rmse']:.1f}")
    for name, run in runs.items():
        test = run.get("test") or {}
        lines.append(
            f"{name}: test force MAE {fmt(test.get('forces_mae_mev_per_a'), '.1f')} meV/Å, energy MAE "
            f"{fmt(test.get('energy_mae_mev_per_atom'), '.2f')} meV/atom; {run['wall_s']:.0f} s"
        )
    for name, summary in results["summary"].items():
        reached = summary["steps_to_scratch_final"]
        lines.append(
            f"{name} reaches the scratch run's final {summary['scratch_final_forces_mae']:.1f} meV/Å at step "
            f"{reached or 'never'} of {results['steps']} ({fmt(summary['fraction_of_budget'], '.0%')}): "
            f"{'PASS' if summary['accepted'] else 'FAIL'} (at most half the steps)"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--molecule", default="malonaldehyde", help="rMD17 molecule (or methanol, BOTNet) to fine-tune on")
    p.add_argument("--train-frames", type=int, default=200)
    p.add_argument("--steps", type=int, default=2000, help="step budget of every run")
    p.add_argument(
        "--factors", type=float, nargs="+", default=[0.1, 1.0], help="learning_rate_factor of each fine-tuning"
    )
    p.add_argument("--reuse-base", action="store_true", help="keep an existing quickstart run")
    p.add_argument("--workdir", default=str(RESULTS / "finetune"))
    p.add_argument("--json", help="default: benchmarks/results/finetune.json (finetune_MOLECULE.json)")
    args = p.parse_args()
    suffix = "" if args.molecule == "malonaldehyde" else f"_{args.molecule}"
    args.json = args.json or str(RESULTS / f"finetune{suffix}.json")
    out = Path(args.workdir).resolve()  # the configs it writes name data files: relative paths would resolve twice
    out.mkdir(parents=True, exist_ok=True)
    base_dir = out / "quickstart"
    if not (args.reuse_base and (base_dir / "model" / "potential.json").is_file()):
        shutil.rmtree(base_dir, ignore_errors=True)
        base_result = nnpes_train(QUICKSTART, base_dir, out / "quickstart.log")
    else:
        base_result = json.loads((base_dir / "result.json").read_text())
    runs_dir = out / args.molecule
    runs_dir.mkdir(exist_ok=True)
    train, val, test = split(args.molecule, args.train_frames, runs_dir)
    data = {"train": str(train), "validation": str(val), "test": str(test)}
    base_cfg = yaml.safe_load(QUICKSTART.read_text())
    results = {"molecule": args.molecule, "steps": args.steps, "train_frames": args.train_frames}
    results.update(base=base_result, runs={})
    plan = [("scratch", None, 0.0)] + [(f"fine-tuned, lr x{f:g}", base_dir, f) for f in args.factors]
    for name, init_from, factor in plan:
        slug = name.replace("fine-tuned, lr x", "finetuned_x")
        workdir = runs_dir / slug
        shutil.rmtree(workdir, ignore_errors=True)
        config = runs_dir / f"{slug}.yaml"
        config.write_text(yaml.safe_dump(run_config(base_cfg, data, args.steps, init_from, factor), sort_keys=False))
        result = nnpes_train(config, workdir, runs_dir / f"{slug}.log")
        results["runs"][name] = {"curve": curve(workdir), "test": result["test"], "wall_s": result["wall_s"]}
        print(f"{name}: {result['step']} steps in {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    results["zero_shot"] = zero_shot(base_dir / "model", val)
    scratch = results["runs"]["scratch"]["curve"]
    results["summary"] = {
        name: summarise(scratch, run["curve"], args.steps) for name, run in results["runs"].items() if name != "scratch"
    }
    results["meta"] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "units": {"forces": "meV/Å", "energy": "meV/atom"},
        "command": "python benchmarks/finetune.py " + " ".join(sys.argv[1:]),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"results in {args.json}")


if __name__ == "__main__":
    main()
