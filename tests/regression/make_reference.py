"""Regenerate the stored regression values (``reference.json``) — only on purpose.

The values pin the numbers nnpes computes: energies and forces, float64, of every model family
with random weights (seed 0) and of a model trained by ``configs/quickstart.yaml`` (stored in
``quickstart_model/``; trained with ``training.max_steps=300`` so that it takes seconds).
``tests/test_regression.py`` checks that the current code reproduces them to float64 round-off.

Run from the repository root: ``.venv/bin/python tests/regression/make_reference.py [--retrain]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEMS = ("ethanol", "water_box")


def structures():
    """Fixed structures: an rMD17 ethanol frame (free space) and a rattled periodic water box."""
    from importlib import resources

    import ase.build
    import ase.io
    import numpy as np

    ethanol = ase.io.read(str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz"), index=3)
    water = ase.build.molecule("H2O")
    box = ase.Atoms(cell=np.eye(3) * 6.2, pbc=True)
    rng = np.random.default_rng(7)
    for k, offset in enumerate(np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) * 6.2):
        w = water.copy()
        w.rotate(90 * k, "z")
        w.translate(offset + 1.0)
        box += w
    box.positions += rng.normal(scale=0.05, size=box.positions.shape)
    return {"ethanol": ethanol, "water_box": box}


def family_models():
    """Small instances of every family (random weights, seed 0)."""
    from nnpes.models import MACE, BehlerParrinello, DeepSets, NequIP

    return {
        "nequip": NequIP(channels=4, l_max=2, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4),
        "mace": MACE(channels=4, l_max=2, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4),
        "behler_parrinello": BehlerParrinello(num_radial=4, zetas=(1, 2), hidden_features=(8,)),
        "deepsets": DeepSets(num_basis=4, embed_features=4, phi_features=(8, 8), rho_features=(8,)),
    }


def predictions(calculator, atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = calculator
    return {"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--retrain", action="store_true", help="also retrain quickstart_model/")
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    import nnpes

    model_dir = HERE / "quickstart_model"
    if args.retrain or not model_dir.exists():
        work = HERE / "_quickstart_run"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nnpes",
                "train",
                "configs/quickstart.yaml",
                "--workdir",
                str(work),
                "training.max_steps=300",
                "training.time_budget_s=null",
                "training.progress=false",
            ],
            check=True,
        )
        os.replace(work / "model", model_dir)
        subprocess.run(["rm", "-rf", str(work)], check=True)
    systems = structures()
    out = {"families": {}, "quickstart": {}}
    for family, model in family_models().items():
        potential = nnpes.Potential.create(
            model, [1, 6, 8], cutoff=3.5, seed=0, e0={1: -13.6, 6: -1029.8, 8: -2041.3}, scale=0.7
        )
        calc = nnpes.Calculator(potential, dtype="float64")
        out["families"][family] = {name: predictions(calc, atoms) for name, atoms in systems.items()}
    calc = nnpes.Calculator(nnpes.load(model_dir), dtype="float64")
    out["quickstart"] = {name: predictions(calc, atoms) for name, atoms in systems.items()}
    (HERE / "reference.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {HERE / 'reference.json'}")


if __name__ == "__main__":
    main()
