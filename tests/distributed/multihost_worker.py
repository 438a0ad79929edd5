"""One process of the multi-host check of tests/distributed/test_distributed.py: ``jax.distributed`` on this
machine, each process with its own forced host devices, the decomposition across all of them.

Usage: python tests/distributed/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.json
(each process sets XLA_FLAGS=--xla_force_host_platform_device_count=K; process 0 writes OUT.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process collectives on CPU


def main(process_id: int, num_processes: int, port: int, out: str) -> None:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
    sys.path.insert(0, str(Path(__file__).parent))
    from checks import copper, potential, relative

    from nnpes.distributed import energy_forces_stress
    from nnpes.distributed import md as dmd
    from nnpes.md.config import MDConfig
    from nnpes.testing.systems import predict

    pot, atoms = potential(), copper()
    got = energy_forces_stress(pot, atoms, jax.device_count())
    # MD across the processes against the same run on this process's first device alone
    options = MDConfig(ensemble="nve", dt_fs=1.0, dtype="float64", every=5)
    across = dmd.run(dmd.simulation(pot, atoms, options, jax.device_count()), 10)
    alone = dmd.run(dmd.simulation(pot, atoms, options, 1, device_list=jax.local_devices()[:1]), 10)
    if process_id == 0:
        ref = predict(pot, atoms)
        frac = (across.positions - alone.positions) @ np.linalg.inv(atoms.cell[:])
        result = {
            "processes": jax.process_count(), "devices": jax.device_count(), "grid": list(got["plan"].grid),
            "energy": relative(got["energy"], ref.energy), "forces": relative(got["forces"], ref.forces),
            "stress": relative(got["stress"], ref.stress),
            "md_position_difference_a": float(np.max(np.abs((frac - np.round(frac)) @ atoms.cell[:]))),
            "md_frames": len(across.time_fs),
        }  # fmt: skip
        Path(out).write_text(json.dumps(result))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
