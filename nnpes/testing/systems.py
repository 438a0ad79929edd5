"""Structures and predictions the physics laws of :mod:`nnpes.testing` use: ase.build structures
in a potential's own elements, float64 predictions, finite-difference forces and stress."""

from __future__ import annotations

import dataclasses

import ase
import ase.build
import ase.data
import jax
import numpy as np

import nnpes
from nnpes.data.graph import batch_graphs, frame_to_graph, pad_sizes
from nnpes.data.io import frame_from_atoms
from nnpes.physics import evaluate

SYSTEMS = ("molecule", "crystal")
# One padded shape for every small structure (at r_c = 3 Å ethanol has 58 edges, the cells 48).
SMALL_PADDING = (16, 64, 2)


# -- structures from the potential's own elements -------------------------------------------
def roles(potential: nnpes.Potential) -> dict[str, int]:
    """The atomic numbers playing H, C, O and the fcc metal (Cu) in the test structures."""
    z = sorted(potential.atomic_numbers)
    return {"H": z[0], "C": z[1 % len(z)], "O": z[2 % len(z)], "Cu": z[-1]}


def _with_roles(atoms: ase.Atoms, potential: nnpes.Potential) -> ase.Atoms:
    mapping = {ase.data.atomic_numbers[s]: z for s, z in roles(potential).items()}
    atoms.numbers = [mapping[int(n)] for n in atoms.numbers]
    return atoms


def ethanol(potential: nnpes.Potential, seed: int = 0) -> ase.Atoms:
    """Ethanol, rattled so that no symmetry makes forces vanish."""
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=seed)
    return _with_roles(atoms, potential)


def crystal(potential: nnpes.Potential, seed: int = 1) -> ase.Atoms:
    """A sheared, rattled 4-atom fcc cube ("Cu"₃"O"): edge 3.6 Å, triclinic, two elements."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[0] = 8
    atoms.set_cell(atoms.cell.array + [[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, -0.2, 0.0]], scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return _with_roles(atoms, potential)


def water_box(n: int = 4, spacing: float = 3.1, seed: int = 2) -> ase.Atoms:
    """n³ randomly oriented water molecules on a cubic grid of ``spacing`` Å (3.1 Å: ~1 g/cm³),
    rattled by 0.05 Å: a periodic liquid-like box of 3n³ atoms."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    atoms = ase.Atoms(cell=np.eye(3) * n * spacing, pbc=True)
    for ijk in np.ndindex(n, n, n):
        molecule = ase.build.molecule("H2O")
        rotation = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
        molecule.positions = molecule.positions @ rotation.T + (np.asarray(ijk) + 0.5) * spacing
        atoms += molecule
    atoms.rattle(0.05, seed=seed)
    return atoms


def trimer(potential: nnpes.Potential, distance: float) -> ase.Atoms:
    """C–O bonded along x; an H on the far side of O at `distance` from O (farther from C)."""
    direction = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    atoms = ase.Atoms("COH", positions=[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [1.2, 0.0, 0.0] + distance * direction])
    return _with_roles(atoms, potential)


def make(potential: nnpes.Potential, system: str) -> ase.Atoms:
    return {"molecule": ethanol, "crystal": crystal}[system](potential)


# -- evaluation and comparison --------------------------------------------------------------
@dataclasses.dataclass
class Prediction:
    energy: float
    interaction: float  # energy minus the reference energies, eV
    forces: np.ndarray
    sites: np.ndarray
    stress: np.ndarray | None


def graphs_of(potential: nnpes.Potential, structures) -> list:
    return [frame_to_graph(frame_from_atoms(a), potential.cutoff, potential.atomic_numbers) for a in structures]


def predict(potential: nnpes.Potential, atoms: ase.Atoms) -> Prediction:
    """Energy (eV), forces (eV/Å), site energies and, for 3-D periodic cells, stress (eV/Å³)."""
    sizes = pad_sizes(graphs_of(potential, [atoms]))
    if sizes[0] <= SMALL_PADDING[0] and sizes[1] <= SMALL_PADDING[1]:
        sizes = SMALL_PADDING
    batch = batch_graphs(graphs_of(potential, [atoms]), *sizes, dtype=np.float64)
    out = jax.device_get(evaluate(potential.for_structures([atoms]), batch, compute_stress=True))
    n = len(atoms)
    return Prediction(
        float(out["energy"][0]),
        float(out["interaction_energy"][0]),
        out["forces"][:n],
        out["site_energies"][:n],
        out["stress"][0] if bool(np.all(atoms.pbc)) else None,
    )


def transformed(atoms: ase.Atoms, q: np.ndarray) -> ase.Atoms:
    """Atoms (and cell) mapped by the orthogonal matrix q: r → q r."""
    new = atoms.copy()
    new.set_cell(atoms.cell.array @ q.T, scale_atoms=False)  # a molecule's zero cell stays zero
    new.positions = atoms.positions @ q.T
    return new


def assert_close(actual, expected, atol, what=""):
    diff = np.max(np.abs(np.asarray(actual) - np.asarray(expected)))
    assert diff <= atol, f"{what}: max |difference| {diff:.3e} > {atol:.1e}"


def fd_forces(potential: nnpes.Potential, atoms: ase.Atoms, h: float) -> np.ndarray:
    """−dE/dR by central differences of step h (Å)."""
    fd = np.zeros((len(atoms), 3))
    for i, k in np.ndindex(fd.shape):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd[i, k] = -(predict(potential, plus).energy - predict(potential, minus).energy) / (2 * h)
    return fd


def fd_stress(atoms: ase.Atoms, h: float) -> np.ndarray:
    """(E(+ε) − E(−ε)) / (2 h V) for each strain component, with the atoms' calculator."""
    volume, cell, positions = atoms.get_volume(), atoms.cell.array.copy(), atoms.positions.copy()

    def energy(i, j, step):
        d = np.eye(3) + step * np.outer(np.eye(3)[i], np.eye(3)[j])  # the deformation 1 + step·e_i e_jᵀ
        strained = ase.Atoms(atoms.numbers, positions @ d, cell=cell @ d, pbc=atoms.pbc, calculator=atoms.calc)
        return strained.get_potential_energy()

    fd = np.zeros((3, 3))
    for i, j in np.ndindex(3, 3):
        fd[i, j] = (energy(i, j, h) - energy(i, j, -h)) / (2 * h * volume)
    return fd
