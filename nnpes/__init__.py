"""nnpes: machine-learned interatomic potentials in JAX.

Public names: :func:`load`, :class:`Potential`, :class:`Calculator`, :mod:`nnpes.models`,
:mod:`nnpes.md`. Units everywhere: eV, Å, eV/Å, eV/Å³ (ASE stress sign), fs, amu, K.
"""

__version__ = "0.1.0"

from nnpes import models  # noqa: E402
from nnpes.md.ase import Calculator  # noqa: E402
from nnpes.potential import Potential, load  # noqa: E402

__all__ = ["Calculator", "Potential", "__version__", "load", "models"]
