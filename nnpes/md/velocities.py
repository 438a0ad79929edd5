"""Thermal bookkeeping shared by both backends: start momenta, degrees of freedom, temperature."""

from __future__ import annotations

import numpy as np

from nnpes.md.units import KB


def initial_momenta(atoms, temperature_k: float, seed: int) -> np.ndarray:
    """(N, 3) momenta, amu·Å/time unit: the structure's own velocities when it has any, else
    Maxwell–Boltzmann at temperature_k with the centre-of-mass momentum removed."""
    if atoms.has("momenta") and np.any(atoms.get_momenta() != 0):
        return np.asarray(atoms.get_momenta(), np.float64)
    masses = atoms.get_masses()[:, None]
    p = np.sqrt(masses * KB * temperature_k) * np.random.default_rng(seed).standard_normal((len(atoms), 3))
    if len(atoms) > 1:
        p -= masses * p.sum(axis=0) / masses.sum()
    return p


def degrees_of_freedom(n_atoms: int) -> int:
    """3N − 3: the centre-of-mass momentum is removed at the start and kept at zero."""
    return max(3 * n_atoms - 3, 1)


def temperature_k(ekin: np.ndarray, n_atoms: int) -> np.ndarray:
    """Kinetic temperature, K, of kinetic energies ekin (eV) over 3N − 3 degrees of freedom."""
    return 2.0 * ekin / (degrees_of_freedom(n_atoms) * KB)
