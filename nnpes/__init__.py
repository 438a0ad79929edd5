"""nnpes: machine-learned interatomic potentials in JAX.

Public names: :func:`load`, :class:`Potential`, :class:`Calculator`, :mod:`nnpes.models`,
:mod:`nnpes.md`, :mod:`nnpes.train` (``nnpes.train.fit``, ``nnpes.train.train``) and
:mod:`nnpes.testing` (the physics laws as a test class). Units everywhere: eV, Å, eV/Å, eV/Å³
(ASE stress sign), fs, amu, K.
"""

__version__ = "0.1.0"

from nnpes import xla_flags  # noqa: E402  (first: XLA reads its flags when the backend starts)

xla_flags.apply()

from nnpes import electrostatics, models, zbl  # noqa: E402, F401  (term kinds registered for nnpes.load)
from nnpes.md.calculator import Calculator  # noqa: E402
from nnpes.potential import Potential, load  # noqa: E402

_LAZY_MODULES = ("train", "testing")  # imported on first use (optax, pytest)


def __getattr__(name):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"nnpes.{name}")
    raise AttributeError(f"module 'nnpes' has no attribute {name!r}")


__all__ = ["Calculator", "Potential", "__version__", "load", "md", "models", "testing", "train"]
