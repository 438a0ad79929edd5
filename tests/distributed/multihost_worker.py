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

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process collectives on CPU


def main(process_id: int, num_processes: int, port: int, out: str) -> None:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
    sys.path.insert(0, str(Path(__file__).parent))
    from checks import copper, md_potential, relative

    from nnpes.distributed import energy_forces_stress
    from nnpes.testing.systems import predict

    pot, atoms = md_potential(), copper()
    got = energy_forces_stress(pot, atoms, jax.device_count())
    if process_id == 0:
        ref = predict(pot, atoms)
        result = {
            "processes": jax.process_count(), "devices": jax.device_count(), "grid": list(got["plan"].grid),
            "energy": relative(got["energy"], ref.energy), "forces": relative(got["forces"], ref.forces),
            "stress": relative(got["stress"], ref.stress),
        }  # fmt: skip
        Path(out).write_text(json.dumps(result))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
