"""nnpes.xla_flags: nnpes adds its XLA CPU flags at import, leaves a user's own setting alone,
and can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys

from nnpes.xla_flags import CPU_FLAGS, ENV_OPT_OUT, with_cpu_flags

FLAG = CPU_FLAGS[0].split("=", 1)[0]


def test_flags_are_added_once_and_a_users_own_value_wins():
    assert with_cpu_flags("") == " ".join(CPU_FLAGS)
    assert with_cpu_flags(with_cpu_flags("--xla_foo=1")).split().count(CPU_FLAGS[0]) == 1
    mine = f"{FLAG}=dot"
    assert with_cpu_flags(f"--xla_foo=1 {mine}") == f"--xla_foo=1 {mine}"


def _flags_in_a_fresh_process(env: dict) -> str:
    code = "import os, nnpes, jax.numpy as jnp; jnp.ones(2).block_until_ready(); print(os.environ.get('XLA_FLAGS', ''))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_sets_the_flags_before_jax_starts_and_can_be_switched_off():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", ENV_OPT_OUT)}
    assert CPU_FLAGS[0] in _flags_in_a_fresh_process(env).split()
    assert FLAG not in _flags_in_a_fresh_process({**env, ENV_OPT_OUT: "0"})


def test_importing_nnpes_after_jax_started_warns_that_its_flags_are_not_in_effect():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", ENV_OPT_OUT)}
    late = subprocess.run(
        [sys.executable, "-c", "import jax_md, nnpes"], env=env, capture_output=True, text=True, check=True
    )
    assert "Import nnpes first" in late.stderr and FLAG in late.stderr


def test_batched_float32_distances_past_32768_pairs_are_right():
    """The fusion the flags switch off (jaxlib 0.10.2, CPU) got every element past 32 768 of this
    wrong: jax-md's periodic_general pair distances, so neighbour lists of ≥ 182 atoms."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(2)
    box = np.eye(3, dtype=np.float32) * 12.44
    a, b = rng.random((40_000, 3), dtype=np.float32), rng.random((40_000, 3), dtype=np.float32)
    d2 = jax.jit(jax.vmap(lambda x, y: jnp.sum((jnp.asarray(box) @ (x - y)) ** 2)))(a, b)
    np.testing.assert_allclose(np.asarray(d2), np.sum(((a - b) @ box.T) ** 2, axis=1), rtol=1e-5)


def test_float32_jax_md_energy_of_the_shipped_water_box_is_the_calculators():
    """192 atoms in a 12.44 Å box (a periodic_general N² list build): the energy jax-md's list
    gives is the one of the ASE calculator (vesin's list), in float32."""
    from importlib import resources

    import ase.io
    import numpy as np

    import nnpes

    atoms = ase.io.read(resources.files("nnpes.data") / "files" / "water_train.xyz", 0)
    potential = nnpes.Potential.create(nnpes.models.BehlerParrinello(), [1, 8], cutoff=4.5, seed=0)
    sim = nnpes.md.simulation(potential, atoms, ensemble="nve", dt_fs=0.5, skin_a=0.5, dtype="float32")
    energy = float(sim.energy_fn(sim.positions, sim.neighbor_fn.allocate(sim.positions)))
    atoms.calc = nnpes.Calculator(potential, dtype="float32")
    np.testing.assert_allclose(energy, atoms.get_potential_energy(), rtol=0, atol=2e-3 * len(atoms) / 100)
