"""Label magnitudes that no real structure has: the likely unit mistakes (kbar stress,
kcal/mol energies and forces), reported as one warning line per file and label.

The thresholds sit well above anything physical, so real data never trips them:

* stress: a component with |σ| > 1 eV/Å³ (160 GPa, more than at the base of the Earth's
  mantle) looks like kbar (1 eV/Å³ = 1602.18 kbar) or GPa (1 eV/Å³ = 160.218 GPa).
  Reference crystal sets (Si, Cu, Ge, Mo, Ni, HfO2 with strained cells and AIMD) stay under
  0.4 eV/Å³.
* forces: an RMS force component over a file above 10 eV/Å looks like kcal/mol/Å
  (1 eV/Å = 23.06 kcal/mol/Å) or kJ/mol/Å (96.49). Molecular dynamics of molecules at 600 K
  and strained crystals have 0.6–1.6 eV/Å.
* energy: Thomas–Fermi theory overbinds atoms, so its total energy, 0.7687·Z^(7/3) Hartree =
  20.92·Z^(7/3) eV, exceeds in magnitude the all-electron energy of an atom (molecules of
  C, H, N, O reach 0.76 of it; relativity brings heavy atoms closer, Rn to about 0.94). A frame
  whose |E| exceeds 1.5× the sum of the bounds of its atoms cannot be a total energy in eV
  (binding adds a few eV per atom, nothing near the bound): it looks like kcal/mol
  (1 eV = 23.06 kcal/mol) or kJ/mol (96.49). Energies from pseudopotential codes are far
  smaller than the bound, so kcal/mol there stays undetected.

:func:`unit_warnings` returns the lines; :func:`warn_units` issues them as
:class:`~nnpes.errors.LabelWarning`. ``nnpes evaluate`` prints them; training should call
:func:`warn_units` on its frames after reading them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from nnpes.data.io import Frame
from nnpes.errors import LabelWarning, where

EV_PER_A3_IN_GPA = 160.21766
EV_PER_A3_IN_KBAR = 1602.1766
EV_IN_KCAL_PER_MOL = 23.0605
EV_IN_KJ_PER_MOL = 96.4853
STRESS_LIMIT_EV_PER_A3 = 1.0  # 160 GPa
FORCE_RMS_LIMIT_EV_PER_A = 10.0
THOMAS_FERMI_EV = 20.92  # 0.7687 Hartree: |E_TF(Z)| = 0.7687·Z^(7/3) Hartree
ENERGY_BOUND_MARGIN = 1.5


def energy_bound(numbers) -> float:
    """Upper bound on the magnitude of a total energy of these atoms, eV:
    margin × Σ 20.92·Z^(7/3) (Thomas–Fermi)."""
    z = np.asarray(numbers, np.float64)
    return ENERGY_BOUND_MARGIN * THOMAS_FERMI_EV * float(np.sum(z ** (7.0 / 3.0)))


def unit_warnings(frames: Sequence[Frame]) -> list[str]:
    """One line per file and label whose magnitudes look like a unit mistake, naming the file.

    Args:
        frames: frames from one or several files (grouped by ``Frame.source``, file order kept).

    Returns:
        Warning lines (empty for plausible data): stress beyond 1 eV/Å³ (kbar or GPa?), RMS force
        beyond 10 eV/Å (kcal/mol/Å or kJ/mol/Å?), energies beyond the Thomas–Fermi bound of
        their atoms (kcal/mol or kJ/mol?). See the module docstring for the reasoning.
    """
    groups: dict[str | None, list[Frame]] = {}
    for f in frames:
        groups.setdefault(f.source, []).append(f)
    lines = []
    for source, group in groups.items():
        name = where(source, None)
        lines += [
            line
            for line in (_stress_warning(name, group), _force_warning(name, group), _energy_warning(name, group))
            if line
        ]
    return lines


def warn_units(frames: Sequence[Frame]) -> list[str]:
    """Issue each line of :func:`unit_warnings` as a :class:`~nnpes.errors.LabelWarning`; return them."""
    lines = unit_warnings(frames)
    for line in lines:
        warnings.warn(line, LabelWarning, stacklevel=2)
    return lines


def _stress_warning(name: str, frames: Sequence[Frame]) -> str | None:
    worst, at = 0.0, None
    for f in frames:
        if f.stress is not None:
            m = float(np.max(np.abs(f.stress)))
            if m > worst:
                worst, at = m, f.index
    if worst <= STRESS_LIMIT_EV_PER_A3:
        return None
    return (
        f"{name}: stress reaches |σ| = {worst:.4g} eV/Å³ = {worst * EV_PER_A3_IN_GPA:.4g} GPa{_in_frame(at)}, beyond "
        f"the {STRESS_LIMIT_EV_PER_A3:g} eV/Å³ ({STRESS_LIMIT_EV_PER_A3 * EV_PER_A3_IN_GPA:.0f} GPa) of real "
        f"structures: is it in kbar or GPa? stress must be eV/Å³ (1 eV/Å³ = {EV_PER_A3_IN_KBAR:.2f} kbar "
        f"= {EV_PER_A3_IN_GPA:.2f} GPa)"
    )


def _force_warning(name: str, frames: Sequence[Frame]) -> str | None:
    forces = [f.forces.ravel() for f in frames if f.forces is not None]
    if not forces:
        return None
    rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    if not rms > FORCE_RMS_LIMIT_EV_PER_A:
        return None
    return (
        f"{name}: forces have an RMS component of {rms:.4g} eV/Å, beyond the {FORCE_RMS_LIMIT_EV_PER_A:g} eV/Å of "
        f"real structures: are they in kcal/mol/Å or kJ/mol/Å? forces must be eV/Å "
        f"(1 eV/Å = {EV_IN_KCAL_PER_MOL:.2f} kcal/mol/Å = {EV_IN_KJ_PER_MOL:.2f} kJ/mol/Å)"
    )


def _energy_warning(name: str, frames: Sequence[Frame]) -> str | None:
    n_bad, worst, at = 0, 0.0, None
    n_labelled = 0
    for f in frames:
        if f.energy is None:
            continue
        n_labelled += 1
        ratio = abs(f.energy) / energy_bound(f.numbers)
        if ratio > 1.0:
            n_bad += 1
            if ratio > worst:
                worst, at = ratio, f
    if not n_bad:
        return None
    example = f"{'' if at.index is None else f'frame {at.index}: '}{at.energy:.6g} eV for {at.n_atoms} atoms"
    return (
        f"{name}: {n_bad} of {n_labelled} energies exceed in magnitude any total energy of their atoms (e.g. "
        f"{example}, {worst:.3g}× the Thomas–Fermi bound {ENERGY_BOUND_MARGIN:g}·Σ {THOMAS_FERMI_EV:g}·Z^(7/3) eV): "
        f"are they in kcal/mol or kJ/mol? energies must be eV "
        f"(1 eV = {EV_IN_KCAL_PER_MOL:.2f} kcal/mol = {EV_IN_KJ_PER_MOL:.2f} kJ/mol)"
    )


def _in_frame(index: int | None) -> str:
    return "" if index is None else f" (frame {index})"
