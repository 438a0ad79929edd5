"""Files → validated frames.

Any file ASE can read becomes a list of :class:`Frame` (positions in Å, energy in eV,
forces in eV/Å, stress in eV/Å³ with ASE's sign and a 3×3 layout). Every frame is checked
on load; a bad one raises :class:`~nnpes.errors.DataError` naming the file and frame.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

from nnpes.errors import DataError, where

LABELS = ("energy", "forces", "stress")
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
    require: Iterable[str] = (),
) -> Frame:
    """Validate one ``ase.Atoms`` into a :class:`Frame`; raise DataError naming ``source``/``index``."""
    at = where(source, index)
    positions, numbers, cell, pbc = _geometry(atoms, at)
    energy = _energy(atoms, energy_key, at)
    forces = _forces(atoms, forces_key, len(numbers), at)
    stress = _stress(atoms, stress_key, virial_key, cell, pbc, at)
    labels = {"energy": energy, "forces": forces, "stress": stress}
    for name in require:
        if name not in labels:
            raise DataError(f"{at}: unknown label '{name}', expected one of {LABELS}")
        if labels[name] is None:
            key = {"energy": energy_key, "forces": forces_key, "stress": f"{stress_key}' or '{virial_key}"}[name]
            raise DataError(f"{at}: label '{name}' (key '{key}') is missing")
    _check_min_distance(positions, cell, pbc, at)
    return Frame(positions, numbers, cell, pbc, energy, forces, stress, source, index)


def _geometry(atoms, at: str):
    """Positions (Å), atomic numbers, cell (rows, Å) and pbc, checked."""
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
    if energy is None:
        return None
    try:
        energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise DataError(f"{at}: energy key '{energy_key}' is not one number: {energy!r}") from None
    if not np.isfinite(energy):
        raise DataError(f"{at}: energy ('{energy_key}') is {energy}")
    return energy


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


def _check_min_distance(positions, cell, pbc, at) -> None:
    from nnpes.data.neighbors import neighbor_list

    if len(positions) < 2 and not pbc.any():
        return
    nl = neighbor_list(positions, cell, pbc, MIN_DISTANCE_A)
    if len(nl.senders):
        i, j = int(nl.receivers[0]), int(nl.senders[0])
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
