"""Molecular dynamics: the ASE calculator and the jax-md adaptor, ensembles and run loop.

- :class:`Calculator`: the potential as an ASE calculator (ASE's MD and optimisers, small cells).
- :func:`energy_neighbor_list`: the potential as a jax-md (neighbour function, energy function).
- :func:`simulation`, :func:`run`: NVE / NVT (Langevin, Nosé–Hoover) / NPT with jax-md in jitted
  chunks, neighbour-list overflow caught and repaired; :func:`run_ase` the same with ASE;
  :func:`run_md` picks one for a structure (what ``nnpes md`` calls).
- :class:`MDConfig` (alias :class:`MDOptions`): the validated MD options.
- :func:`check_structure`: the start-structure checks every entry point makes before compiling.
- :func:`uncertainty`: an ensemble's energy and force uncertainties through the jax-md adaptor;
  the extrapolation alarm of both backends (``alarm``: :class:`UncertaintyWarning`, :class:`UncertaintyStop`).
- :func:`thermo_plot`, :func:`thermo_figure`: energies (for NVE, energy conservation), temperature
  and volume of a run against time (``nnpes md --plot``).

Modules: ``config`` (options), ``ensembles`` (the one table both backends read), ``jaxmd_simulation``
(jax-md set-up), ``loop`` (jax-md run loop), ``ase_backend``, ``results`` (MDResult, writers),
``driver`` (backend choice), ``structure`` (start-structure checks, start time), ``units``,
``velocities``, ``jaxmd_energy``, ``calculator``.

jax-md is imported on first use of one of its names (importing it takes seconds).
"""

from nnpes.md.calculator import Calculator

_LAZY = {
    "energy_neighbor_list": "nnpes.md.jaxmd_energy",
    "needs_reallocation": "nnpes.md.jaxmd_energy",
    "BoxTooSmallError": "nnpes.md.jaxmd_energy",
    "MDConfig": "nnpes.md.config",
    "MDOptions": "nnpes.md.config",
    "MDResult": "nnpes.md.results",
    "Simulation": "nnpes.md.jaxmd_simulation",
    "simulation": "nnpes.md.jaxmd_simulation",
    "run": "nnpes.md.loop",
    "run_ase": "nnpes.md.ase_backend",
    "run_md": "nnpes.md.driver",
    "check_structure": "nnpes.md.structure",
    "uncertainty": "nnpes.md.alarm",
    "UncertaintyStop": "nnpes.md.alarm",
    "UncertaintyWarning": "nnpes.md.alarm",
    "thermo_figure": "nnpes.md.plots",
    "thermo_plot": "nnpes.md.plots",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nnpes.md' has no attribute {name!r}")


__all__ = ["Calculator", *_LAZY]
