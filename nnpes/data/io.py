"""Files → validated frames.

Any file ASE can read becomes a list of :class:`Frame` (positions in Å, energy in eV,
forces in eV/Å, stress in eV/Å³ with ASE's sign and a 3×3 layout). Every frame is checked
on load; a bad one raises :class:`~nnpes.errors.DataError` naming the file and frame. A frame
remembers which keys its source offered (:class:`FoundKeys`), so that a missing label can be
reported together with the keys that are there (``REF_energy`` and the like; see
:mod:`nnpes.data.label_keys`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

from nnpes.data.label_keys import (  # noqa: F401  (re-exported: the label-key part of this module's API)
    LABELS,
    FoundKeys,
    key_hint,
    keys_found,
    label_key_text,
    label_keys_found,
    missing_labels_message,
)
from nnpes.errors import DataError, where

MIN_DISTANCE_A = 0.1  # atoms closer than this are a broken frame, not physics


@dataclasses.dataclass(frozen=True)
class Frame:
    """One labelled structure.

    Attributes:
        positions: (N, 3) Cartesian positions, Å.
        numbers: (N,) atomic numbers.
        cell: (3, 3) lattice vectors as rows, Å (zeros for a molecule).
        pbc: (3,) periodic directions.
        energy: total energy, eV, or None.
        forces: (N, 3) forces, eV/Å, or None.
        stress: (3, 3) stress, eV/Å³, ASE sign (positive = tensile), or None.
        source, index: file and frame index, for error messages.
        found_keys: the keys its ``ase.Atoms`` offered for labels (:func:`frame_from_atoms` sets
            it; None for a Frame constructed directly).
        charge: total charge of the structure, e (``info["charge"]``; 0 when absent), which a
            model's latent charges conserve.
        dipole: (3,) dipole moment, e·Å, or None: an optional label for the latent charges
            (``loss.dipole_weight``), compared with Σ q_i R_i of neutral molecules.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    source: str | None = None
    index: int | None = None
    found_keys: FoundKeys | None = None
    charge: float = 0.0
    dipole: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def periodic(self) -> bool:
        return bool(np.any(self.pbc))

    def to_atoms(self):
        """The frame as an ``ase.Atoms`` (labels attached as a SinglePointCalculator)."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            results["stress"] = matrix_to_voigt(self.stress)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


def matrix_to_voigt(stress) -> np.ndarray:
    """3×3 → ASE Voigt order (xx, yy, zz, yz, xz, xy), float64."""
    s = np.asarray(stress, np.float64)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def voigt_to_matrix(stress: np.ndarray) -> np.ndarray:
    """ASE Voigt (xx, yy, zz, yz, xz, xy) or a 9-vector/3×3 → symmetric 3×3."""
    s = np.asarray(stress, dtype=np.float64).reshape(-1)
    if s.size == 6:
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.size == 9:
        return s.reshape(3, 3)
    raise ValueError(f"stress has {s.size} components; expected 6 (Voigt) or 9")


def _calc_result(atoms, key: str):
    calc = getattr(atoms, "calc", None)
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def _lookup(atoms, key: str, per_atom: bool):
    """A label from calculator results, then ``arrays`` (per atom) or ``info``."""
    value = _calc_result(atoms, key)
    if value is None:
        value = atoms.arrays.get(key) if per_atom else atoms.info.get(key)
    if value is None:  # extxyz sometimes files a per-frame key under the other dict
        value = atoms.info.get(key) if per_atom else atoms.arrays.get(key)
    return value


def frame_from_atoms(
    atoms,
    *,
    source: str | None = None,
    index: int | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    virial_key: str = "virial",
    dipole_key: str = "dipole",
    require: Iterable[str] = (),
) -> Frame:
    """Validate one ``ase.Atoms`` into a :class:`Frame`; raise DataError naming ``source``/``index``."""
    at = where(source, index)
    positions, numbers, cell, pbc = geometry_from_atoms(atoms, at)
    energy = _energy(atoms, energy_key, at)
    forces = _forces(atoms, forces_key, len(numbers), at)
    stress = _stress(atoms, stress_key, virial_key, cell, pbc, at)
    labels = {"energy": energy, "forces": forces, "stress": stress}
    unknown = [name for name in require if name not in labels]
    if unknown:
        raise DataError(f"{at}: unknown label '{unknown[0]}', expected one of {LABELS}")
    found = label_keys_found(atoms)
    missing = [name for name in LABELS if name in require and labels[name] is None]
    if missing:
        keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key, "virial": virial_key}
        raise DataError(missing_labels_message(at, missing, keys, found))
    check_min_distance(positions, cell, pbc, at)
    charge = total_charge(atoms, at)
    dipole = _dipole(atoms, dipole_key, at)
    return Frame(positions, numbers, cell, pbc, energy, forces, stress, source, index, found, charge, dipole)


def _dipole(atoms, dipole_key: str, at: str) -> np.ndarray | None:
    """The optional dipole label, e·Å ((3,) finite), of a frame (``info[dipole_key]``)."""
    value = atoms.info.get(dipole_key)
    if value is None:
        return None
    dipole = np.asarray(value, dtype=np.float64).reshape(-1)
    if dipole.shape != (3,) or not np.all(np.isfinite(dipole)):
        raise DataError(f"{at}: dipole ('{dipole_key}') must be 3 finite numbers (e·Å), got {value!r}")
    return dipole


def total_charge(atoms, at: str) -> float:
    """The structure's total charge, e, from ``atoms.info["charge"]`` (0 when absent); a value
    that is not one finite number is a DataError naming ``at``."""
    return _one_number(atoms.info.get("charge", 0.0), "info['charge']", at)


def _one_number(value, what: str, at: str) -> float:
    """``value`` as one finite float; a DataError naming ``at`` and ``what`` otherwise."""
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise DataError(f"{at}: {what} is not one number: {value!r}") from None
    if not np.isfinite(number):
        raise DataError(f"{at}: {what} is {number}")
    return number


def geometry_from_atoms(atoms, at: str):
    """(positions (N, 3) Å, atomic numbers (N,), cell (3, 3) rows Å, pbc (3,)) of an
    ``ase.Atoms``, checked (no atoms, NaN, atomic numbers, singular cells) with a DataError
    naming ``at``; :func:`frame_from_atoms` without the labels and the distance check."""
    if len(atoms) == 0:
        raise DataError(f"{at}: frame has no atoms")
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    numbers = np.asarray(atoms.get_atomic_numbers(), dtype=np.int32)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise DataError(f"{at}: positions contain NaN or inf")
    if np.any(numbers <= 0) or np.any(numbers > 118):
        raise DataError(f"{at}: atomic numbers must lie in 1..118, got {sorted(set(numbers.tolist()))}")
    if pbc.any():
        if not np.all(np.isfinite(cell)):
            raise DataError(f"{at}: cell contains NaN or inf")
        periodic_vectors = cell[pbc]
        gram = periodic_vectors @ periodic_vectors.T
        if abs(np.linalg.det(gram)) < 1e-6:
            raise DataError(f"{at}: periodic frame (pbc={pbc.tolist()}) has a singular cell {cell.tolist()}")
        if pbc.all() and abs(np.linalg.det(cell)) < 1e-6:
            raise DataError(f"{at}: periodic frame has a singular cell (volume 0 Å^3)")
    return positions, numbers, cell, pbc


def _energy(atoms, energy_key: str, at: str) -> float | None:
    energy = _lookup(atoms, energy_key, per_atom=False)
    return None if energy is None else _one_number(energy, f"energy ('{energy_key}')", at)


def _forces(atoms, forces_key: str, n: int, at: str) -> np.ndarray | None:
    forces = _lookup(atoms, forces_key, per_atom=True)
    if forces is None:
        return None
    forces = np.asarray(forces, dtype=np.float64)
    if forces.shape != (n, 3):
        raise DataError(f"{at}: forces ('{forces_key}') have shape {forces.shape}, expected ({n}, 3)")
    if not np.all(np.isfinite(forces)):
        raise DataError(f"{at}: forces ('{forces_key}') contain NaN or inf")
    return forces


def _stress(atoms, stress_key: str, virial_key: str, cell, pbc, at: str) -> np.ndarray | None:
    """Stress, eV/Å³ (ASE sign), 3×3: from the stress key, else from the virial (−virial/V)."""
    stress = _lookup(atoms, stress_key, per_atom=False)
    key_used = stress_key
    if stress is None:
        virial = _lookup(atoms, virial_key, per_atom=False)
        if virial is None:
            return None
        if not pbc.all():
            raise DataError(f"{at}: virial ('{virial_key}') given for a non-periodic frame")
        try:
            virial = voigt_to_matrix(virial)
        except ValueError as e:
            raise DataError(f"{at}: virial ('{virial_key}'): {e}") from None
        stress = -virial / abs(np.linalg.det(cell))  # ASE sign: stress = -virial / V
        key_used = virial_key
    try:
        stress = voigt_to_matrix(stress)
    except ValueError as e:
        raise DataError(f"{at}: stress ('{key_used}'): {e}") from None
    if not np.all(np.isfinite(stress)):
        raise DataError(f"{at}: stress ('{key_used}') contains NaN or inf")
    if not pbc.all():
        raise DataError(f"{at}: stress ('{key_used}') given for a frame that is not periodic in 3 directions")
    return stress


def check_min_distance(positions, cell, pbc, at, nl=None) -> None:
    """DataError naming ``at`` when two atoms (or an atom and a periodic image) are closer than
    MIN_DISTANCE_A. ``nl``: a neighbour list of these positions with any cutoff ≥ MIN_DISTANCE_A
    (:class:`nnpes.data.neighbors.NeighborList`), to search instead of building one."""
    from nnpes.data.neighbors import neighbor_list

    if nl is None:
        if len(positions) < 2 and not pbc.any():
            return
        nl = neighbor_list(positions, cell, pbc, MIN_DISTANCE_A)
        close = np.arange(len(nl.senders))
    else:
        vectors = positions[nl.senders] - positions[nl.receivers] + nl.shifts @ np.asarray(cell)
        close = np.flatnonzero(np.einsum("ei,ei->e", vectors, vectors) < MIN_DISTANCE_A**2)
    if len(close):
        i, j = int(nl.receivers[close[0]]), int(nl.senders[close[0]])
        raise DataError(f"{at}: atoms {i} and {j} are closer than {MIN_DISTANCE_A} Å")


def read_frames(
    path: str | os.PathLike,
    *,
    index: str | int | slice = ":",
    format: str | None = None,
    require: Sequence[str] = (),
    **label_keys: str,
) -> list[Frame]:
    """Read every frame of an ASE-readable file (extxyz first) and validate it.

    Args:
        path: the file.
        index: ASE index of the frames to read (":" for all, -1 for the last).
        format: ASE format name, guessed from the file name when None.
        require: labels every frame must carry, from ("energy", "forces", "stress").
        **label_keys: ``energy_key``, ``forces_key``, ``stress_key``, ``virial_key`` of
            :func:`frame_from_atoms`: where labels live; each is looked up in the calculator
            results first, then in ``atoms.info``/``atoms.arrays``. Units: eV, eV/Å, eV/Å³
            (ASE sign), virial eV (converted as stress = −virial/V).

    Returns:
        The frames, in file order.

    Raises:
        DataError: one line naming the file and frame for a missing file, an empty file or
            any invalid frame.
    """
    import ase.io

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        images = ase.io.read(path, index=index, format=format)
    except Exception as e:  # ASE raises many types; the user needs the file and the reason
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot be read by ASE: {msg}") from None
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise DataError(f"{path}: file holds no frames")
    kwargs = dict(label_keys, require=require)
    offsets = [index] if isinstance(index, int) else range(len(images))
    return [frame_from_atoms(a, source=path, index=i, **kwargs) for i, a in zip(offsets, images)]
