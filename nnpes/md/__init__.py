"""Molecular dynamics: the ASE calculator and the jax-md adaptor, ensembles and run loop.

- :class:`Calculator`: the potential as an ASE calculator (ASE's MD and optimisers, small cells).
- :func:`energy_neighbor_list`: the potential as a jax-md (neighbour function, energy function).
- :func:`simulation`, :func:`run`: NVE / NVT (Langevin, Nosé–Hoover) / NPT with jax-md in jitted
  chunks, neighbour-list overflow caught and repaired; :func:`run_ase` the same with ASE;
  :func:`run_md` picks one for a structure (what ``nnpes md`` calls).

jax-md is imported on first use of one of its names (importing it takes seconds).
"""

from nnpes.md.ase import Calculator

_LAZY = {
    "energy_neighbor_list": "nnpes.md.jax_md",
    "needs_reallocation": "nnpes.md.jax_md",
    "BoxTooSmallError": "nnpes.md.jax_md",
    "MDOptions": "nnpes.md.simulate",
    "MDResult": "nnpes.md.simulate",
    "Simulation": "nnpes.md.simulate",
    "simulation": "nnpes.md.simulate",
    "run": "nnpes.md.simulate",
    "run_ase": "nnpes.md.simulate",
    "run_md": "nnpes.md.simulate",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nnpes.md' has no attribute {name!r}")


__all__ = ["Calculator", *_LAZY]
