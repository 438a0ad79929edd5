"""Units at the MD interface: Å, eV, amu, fs, K, bar.

Inside jax-md (and ASE) time is in √(amu·Å²/eV) ≈ 10.1805 fs, temperature is kT in eV and
pressure is in eV/Å³; velocities are Å per that time unit.
"""

from __future__ import annotations

import ase.units

FS = ase.units.fs  # one femtosecond in jax-md/ASE time units (1 unit ≈ 10.1805 fs)
KB = ase.units.kB  # eV/K
BAR = ase.units.bar  # eV/Å³
