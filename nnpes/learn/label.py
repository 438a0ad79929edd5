"""Labels from a reference method: an ASE calculator named in the config.

``label.calculator`` is ``tblite`` (GFN2-xTB by default; the optional ``tblite`` package,
``pip install "nnpes[learn]"``), ``emt`` (ASE's effective-medium theory for fcc metals) or
``module:attribute``: a user's calculator instance, or a class or function returning one
(called with ``label.kwargs``), imported with the current directory and the config's directory
on the import path. A frame the calculator fails on (it raises, or gives non-finite or
implausibly large forces) is one warning line and is skipped, never silently.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from nnpes.errors import ConfigError


class LabellingWarning(UserWarning):
    """A frame the reference calculator could not label (it is skipped)."""


def make_calculator(spec: str, kwargs: dict | None = None, search_path: Sequence[str] = ()):
    """The ASE calculator ``spec`` names (see the module docstring), built with ``kwargs``.

    Raises:
        ConfigError: one line naming ``label.calculator``: package missing, module or attribute
            not found, or not an ASE calculator.
    """
    kwargs = dict(kwargs or {})
    if spec == "tblite":
        try:
            from tblite.ase import TBLite
        except ImportError:
            raise ConfigError(
                'label.calculator: tblite is not installed: pip install "nnpes[learn]" (or pip install tblite)'
            ) from None
        return TBLite(**{"method": "GFN2-xTB", "verbosity": 0, **kwargs})
    if spec == "emt":
        from ase.calculators.emt import EMT

        return EMT(**kwargs)
    return _user_calculator(spec, kwargs, search_path)


def _user_calculator(spec: str, kwargs: dict, search_path: Sequence[str]):
    module_name, attribute = spec.split(":", 1)
    added = [p for p in (os.getcwd(), *search_path) if p not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"label.calculator: cannot import module {module_name!r} ({e})") from None
    finally:
        for p in added:
            sys.path.remove(p)
    target = getattr(module, attribute, None)
    if target is None:
        raise ConfigError(f"label.calculator: module {module_name!r} has no attribute {attribute!r}")
    calc = target if _is_calculator(target) else target(**kwargs) if callable(target) else None
    if not _is_calculator(calc):
        raise ConfigError(
            f"label.calculator: {spec} is not an ASE calculator nor returns one (got {type(calc).__name__})"
        )
    return calc


def _is_calculator(obj) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "get_potential_energy", None))


def label(
    structures: Sequence,
    calculator,
    names: Sequence[str],
    max_force_ev_a: float = 50.0,
    on_label: Callable[[int, object], None] | None = None,
) -> list:
    """Energy (eV), forces (eV/Å) and, for cells periodic in all directions when the calculator
    gives it, stress (eV/Å³) of each structure.

    Args:
        structures: ``ase.Atoms`` (positions, numbers, cell, pbc are used; info is kept).
        calculator: an ASE calculator (:func:`make_calculator`).
        names: one per structure, for warnings (e.g. "round_001/md/T600_0.xyz frame 12").
        max_force_ev_a: a label with a force component larger than this is skipped (a structure
            far from anything worth fitting, e.g. atoms pushed into each other).
        on_label: called with (index, labelled atoms) as each one is done (to save it at once).

    Returns:
        The labelled structures (``ase.Atoms`` with a SinglePointCalculator), in order; a failed
        one is left out after one :class:`LabellingWarning` line.
    """
    out = []
    for i, (atoms, name) in enumerate(zip(structures, names)):
        labelled, problem = _label_one(atoms, calculator, max_force_ev_a)
        if problem is not None:
            warnings.warn(f"label: {name}: {problem}; frame skipped", LabellingWarning, stacklevel=2)
            continue
        out.append(labelled)
        if on_label is not None:
            on_label(i, labelled)
    return out


def _label_one(atoms, calculator, max_force_ev_a: float):
    """(labelled atoms, None), or (None, what went wrong in one line)."""
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator

    work = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = calculator
    try:
        energy = float(work.get_potential_energy())
        forces = np.asarray(work.get_forces(), np.float64)
        stress = None
        if np.all(work.pbc) and "stress" in getattr(calculator, "implemented_properties", ()):
            stress = np.asarray(work.get_stress(), np.float64)
    except Exception as e:  # noqa: BLE001 - any failure of a user's calculator skips the frame
        _reset(calculator)
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"the calculator raised {type(e).__name__}" + (f": {text}" if text else "")
    if not np.isfinite(energy) or forces.shape != (len(work), 3) or not np.all(np.isfinite(forces)):
        return None, f"non-finite or malformed energy/forces (energy {energy}, forces of shape {forces.shape})"
    if np.max(np.abs(forces)) > max_force_ev_a:
        return None, f"a force component of {np.max(np.abs(forces)):.3g} eV/Å is above label.max_force_ev_a"
    results = {"energy": energy, "forces": forces}
    if stress is not None and np.all(np.isfinite(stress)):
        results["stress"] = stress
    out = work.copy()
    out.info.update(atoms.info)
    out.calc = SinglePointCalculator(out, **results)
    return out, None


def _reset(calculator) -> None:
    """Forget a failed calculation (a half-converged wavefunction must not seed the next frame)."""
    reset = getattr(calculator, "reset", None)
    if callable(reset):
        try:
            reset()
        except Exception:  # noqa: BLE001 - a broken reset must not hide the labelling warning
            pass
