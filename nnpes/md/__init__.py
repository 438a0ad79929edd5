"""Molecular dynamics: the ASE calculator (and, with issue 5, the jax-md adaptor)."""

from nnpes.md.ase import Calculator

__all__ = ["Calculator"]
