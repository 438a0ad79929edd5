"""Accuracy at equal wall-clock budget: train the rMD17 ethanol and aspirin configs, report test MAE.

    .venv/bin/python benchmarks/accuracy.py --budget-s 1200 [--molecules ethanol aspirin] [--json FILE]

Each molecule trains with ``configs/rmd17_<mol>.yaml`` (950 train + 50 validation frames of the
split-01 train file, tested on its 1 000 test frames) in a subprocess, the budget (compile
included) set through ``training.time_budget_s``. For scale, the table also prints the
published NequIP results on the same rMD17 splits (energy MAE per molecule; trained for days on
a GPU, not run here). Side-by-side peers at equal budget on this machine are in the README's
quick-start table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = {  # (energy MAE meV per molecule, force MAE meV/Å): NequIP, Batzner et al. 2022, rMD17, 950 + 50 frames
    "ethanol": {"NequIP (published, GPU, days)": (0.4, 2.8)},
    "aspirin": {"NequIP (published, GPU, days)": (2.3, 8.2)},
}


def run(molecule: str, budget_s: float, workdir: str) -> dict:
    config = os.path.join(ROOT, "configs", f"rmd17_{molecule}.yaml")
    cmd = [
        sys.executable,
        "-m",
        "nnpes",
        "train",
        config,
        "--workdir",
        workdir,
        f"training.time_budget_s={budget_s}",
        "training.progress=false",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"molecule": molecule, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    with open(os.path.join(workdir, "result.json")) as f:
        result = json.load(f)
    test = result["test"]
    return {
        "molecule": molecule,
        "budget_s": budget_s,
        "wall_s": round(wall, 1),
        "steps": result["step"],
        "energy_mae_mev": test["energy_mae_mev"],
        "forces_mae_mev_per_a": test["forces_mae_mev_per_a"],
        "energy_mae_mev_per_atom": test["energy_mae_mev_per_atom"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=1200.0, help="wall-clock budget per molecule, s")
    p.add_argument("--molecules", nargs="+", default=["ethanol", "aspirin"])
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "accuracy.json"))
    args = p.parse_args()
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    rows = []
    for mol in args.molecules:
        workdir = os.path.join(ROOT, "benchmarks", "results", f"rmd17_{mol}_{int(args.budget_s)}s")
        rows.append(run(mol, args.budget_s, workdir))
    print(f"{'molecule':10s} {'model':42s} {'E MAE meV':>10s} {'F MAE meV/Å':>12s}")
    for r in rows:
        if "error" in r:
            print(f"{r['molecule']:10s} nnpes: {r['error']}")
            continue
        print(
            f"{r['molecule']:10s} {'nnpes NequIP (' + str(int(r['budget_s'])) + ' s, this machine)':42s} "
            f"{r['energy_mae_mev']:10.2f} {r['forces_mae_mev_per_a']:12.2f}"
        )
        for name, (e, f) in PUBLISHED.get(r["molecule"], {}).items():
            print(f"{'':10s} {name:42s} {e:10.2f} {f:12.2f}")
    with open(args.json, "w") as f:
        json.dump({"nnpes": rows, "published": PUBLISHED}, f, indent=2)


if __name__ == "__main__":
    main()
