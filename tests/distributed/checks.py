"""The checks of tests/distributed/test_distributed.py, run in a child process with 8 forced host devices.

JAX fixes its device count when it starts, and the rest of the suite runs on one device (training
shards batches over every device it sees), so ``test_distributed`` (through the ``distributed_checks``
fixture of tests/conftest.py) runs this script once, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, and asserts on the JSON it writes.
Every number here is measured, none asserted: the test module holds the tolerances.

Usage: python tests/distributed/checks.py OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import ase  # noqa: E402
import ase.build  # noqa: E402
import ase.io  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: helpers
from helpers import TINY_CUTOFF, TINY_MODELS  # noqa: E402

import nnpes  # noqa: E402
from nnpes.distributed import energy_forces_stress  # noqa: E402
from nnpes.distributed import md as dmd  # noqa: E402
from nnpes.distributed.plan import estimate  # noqa: E402
from nnpes.md.config import MDConfig  # noqa: E402
from nnpes.md.units import FS  # noqa: E402
from nnpes.models import NequIP  # noqa: E402
from nnpes.testing.systems import predict, water_box  # noqa: E402

DEVICES = (1, 2, 4, 8)
# jax-md rounds the time step to float32 even in float64 runs (simulate.velocity_verlet): a step
# that float32 holds exactly lets the single-device trajectory be compared at 1e-8 Å
DT_FS = float(np.float32(1.0 * FS)) / FS


def potential(model=None) -> nnpes.Potential:
    """A tiny potential for H, O, Cu in float64 (default: the 2-layer NequIP of tests/helpers.py)."""
    return nnpes.Potential.create(
        model or TINY_MODELS["nequip"](), (1, 8, 29), TINY_CUTOFF, seed=0, e0={1: -1.0, 8: -2.0, 29: -3.0},
        scale=0.3, avg_num_neighbors=10.0,
    ).astype("float64")  # fmt: skip


def md_potential() -> nnpes.Potential:
    """The tiny NequIP with l ≤ 1 (still 2 layers, a 7 Å halo): half the compile time of l ≤ 2."""
    return potential(NequIP(channels=4, l_max=1, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4))


def deepsets_potential() -> nnpes.Potential:
    """A tiny DeepSets (one cutoff sphere, a 4 Å halo): the cheapest model for the long NVE run."""
    return potential(TINY_MODELS["deepsets"]())


def copper(repeat=(4, 3, 3), seed=1) -> ase.Atoms:
    """fcc Cu with every 5th atom O, rattled and sheared (triclinic)."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.numbers[::5] = 8
    atoms.rattle(0.1, seed=seed)
    atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.4, 0, 0], [0, -0.3, 0]], scale_atoms=True)
    return atoms


def relative(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(np.asarray(b))), 1e-300))


def static_checks(pot) -> dict:
    """Energy, forces, stress over 1, 2, 4, 8 devices against one device (nnpes.physics.evaluate)."""
    out = {}
    small = copper(repeat=(1, 1, 1))  # 3.6 Å: narrower than the 7 Å halo, ghosts are images of images
    for name, atoms in (("copper", copper()), ("water", water_box()), ("small_cell", small)):
        ref = predict(pot, atoms)
        for n in DEVICES if name != "small_cell" else (1,):
            got = energy_forces_stress(pot, atoms, n)
            out[f"{name}/{n}"] = {
                "energy": relative(got["energy"], ref.energy), "forces": relative(got["forces"], ref.forces),
                "stress": relative(got["stress"], ref.stress), "grid": list(got["plan"].grid),
                "hops": list(got["plan"].hops),
            }  # fmt: skip
    return out


