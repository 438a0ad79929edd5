"""nnpes: machine-learned interatomic potentials in JAX.

Public names: :func:`load`, :class:`Potential`, :class:`Calculator`, :mod:`nnpes.models`,
:mod:`nnpes.md`, :mod:`nnpes.train` (``nnpes.train.fit``, ``nnpes.train.train``) and
:mod:`nnpes.testing` (the physics laws as a test class). ``load`` also reads a directory written
by ``nnpes export`` (:mod:`nnpes.export`), then without importing :mod:`nnpes.models`.
Units everywhere: eV, Å, eV/Å, eV/Å³ (ASE stress sign), fs, amu, K.
"""

__version__ = "0.1.0"

from nnpes import xla_flags  # noqa: E402  (first: XLA reads its flags when the backend starts)

xla_flags.apply()

# the term modules register their kinds for nnpes.load; none of these imports nnpes.models, so
# that an exported potential (nnpes.exported) runs without any model code
from nnpes import electrostatics, zbl  # noqa: E402, F401
from nnpes.md.calculator import Calculator  # noqa: E402
from nnpes.potential import Potential, load  # noqa: E402

# imported on first use: optax, pytest, and the model families (loading a model directory imports them)
_LAZY_MODULES = ("train", "testing", "models")


def __getattr__(name):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"nnpes.{name}")
    raise AttributeError(f"module 'nnpes' has no attribute {name!r}")


__all__ = ["Calculator", "Potential", "__version__", "load", "md", "models", "testing", "train"]
