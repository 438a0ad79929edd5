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
import jax.numpy as jnp
import jraph
import numpy as np
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from nnpes.data.graph import bucket, species_indices
from nnpes.data.io import check_min_distance, geometry_from_atoms, matrix_to_voigt, total_charge
from nnpes.data.neighbors import neighbor_list
from nnpes.errors import ModelError
from nnpes.memory import check_fits, compiled_bytes
from nnpes.physics import energy_forces_stress
from nnpes.potential import Potential, load
from nnpes.uncertainty import ensemble_outputs

_SOURCE = "ase.Atoms"  # what errors about the calculator's structure name


def resolve_dtype(dtype) -> np.dtype:
    """ "float32" or "float64" → numpy dtype; float64 needs ``jax_enable_x64`` switched on first."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ModelError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ModelError("dtype='float64' needs jax.config.update('jax_enable_x64', True) before any JAX array is made")
    return dt


def _graph(floats, ints, n_node: int, n_edge: int) -> jraph.GraphsTuple:
    """The padded GraphsTuple of one structure (+ its padding graph) from the two flat arrays the
    calculator fills (:meth:`Calculator._padded`; one host-to-device copy each), edges in the
    mirrored layout (:mod:`nnpes.data.graph`); labels are not needed to evaluate."""
    e = n_edge
    offsets = np.cumsum([0, n_node, e, e, 3 * e, 2, 2])
    species, senders, receivers, shifts, n_nodes, n_edges = (ints[a:b] for a, b in zip(offsets[:-1], offsets[1:]))
    return jraph.GraphsTuple(
        nodes={"positions": floats[: 3 * n_node].reshape(n_node, 3), "species": species},
        edges={"shifts": shifts.reshape(e, 3), "mirrored": np.zeros(0, np.int8)},
        senders=senders,
        receivers=receivers,
        globals={"cell": floats[3 * n_node : 3 * n_node + 18].reshape(2, 3, 3), "charge": floats[3 * n_node + 18 :]},
        n_node=n_nodes,
        n_edge=n_edges,
    )


_COMPILED: dict[tuple, object] = {}  # (potential's treedef, padded shape, stress) → compiled program


def _compiled(treedef, signature: tuple, n_node: int, n_edge: int, stress: bool, leaves, arrays):
    """The compiled program of one potential (its treedef: model, cutoff, species table, dtype)
    and padded shape, compiled ahead of time on first use and shared by every calculator of
    that potential (``signature``: its arrays' shapes and dtypes). Refuses (one line) a program
    that needs more memory than is available."""
    key = (treedef, signature, n_node, n_edge, stress, arrays[0].dtype)  # arrays: (floats, ints) of _padded
    if key not in _COMPILED:

        def call(leaves, arrays):
            graph = _graph(*arrays, n_node, n_edge)
            potential = jax.tree.unflatten(treedef, leaves)
            if potential.members:  # an ensemble: the members' mean, and their spread after everything else
                out, (e_std, f_std) = ensemble_outputs(potential, graph, compute_stress=stress)
            else:
                out = energy_forces_stress(potential, graph, compute_stress=stress)
            # one flat output, one device-to-host copy: E_int, forces, site energies (, charges, stress, σ)
            parts = [out["interaction_energy"][:1], out["forces"].ravel(), out["site_energies"]]
            parts += [out["charges"]] if "charges" in out else []
            parts += [out["stress"][0].ravel()] if stress else []
            parts += [e_std[:1], f_std.ravel()] if potential.members else []
            return jnp.concatenate(parts)

        compiled = jax.jit(call).lower(leaves, arrays).compile()
        counts = arrays[1][-4:]
        n_atoms, n_pairs = int(counts[0]), int(counts[2])
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
    cells periodic in all three directions, and the latent partial ``charges`` (e) of a model
    with an electrostatics term (they sum to ``atoms.info["charge"]``, 0 when absent). An
    ensemble (``potential.members``) gives its members' mean and, calibrated, their spread:
    ``energy_std`` (eV) and ``forces_std`` ((N, 3), eV/Å). Small
    periodic cells are fine (every image within the cutoff is listed). Shapes are padded to
    buckets, so MD recompiles only rarely; each padded shape is compiled once per potential,
    and calculators of one potential share it.

    Args:
        potential: a :class:`~nnpes.Potential`, an exported one (:mod:`nnpes.exported`), or a
            model, run or export directory.
        dtype: "float32" or "float64" (the same parameters, cast, or the export's program of
            that dtype; needs x64 enabled).
    """

    implemented_properties = [
        "energy", "free_energy", "forces", "energies", "stress", "charges", "energy_std", "forces_std",
    ]  # fmt: skip

    def __init__(self, potential: Potential | str | os.PathLike, dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if isinstance(potential, str | os.PathLike):
            potential = load(potential)
        self.dtype = resolve_dtype(dtype)
        self.potential = potential.astype(self.dtype)
        self._use(self.potential)
        self._e0 = np.asarray(self.potential.e0, np.float64)  # eV per species, for Σ E0 on the host
        self._species_of: tuple[bytes, np.ndarray, float] | None = None  # (numbers, species, Σ E0), last call

    def _use(self, potential: Potential) -> None:
        """Evaluate with ``potential`` (the calculator's, its long-range terms' grids fixed for
        the current cell): its arrays go to the device once, its static parts (model, cutoff,
        grids) into the treedef that keys the compiled programs."""
        self._current = potential
        leaves, self._treedef = jax.tree.flatten(potential)
        self._leaves = jax.device_put(leaves)
        self._signature = tuple((x.shape, str(x.dtype)) for x in self._leaves)

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
            ("charge", np.asarray(old.info.get("charge", 0.0)), np.asarray(atoms.info.get("charge", 0.0))),
        )
        return [name for name, a, b in pairs if a.shape != b.shape or not np.array_equal(a, b)]

    def _function(self, n_node: int, n_edge: int, stress: bool, arrays: tuple):
        """The compiled energy/forces(/stress) call for one padded shape (see :func:`_compiled`)."""
        return _compiled(self._treedef, self._signature, n_node, n_edge, stress, self._leaves, arrays)

    def _species(self, numbers: np.ndarray) -> np.ndarray:
        """Species indices of ``numbers`` (the last structure's, when unchanged; with them their
        Σ E0, eV, float64); an element the model does not know raises a one-line ModelError."""
        raw = numbers.tobytes()
        if self._species_of is None or self._species_of[0] != raw:
            species = species_indices(numbers, self.potential.atomic_numbers, _SOURCE)
            self._species_of = (raw, species, float(self._e0[species].sum()))
        return self._species_of[1]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress is defined only for cells periodic in all three directions")
        geometry = geometry_from_atoms(atoms, _SOURCE)
        if self.potential.terms:  # long-range terms fix their k grid for this cell
            resolved = self.potential.for_cells(geometry[2][None] if periodic else np.zeros((1, 3, 3)))
            if resolved.terms != self._current.terms:
                self._use(resolved)
        arrays, n_node, n_edge = self._padded(*geometry, charge=total_charge(atoms, _SOURCE))
        flat = np.asarray(self._function(n_node, n_edge, periodic, arrays)(self._leaves, arrays), np.float64)
        n = len(atoms)
        forces = flat[1 : 1 + 3 * n_node].reshape(n_node, 3)
        self.results["energy"] = self.results["free_energy"] = float(flat[0]) + self._species_of[2]
        self.results["forces"] = forces[:n].copy()
        self.results["energies"] = flat[1 + 3 * n_node : 1 + 3 * n_node + n].copy()
        rest = 1 + 4 * n_node
        if self.potential.has_charges:
            self.results["charges"] = flat[rest : rest + n].copy()
            rest += n_node
        if periodic:
            self.results["stress"] = matrix_to_voigt(flat[rest : rest + 9].reshape(3, 3))
            rest += 9
        if self.potential.members:
            self.results["energy_std"] = float(flat[rest])
            self.results["forces_std"] = flat[rest + 1 : rest + 1 + 3 * n_node].reshape(n_node, 3)[:n].copy()

    def _padded(self, positions_a, numbers, cell, pbc, charge: float = 0.0) -> tuple:
        """((floats, ints), n_node, n_edge) of one structure (positions Å, cell rows Å) and its
        padding graph, nodes and edges padded to buckets as :func:`nnpes.data.graph.batch_graphs`
        pads them (padding edges join the last, padding node to itself), packed in two flat
        arrays: floats = positions, cells, total charges (e); ints = species, senders, receivers, shifts, n_node,
        n_edge (see :func:`_graph`). Refuses atoms closer than MIN_DISTANCE_A, as every entry
        point does."""
        n = len(numbers)
        species = self._species(numbers)
        cell = cell if pbc.any() else np.zeros((3, 3))
        nl = neighbor_list(positions_a, cell, pbc, self.potential.cutoff)
        check_min_distance(positions_a, cell, pbc, _SOURCE, nl)
        n_edge_real = len(nl.senders)
        n_node, n_edge = bucket(n + 1), bucket(n_edge_real)  # buckets are even: pairs and reversed pairs
        p, half = n_edge_real // 2, n_edge // 2
        floats = np.zeros(3 * n_node + 20, self.dtype)
        floats[: 3 * n] = positions_a.ravel()
        floats[3 * n_node : 3 * n_node + 9] = np.asarray(cell).ravel()
        floats[3 * n_node + 18] = charge
        ints = np.zeros(n_node + 5 * n_edge + 4, np.int32)
        ints[:n] = species
        e0, e = n_node, n_edge
        ints[e0 : e0 + 2 * e] = n_node - 1  # padding edges: padding node to itself
        # the neighbour list's pairs at the start of the first half, reversed at the start of the second
        to = np.r_[0:p, half : half + p]
        ints[e0 + to] = nl.senders
        ints[e0 + e + to] = nl.receivers
        ints[e0 + 2 * e : e0 + 5 * e].reshape(e, 3)[to] = nl.shifts
        ints[-4:] = n, n_node - n, n_edge_real, n_edge - n_edge_real
        return (floats, ints), n_node, n_edge
