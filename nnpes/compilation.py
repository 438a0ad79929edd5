"""The one compilation counter.

Each jitted function of nnpes calls :func:`traced` with its name inside the traced body: the
Python body runs only while JAX traces, so each increment is one XLA compilation. Callers read
:func:`count` before and after a piece of work and report the difference.
"""

from __future__ import annotations

import collections

_COUNTS: collections.Counter[str] = collections.Counter()


def traced(name: str) -> None:
    """Record one trace (= one compilation) of the function called ``name``."""
    _COUNTS[name] += 1


def count(*names: str) -> int:
    """Compilations so far of the named functions (all of them when no name is given)."""
    if not names:
        return sum(_COUNTS.values())
    return sum(_COUNTS[n] for n in names)
