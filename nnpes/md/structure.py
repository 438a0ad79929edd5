"""Start structures: refused the way every nnpes entry point refuses a frame, and their clock.

Both backends, :func:`nnpes.md.run_md` and ``nnpes md`` call :func:`check_structure` before
anything is compiled: the frame checks of :func:`nnpes.data.io.frame_from_atoms` (NaN
positions, singular cells, atomic numbers, atoms closer than ``MIN_DISTANCE_A``), the elements
the model knows and the cell the ensemble needs, each a one-line error naming the source.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from nnpes.data.graph import species_indices
from nnpes.data.io import frame_from_atoms
from nnpes.errors import DataError, where
from nnpes.md.ensembles import require_cell

if TYPE_CHECKING:
    from nnpes.md.config import MDConfig
    from nnpes.potential import Potential

TIME_KEY = "time_fs"  # atoms.info key of a frame's simulation time, fs (written by MDResult.to_atoms)
IN_MEMORY = "ase.Atoms"  # the source named for a structure that did not come from a file


def check_structure(
    atoms,
    potential: Potential | None = None,
    options: MDConfig | None = None,
    *,
    source: str | None = None,
    index: int | None = None,
) -> None:
    """Refuse a start structure, before any compilation.

    Raises:
        DataError: what :func:`nnpes.data.io.frame_from_atoms` refuses (no labels required),
            velocities that are not finite, or a start time (``atoms.info["time_fs"]``) that is
            not a finite number.
        ModelError: an element ``potential`` does not know.
        ConfigError: an ensemble of ``options`` that needs a cell periodic in all directions
            in a structure without one.
    """
    at = where(source or IN_MEMORY, index)
    frame_from_atoms(atoms, source=source or IN_MEMORY, index=index)
    if atoms.has("momenta") and not np.all(np.isfinite(atoms.get_momenta())):
        raise DataError(f"{at}: velocities contain NaN or inf")
    if potential is not None:
        species_indices(atoms.numbers, potential.atomic_numbers, at)
    if options is not None:
        require_cell(options, bool(np.all(atoms.pbc)), at)
    start_time_fs(atoms, source=source, index=index)


def start_time_fs(atoms, *, source: str | None = None, index: int | None = None) -> float:
    """The simulation time of a structure, fs: ``atoms.info["time_fs"]`` (a frame of a trajectory
    written by ``nnpes md --out``), 0 when it has none; a run started from it continues the clock."""
    value = atoms.info.get(TIME_KEY)
    if value is None:
        return 0.0
    try:
        t = float(np.asarray(value, np.float64).reshape(()))
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t):
        raise DataError(f"{where(source or IN_MEMORY, index)}: info key '{TIME_KEY}' is not a finite number: {value!r}")
    return t
