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
