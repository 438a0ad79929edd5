"""Which keys a frame's source offers for labels, and the messages that name them.

A frame remembers the keys its ``ase.Atoms`` offered (:class:`FoundKeys`), so that a missing
label can be reported together with the keys that are there (``REF_energy`` and the like).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nnpes.data.io import Frame

LABELS = ("energy", "forces", "stress")
_GEOMETRY_ARRAYS = ("numbers", "positions")  # atoms.arrays entries that are never labels
_MAX_KEYS_LISTED = 12
_STEMS = {"energy": "energ", "forces": "force"}  # a key containing these may hold the label (REF_force)


@dataclasses.dataclass(frozen=True)
class FoundKeys:
    """The keys a frame (or, merged with ``|``, a file) offers for labels, each sorted.

    Attributes:
        info: per-frame keys of ``atoms.info``.
        per_atom: keys of ``atoms.arrays`` other than numbers and positions.
        calculator: result keys of an attached calculator (extxyz puts ``energy``,
            ``forces`` and ``stress`` there).
    """

    info: tuple[str, ...] = ()
    per_atom: tuple[str, ...] = ()
    calculator: tuple[str, ...] = ()

    def __or__(self, other: FoundKeys) -> FoundKeys:
        merge = lambda a, b: tuple(sorted(set(a) | set(b)))  # noqa: E731
        return FoundKeys(
            merge(self.info, other.info), merge(self.per_atom, other.per_atom), merge(self.calculator, other.calculator)
        )

    def all(self) -> tuple[str, ...]:
        """Every key, of any kind, sorted."""
        return tuple(sorted(set(self.info) | set(self.per_atom) | set(self.calculator)))

    def __str__(self) -> str:
        """E.g. ``info keys [REF_energy], per-atom keys [REF_forces]``."""
        parts = []
        for kind, keys in (("info", self.info), ("per-atom", self.per_atom), ("calculator", self.calculator)):
            if keys:
                shown = ", ".join(keys[:_MAX_KEYS_LISTED])
                more = f", … {len(keys) - _MAX_KEYS_LISTED} more" if len(keys) > _MAX_KEYS_LISTED else ""
                parts.append(f"{kind} keys [{shown}{more}]")
        return ", ".join(parts) or "no info, per-atom or calculator keys"


def label_keys_found(atoms) -> FoundKeys:
    """The keys an ``ase.Atoms`` offers for labels: ``atoms.info`` keys, per-atom
    ``atoms.arrays`` keys other than numbers/positions, and calculator result keys."""
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    return _shared_keys(
        tuple(sorted(map(str, atoms.info))),
        tuple(sorted(str(k) for k in atoms.arrays if k not in _GEOMETRY_ARRAYS)),
        tuple(sorted(map(str, results))),
    )


@functools.lru_cache(maxsize=256)
def _shared_keys(info: tuple[str, ...], per_atom: tuple[str, ...], calculator: tuple[str, ...]) -> FoundKeys:
    """One FoundKeys object per distinct key set (the frames of a file share it)."""
    return FoundKeys(info, per_atom, calculator)


def keys_found(frames: Iterable[Frame]) -> FoundKeys:
    """The union of the keys the frames' sources offered (see :func:`label_keys_found`)."""
    found = FoundKeys()
    for keys in {id(f.found_keys): f.found_keys for f in frames if f.found_keys is not None}.values():
        found = found | keys  # frames of a file mostly share one FoundKeys object
    return found


def label_key_text(label: str, keys: Mapping[str, str]) -> str:
    """How a label is looked up, for messages: ``key 'energy'``, ``key 'stress' or 'virial'``."""
    if label == "stress":
        return f"key '{keys.get('stress', 'stress')}' or '{keys.get('virial', 'virial')}'"
    return f"key '{keys.get(label, label)}'"


def key_hint(labels: Iterable[str], found: FoundKeys | None = None, config: bool = True) -> str:
    """How to point nnpes at other keys for these labels: config keys (``data.energy_key``, also
    a ``nnpes train`` override) and ``nnpes evaluate`` options, with the found keys whose
    names contain a label's stem (``REF_energy``, ``REF_force``) as candidates."""
    labels = list(labels)
    names = [n for label in labels for n in ((label,) if label != "stress" else ("stress", "virial"))]
    options = "/".join(f"--{n}-key" for n in names)
    hint = f"set the keys with {options}"
    if config:
        hint = f"set the keys with {'/'.join(f'data.{n}_key' for n in names)} in a config or override, or {options}"
        hint += " of nnpes evaluate"
    stems = [_STEMS.get(n, n) for n in names]
    candidates = [k for k in (found.all() if found else ()) if any(stem in k.lower() for stem in stems)]
    return f"{hint} (candidates: {', '.join(candidates)})" if candidates else hint


def missing_labels_message(at: str, missing: Sequence[str], keys: Mapping[str, str], found: FoundKeys) -> str:
    """One line: which labels are missing under which keys, the keys there are, how to fix it."""
    listed = ", ".join(f"'{label}' ({label_key_text(label, keys)})" for label in missing)
    verb = "label {} is" if len(missing) == 1 else "labels {} are"
    without = " ".join(f"loss.{label}_weight=0" for label in missing)  # e.g. energy-only data
    return (
        f"{at}: {verb.format(listed)} missing; the frame has {found}; {key_hint(missing, found)}; "
        f"or, to train without {'it' if len(missing) == 1 else 'them'}, {without}"
    )
