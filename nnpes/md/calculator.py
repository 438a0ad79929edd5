"""ASE calculator: ``atoms.calc = nnpes.Calculator(model_dir)``. No physics here: it builds a
padded graph and calls :func:`nnpes.physics.energy_forces_stress`.

What does not change between calls is kept: the parameters on the device, the species of the
last structure, and one compiled function per padded shape (compiled ahead of time, shared by
the calculators of a potential, called with flat arrays), so that a call costs the neighbour
list, a few copies and the compiled program.
"""

from __future__ import annotations

import os

import jax
import jraph
import numpy as np
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from nnpes.data.graph import bucket, species_indices
from nnpes.data.io import check_min_distance, geometry_from_atoms, matrix_to_voigt
from nnpes.data.neighbors import neighbor_list
from nnpes.errors import ModelError
from nnpes.memory import check_fits, compiled_bytes
from nnpes.physics import energy_forces_stress
from nnpes.potential import Potential, load

_SOURCE = "ase.Atoms"  # what errors about the calculator's structure name


def resolve_dtype(dtype) -> np.dtype:
    """ "float32" or "float64" → numpy dtype; float64 needs ``jax_enable_x64`` switched on first."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ModelError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ModelError("dtype='float64' needs jax.config.update('jax_enable_x64', True) before any JAX array is made")
    return dt


def _graph(positions, species, senders, receivers, shifts, cell, n_node, n_edge) -> jraph.GraphsTuple:
    """The padded GraphsTuple of one structure (+ its padding graph) from the arrays the
    calculator fills; labels are not needed to evaluate."""
    return jraph.GraphsTuple(
        nodes={"positions": positions, "species": species},
        edges={"shifts": shifts},
        senders=senders,
        receivers=receivers,
        globals={"cell": cell},
        n_node=n_node,
        n_edge=n_edge,
    )


_COMPILED: dict[tuple, object] = {}  # (potential's treedef, padded shape, stress) → compiled program


def _compiled(treedef, n_node: int, n_edge: int, stress: bool, leaves, arrays):
    """The compiled program of one potential (its treedef: model, cutoff, species table, dtype)
    and padded shape, compiled ahead of time on first use and shared by every calculator of
    that potential. Refuses (one line) a program that needs more memory than is available."""
    key = (treedef, n_node, n_edge, stress, arrays[0].dtype)
    if key not in _COMPILED:

        def call(leaves, arrays):
            out = energy_forces_stress(jax.tree.unflatten(treedef, leaves), _graph(*arrays), compute_stress=stress)
            keep = ("interaction_energy", "forces", "site_energies") + (("stress",) if stress else ())
            return {k: out[k] for k in keep}

        compiled = jax.jit(call).lower(leaves, arrays).compile()
        n_atoms, n_pairs = int(arrays[6][0]), int(arrays[7][0])
        check_fits(
            compiled_bytes(compiled),
            f"{_SOURCE}: energy + forces of {n_atoms} atoms ({n_pairs} pairs within the cutoff)",
            hint="use fewer atoms, float32, a smaller NequIP edge_memory_mb, or a machine with more memory",
        )
        _COMPILED[key] = compiled
    return _COMPILED[key]


class Calculator(_AseCalculator):
    """nnpes potential as an ASE calculator.

    Gives ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å), per-atom ``energies`` (eV)
    for molecules and periodic cells, and ``stress`` (eV/Å³, ASE Voigt order and sign) for
    cells periodic in all three directions. Small periodic cells are fine (every image within
    the cutoff is listed). Shapes are padded to buckets, so MD recompiles only rarely; each
    padded shape is compiled once per potential, and calculators of one potential share it.

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
        # the potential's arrays, on the device once; its static parts (model, cutoff) in the treedef
        leaves, self._treedef = jax.tree.flatten(self.potential)
        self._leaves = jax.device_put(leaves)
        self._species_of: tuple[bytes, np.ndarray] | None = None  # (numbers, species) of the last call

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation, of what the energy depends on (positions,
        numbers, cell, pbc), compared exactly: ASE's comparison of every array costs more than
        a small molecule's energy."""
        old = self.atoms
        if old is None:
            return list(all_changes)
        pairs = (
            ("positions", old.positions, atoms.positions),
            ("numbers", old.numbers, atoms.numbers),
            ("cell", old.cell.array, atoms.cell.array),
            ("pbc", old.pbc, atoms.pbc),
        )
        return [name for name, a, b in pairs if a.shape != b.shape or not np.array_equal(a, b)]

    def _function(self, n_node: int, n_edge: int, stress: bool, arrays: tuple):
        """The compiled energy/forces(/stress) call for one padded shape (see :func:`_compiled`)."""
        return _compiled(self._treedef, n_node, n_edge, stress, self._leaves, arrays)

    def _species(self, numbers: np.ndarray) -> np.ndarray:
        """Species indices of ``numbers`` (the last structure's, when unchanged); an element the
        model does not know raises a one-line ModelError."""
        raw = numbers.tobytes()
        if self._species_of is None or self._species_of[0] != raw:
            self._species_of = (raw, species_indices(numbers, self.potential.atomic_numbers, _SOURCE))
        return self._species_of[1]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress is defined only for cells periodic in all three directions")
        arrays = self._padded(*geometry_from_atoms(atoms, _SOURCE))
        out = jax.device_get(
            self._function(arrays[0].shape[0], arrays[2].shape[0], periodic, arrays)(self._leaves, arrays)
        )
        n = len(atoms)
        energy = self.potential.total_energy(out["interaction_energy"][0], atoms.numbers)
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = np.asarray(out["forces"][:n], np.float64)
        self.results["energies"] = np.asarray(out["site_energies"][:n], np.float64)
        if periodic:
            self.results["stress"] = matrix_to_voigt(out["stress"][0])

    def _padded(self, positions_a, numbers, cell, pbc) -> tuple:
        """(positions, species, senders, receivers, shifts, cell, n_node, n_edge) of one structure
        (positions Å, cell rows Å) and its padding graph, nodes and edges padded to buckets as
        :func:`nnpes.data.graph.batch_graphs` pads them (padding edges join the last, padding node
        to itself). Refuses atoms closer than MIN_DISTANCE_A, as every entry point does."""
        n = len(numbers)
        species = self._species(numbers)
        cell = cell if pbc.any() else np.zeros((3, 3))
        nl = neighbor_list(positions_a, cell, pbc, self.potential.cutoff)
        check_min_distance(positions_a, cell, pbc, _SOURCE, nl)
        n_edge_real = len(nl.senders)
        n_node, n_edge = bucket(n + 1), bucket(n_edge_real)
        positions = np.zeros((n_node, 3), self.dtype)
        positions[:n] = positions_a
        padded_species = np.zeros(n_node, np.int32)
        padded_species[:n] = species
        senders = np.full(n_edge, n_node - 1, np.int32)
        receivers = np.full(n_edge, n_node - 1, np.int32)
        shifts = np.zeros((n_edge, 3), np.int32)
        senders[:n_edge_real], receivers[:n_edge_real], shifts[:n_edge_real] = nl.senders, nl.receivers, nl.shifts
        cells = np.zeros((2, 3, 3), self.dtype)
        cells[0] = cell
        counts = np.array([n, n_node - n], np.int32), np.array([n_edge_real, n_edge - n_edge_real], np.int32)
        return positions, padded_species, senders, receivers, shifts, cells, *counts
