"""ASE calculator: ``atoms.calc = nnpes.Calculator(model_dir)``. No physics here: it builds a
padded graph and calls :func:`nnpes.physics.evaluate`."""

from __future__ import annotations

import os

import jax
import numpy as np
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from nnpes.data.graph import batch_graphs, frame_to_graph
from nnpes.data.io import frame_from_atoms, matrix_to_voigt
from nnpes.errors import ModelError
from nnpes.physics import evaluate
from nnpes.potential import Potential, load


def resolve_dtype(dtype) -> np.dtype:
    """ "float32" or "float64" → numpy dtype; float64 needs ``jax_enable_x64`` switched on first."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ModelError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ModelError("dtype='float64' needs jax.config.update('jax_enable_x64', True) before any JAX array is made")
    return dt


class Calculator(_AseCalculator):
    """nnpes potential as an ASE calculator.

    Gives ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å), per-atom ``energies`` (eV)
    for molecules and periodic cells, and ``stress`` (eV/Å³, ASE Voigt order and sign) for
    cells periodic in all three directions. Small periodic cells are fine (every image within
    the cutoff is listed). Shapes are padded to buckets, so MD recompiles only rarely.

    Args:
        potential: a :class:`~nnpes.Potential` or a model (or run) directory.
        dtype: "float32" or "float64" (the same parameters, cast; needs x64 enabled).
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress"]

    def __init__(self, potential: Potential | str | os.PathLike, dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(potential, Potential):
            potential = load(potential)
        self.dtype = resolve_dtype(dtype)
        self.potential = potential.astype(self.dtype)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress is defined only for cells periodic in all three directions")
        frame = frame_from_atoms(atoms, source="ase.Atoms")
        graph = frame_to_graph(frame, self.potential.cutoff, self.potential.atomic_numbers)
        batch = batch_graphs([graph], dtype=self.dtype)
        out = jax.device_get(evaluate(self.potential, batch, compute_stress=periodic))
        n = len(atoms)
        energy = self.potential.total_energy(out["interaction_energy"][0], atoms.numbers)
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = np.asarray(out["forces"][:n], np.float64)
        self.results["energies"] = np.asarray(out["site_energies"][:n], np.float64)
        if periodic:
            self.results["stress"] = matrix_to_voigt(out["stress"][0])
