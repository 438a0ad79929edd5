"""XLA settings nnpes asks for before JAX starts its CPU backend.

``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions) makes XLA:CPU compile
the small, mixed matmul + element-wise fusions of an interatomic potential with its own
emitters instead of handing them to YNNPACK. On this project's 2-core CPU machines (jax
0.10.2), measured one process after the other: NequIP energy + forces on 256 Cu atoms 114 → 88
ms (l ≤ 1) and 318 → 287 ms (l ≤ 2), the aspirin training step 106 → 73 ms; jax-md's own
NequIP gains as much (198 → 126 ms), so ``benchmarks/speed.py`` runs every case, peers
included, with these flags. A large plain matmul is ~10 % slower (260 → 235 GFLOP/s), so the
setting is for potentials, not general code.

Correctness too: with jaxlib 0.10.2 on CPU, the YNNPACK fusion of a vmapped ``box @ dR`` followed
by a sum of squares returns wrong float32 values past element 32 768, so jax-md's neighbour list
of a periodic_general box with ≥ 182 atoms (N² candidate pairs) misses pairs and holds false
ones; without it the results are right (``tests/test_xla_flags.py``).

XLA reads ``XLA_FLAGS`` once, when the first JAX computation starts the backend: importing
``nnpes`` before that applies the settings; later, they change nothing, and importing nnpes then
warns (``import jax_md`` starts the backend: import nnpes before it). A flag already present
in ``XLA_FLAGS`` is left as the user set it, and ``NNPES_XLA_FLAGS=0`` turns the whole
adjustment off.
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
ENV_OPT_OUT = "NNPES_XLA_FLAGS"


def with_cpu_flags(current: str) -> str:
    """``current`` (an XLA_FLAGS string) plus each of :data:`CPU_FLAGS` it does not set itself."""
    flags = current.split()
    names = {f.split("=", 1)[0] for f in flags}
    flags += [f for f in CPU_FLAGS if f.split("=", 1)[0] not in names]
    return " ".join(flags)


def apply() -> None:
    """Add :data:`CPU_FLAGS` to the environment's XLA_FLAGS (unless ``NNPES_XLA_FLAGS=0``); warn
    when JAX's backend already started without them (something imported before nnpes ran JAX:
    ``import jax_md`` does), since they can no longer take effect."""
    if os.environ.get(ENV_OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    current = os.environ.get("XLA_FLAGS", "")
    if with_cpu_flags(current) != current and _backend_started():
        import warnings

        warnings.warn(
            "nnpes was imported after JAX started its backend (e.g. after `import jax_md`), so its XLA CPU flags "
            f"({' '.join(CPU_FLAGS)}) are not in effect: with jaxlib 0.10 the fusions they switch off give wrong "
            "float32 pair distances past 32 768 pairs (jax-md neighbour lists of ≥ 182 atoms). Import nnpes first, "
            "or start Python with XLA_FLAGS=" + with_cpu_flags(current).strip(),
            stacklevel=3,
        )
    os.environ["XLA_FLAGS"] = with_cpu_flags(current)


def _backend_started() -> bool:
    """Whether JAX has initialised its backends (a private JAX function: False when it is gone)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # an internal API: without it, no warning rather than an error
        return False
