"""Which backend runs a structure, and :func:`run_md`, what ``nnpes md`` calls.

Light to import (the CLI reads :data:`BACKENDS`): jax-md is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from nnpes.errors import ConfigError
from nnpes.md.structure import check_structure

if TYPE_CHECKING:
    from nnpes.md.config import MDConfig
    from nnpes.md.results import MDResult
    from nnpes.potential import Potential

BACKENDS = ("auto", "jax-md", "ase")


def choose_backend(potential: Potential, atoms, skin_a: float | None = None) -> str:
    """ "jax-md" for molecules and periodic cells at least 2·(cutoff + skin) wide, else "ase"
    (skin_a default: the neighbour-list default skin)."""
    from nnpes.md.jaxmd_energy import DEFAULT_SKIN_A, box_widths

    skin_a = DEFAULT_SKIN_A if skin_a is None else skin_a
    pbc = np.asarray(atoms.pbc, bool)
    if not pbc.any():
        return "jax-md"
    if not pbc.all():
        return "ase"
    widths = np.asarray(box_widths(np.asarray(atoms.cell[:], np.float64).T))
    return "jax-md" if widths.min() >= 2.0 * (potential.cutoff + skin_a) else "ase"


def check_steps(steps, name: str = "steps") -> int:
    """``steps`` if it is a whole number ≥ 0, else a ConfigError naming ``name``."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ConfigError(f"{name} must be a whole number ≥ 0, got {steps!r}")
    return int(steps)


def run_md(
    potential: Potential,
    atoms,
    steps: int,
    options: MDConfig | None = None,
    backend: str = "auto",
    callback: Callable[[int, int], None] | None = None,
    source: str | None = None,
    on_frames: Callable[[MDResult], None] | None = None,
    devices: int | None = None,
) -> MDResult:
    """Simulate ``atoms`` for ``steps`` steps with jax-md, or with ASE when the cell is too small
    for jax-md's minimum image (backend "auto"); "jax-md" or "ase" force one. ``devices``: spread
    a periodic structure over that many devices instead (:mod:`nnpes.distributed`, NVE and
    Langevin NVT; any cell size; ``backend`` is then ignored).

    The structure is checked first, before anything compiles (:func:`nnpes.md.structure.check_structure`:
    the frame checks of ``nnpes evaluate``, elements the model knows, the cell the ensemble needs);
    a structure carrying ``atoms.info["time_fs"]`` (a frame written by ``nnpes md --out``) continues
    its clock. ``source`` names the structure (e.g. its file) in errors. ``on_frames`` is handed
    the frames as they are recorded (an :class:`MDResult` of the new ones); a run that blows up
    raises :class:`nnpes.errors.SimulationError` and Ctrl-C :class:`nnpes.errors.Interrupted`, both
    with ``.result``, what was recorded before (:func:`nnpes.md.loop.run`)."""
    from nnpes.md.ase_backend import run_ase
    from nnpes.md.config import MDConfig
    from nnpes.md.jaxmd_simulation import simulation
    from nnpes.md.loop import run

    options = options or MDConfig()
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be auto, jax-md or ase, got {backend!r}")
    check_steps(steps)
    check_structure(atoms, potential, options, source=source)
    if devices is not None:
        from nnpes.distributed import md as distributed

        sim = distributed.simulation(potential, atoms, options, devices)
        return distributed.run(sim, steps, callback=callback, on_frames=on_frames)
    if backend == "auto":
        backend = choose_backend(potential, atoms, options.skin_a)
    if backend == "ase":
        return run_ase(potential, atoms, steps, options, callback=callback, on_frames=on_frames)
    return run(simulation(potential, atoms, options, source=source), steps, callback=callback, on_frames=on_frames)