def nve_check(pot) -> dict:
    """1 536 atoms, NVE, 100 steps of 1 fs on 4 devices against the single-device jax-md run (the
    2-layer halo in MD is exercised by :func:`migration_check`)."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat((8, 8, 6))
    atoms.numbers[::7] = 8
    atoms.rattle(0.05, seed=1)
    atoms.set_momenta(
        np.sqrt(atoms.get_masses()[:, None] * 600 * ase.units.kB)
        * np.random.default_rng(0).standard_normal((len(atoms), 3))
    )
    options = MDConfig(ensemble="nve", dt_fs=DT_FS, dtype="float64", every=50)
    ref = nnpes.md.run_md(pot, atoms, 100, options, backend="jax-md")
    got = dmd.run(dmd.simulation(pot, atoms, options, devices=4), 100)
    return {
        "atoms": len(atoms),
        "max_position_difference_a": _periodic_difference(got.positions, ref.positions, atoms.cell[:]),
        "max_energy_difference_ev": float(np.max(np.abs(got.etot - ref.etot))),
        "etot_range_ev": float(np.ptp(got.etot)), "rebuilds": got.state["rebuilds"],
    }  # fmt: skip


def _periodic_difference(a, b, cell) -> float:
    frac = (np.asarray(a) - np.asarray(b)) @ np.linalg.inv(cell)
    return float(np.max(np.abs((frac - np.round(frac)) @ cell)))


def migration_check(pot) -> dict:
    """Atoms sent across domain boundaries (a shear flow of ±0.05 Å/fs along a) on 2 devices whose
    capacities start far too small, against 1 device with room to spare; Langevin NVT, whose noise
    is drawn per atom, so the two trajectories must agree too."""
    atoms = copper(repeat=(6, 2, 2), seed=3)
    drift = np.zeros((len(atoms), 3))
    upper = atoms.get_scaled_positions()[:, 1] >= 0.5  # a shear flow: no centre-of-mass drift to remove
    drift[:, 0] = np.where(upper, 0.05, -0.05) / FS  # Å per time unit
    atoms.set_momenta(atoms.get_masses()[:, None] * drift)
    options = MDConfig(ensemble="nvt", thermostat="langevin", dt_fs=1.0, dtype="float64", every=10, skin_a=0.5)
    ample = dmd.run(dmd.simulation(pot, atoms, options, devices=1), 60)
    tight = estimate(atoms.cell[:], len(atoms), 2, pot.cutoff, options.skin_a, 2, grid=(2, 1, 1))
    tight = tight._replace(migrate=1, ghosts=(4, 4, 4), pairs=64, cell_capacity=2)  # migrate overflows mid-run
    squeezed = dmd.run(dmd.simulation(pot, atoms, options, devices=2, plan=tight), 60)
    ids_complete = bool(np.all(np.abs(squeezed.positions[-1]).sum(axis=1) > 0))
    return {
        "max_position_difference_a": _periodic_difference(squeezed.positions, ample.positions, atoms.cell[:]),
        "reallocations": squeezed.neighbor_reallocations, "migrated": squeezed.state["migrated"],
        "rebuilds": squeezed.state["rebuilds"], "every_atom_present": ids_complete,
        "moved_a": _periodic_difference(ample.positions[-1:], ample.positions[:1], atoms.cell[:]),
        "start_plan": tight._asdict(), "final_plan": squeezed.state["plan"]._asdict(),
    }  # fmt: skip


def multihost_check(processes: int = 2, devices_each: int = 2) -> dict:
    """``jax.distributed`` with ``processes`` processes on this machine (tests/multihost_worker.py)."""
    import os
    import socket
    import subprocess
    import tempfile

    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(tempfile.mkdtemp(prefix="nnpes-multihost-")) / "result.json"
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_each}"}
    worker = str(Path(__file__).parent / "multihost_worker.py")
    procs = [
        subprocess.Popen([sys.executable, worker, str(i), str(processes), str(port), str(out)], env=env)
        for i in range(processes)
    ]
    codes = [p.wait(timeout=900) for p in procs]
    if any(codes):
        raise SystemExit(f"multi-host workers exited with {codes}")
    return json.loads(out.read_text())


def cli_check(pot, tmp: Path) -> dict:
    """``nnpes md --devices 2`` on a saved model (the summary JSON it writes)."""
    from nnpes.cli import main as cli

    pot.save(tmp / "model")
    copper(repeat=(4, 2, 2)).write(tmp / "start.xyz")
    args = ["md", str(tmp / "model"), str(tmp / "start.xyz"), "--devices", "2", "--ensemble", "nve", "--steps", "20"]
    code = cli(
        [*args, "--every", "10", "--dtype", "float64", "--json", str(tmp / "md.json"), "--out", str(tmp / "md.xyz")]
    )
    return {
        "exit": code,
        "summary": json.loads((tmp / "md.json").read_text()),
        "frames": len(ase.io.read(tmp / "md.xyz", ":")),
    }


def main(path: str) -> None:
    if jax.device_count() < max(DEVICES):
        raise SystemExit(f"needs {max(DEVICES)} devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    small = md_potential()
    results = {"static": static_checks(small), "nve": nve_check(deepsets_potential())}
    results["migration"] = migration_check(small)
    results["cli"] = cli_check(small, Path(path).parent)
    results["multihost"] = multihost_check()
    Path(path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
