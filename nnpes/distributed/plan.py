"""The static plan of a spatial domain decomposition: which device owns which region, how wide
the halo of ghost atoms is, and the fixed capacities of every padded array.

A periodic cell (rows a, b, c, Å) is cut into ``grid = (Dx, Dy, Dz)`` domains along its lattice
vectors: domain (i, j, k) owns the atoms whose fractional coordinates lie in
[i/Dx, (i+1)/Dx) × [j/Dy, (j+1)/Dy) × [k/Dz, (k+1)/Dz). 1-D slabs are ``(D, 1, 1)``; any
factorisation of the device count works, and :func:`choose_grid` picks the one with the least
ghost volume.

**The halo.** Each device evaluates the model on its owned atoms plus every atom within
``halo = hops · cutoff + skin`` of its domain (the ghosts), and sums the site energies of its
owned atoms only. With ``hops`` the model's receptive field in cut-off spheres
(:func:`nnpes.models.receptive_hops`: message-passing layers), every atom an owned site energy
depends on is present, with every edge between them, so owned site energies are exact: the same
numbers as on one device. The alternative (a halo of one cutoff, ghost features exchanged after
every layer, as SevenNet does) sends less and computes less but needs a hook inside each model's
layers; this one works unchanged for every family and for users' own modules.
``benchmarks/distributed.py`` measures the ghost fractions of both halos.
The skin keeps the ghosts and the local pair list valid until an atom has moved skin/2.

Ghosts travel in three stages, one per axis (x, then y with the x ghosts, then z with all):
corner and edge images need no messages of their own. An axis with hops > 1 (a halo wider than a
domain) sends to the 2nd, 3rd… neighbour too; an axis with one domain sends to itself, shifted
by a lattice vector: its periodic images.

Capacities are per device: ``owned`` atoms, ``migrate`` atoms leaving through one face per
rebuild, ``ghosts[a]`` atoms per message along axis a, ``cell_capacity`` atoms per cell of the
local cell list and ``pairs`` directed pairs. They are estimated from the density
(:func:`estimate`); a device reports what it needed, and the run grows them (:func:`grown`).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from nnpes.errors import ConfigError

AXES = ("x", "y", "z")  # mesh axis names, one per lattice vector


class Plan(NamedTuple):
    """Static description of a decomposition (hashable: it keys compiled functions).

    Attributes:
        grid: domains along a, b, c. widths: (3,) distances between opposite faces of the
            cell, Å. cutoff, skin, halo: Å. hops: messages per direction per axis
            (ceil(halo / domain width)). owned, migrate, ghosts, cell_capacity, pairs: capacities
            (see the module docstring). cells: the local cell list's cells per axis.
    """

    grid: tuple[int, int, int]
    widths: tuple[float, float, float]
    cutoff: float
    skin: float
    halo: float
    hops: tuple[int, int, int]
    owned: int
    migrate: int
    ghosts: tuple[int, int, int]
    cells: tuple[int, int, int]
    cell_capacity: int
    pairs: int

    @property
    def devices(self) -> int:
        return int(np.prod(self.grid))

    @property
    def sends(self) -> tuple[tuple[int, int], ...]:
        """(axis, signed hop) of every ghost message, in exchange order."""
        return tuple((a, sign * s) for a in range(3) for s in range(1, self.hops[a] + 1) for sign in (1, -1))

    @property
    def local(self) -> int:
        """Atoms a device evaluates: owned slots plus every ghost slot."""
        return self.owned + sum(self.ghosts[a] for a, _ in self.sends)

    @property
    def extent(self) -> tuple[float, ...]:
        """Fractional extent of a device's local region along each axis (domain + 2 halos)."""
        return tuple(1.0 / d + 2.0 * self.halo / w for d, w in zip(self.grid, self.widths))

    @property
    def list_cutoff(self) -> float:
        return self.cutoff + self.skin

    def capacities(self) -> dict[str, int]:
        """What a device reports it needed, by name (see :data:`STATS`)."""
        return {
            "owned": self.owned, "migrate": self.migrate, "ghosts_x": self.ghosts[0], "ghosts_y": self.ghosts[1],
            "ghosts_z": self.ghosts[2], "cell_capacity": self.cell_capacity, "pairs": self.pairs,
        }  # fmt: skip


STATS = ("owned", "migrate", "ghosts_x", "ghosts_y", "ghosts_z", "cell_capacity", "pairs", "jumped", "migrated")
"""The counts a rebuild reports (maximum over devices): the first seven against the plan's
capacities; ``jumped``: atoms that crossed more than one domain since the last rebuild (an error);
``migrated``: atoms that changed domain (most over one device)."""


def face_widths(cell) -> np.ndarray:
    """(3,) distances between opposite faces of a cell (rows = lattice vectors), Å."""
    return 1.0 / np.linalg.norm(np.linalg.inv(np.asarray(cell, np.float64)).T, axis=1)


def choose_grid(devices: int, widths, halo: float, skin: float) -> tuple[int, int, int]:
    """The factorisation (Dx, Dy, Dz) of ``devices`` with the smallest local region (domain plus
    halos, hence the fewest ghosts) whose domains are at least ``skin`` wide."""
    widths = np.asarray(widths, np.float64)
    best, best_volume = None, math.inf
    for grid in itertools.product(range(1, devices + 1), repeat=3):
        if int(np.prod(grid)) != devices or np.any(widths / np.asarray(grid) < max(skin, 1e-9)):
            continue
        volume = float(np.prod(widths / np.asarray(grid) + 2.0 * halo))
        if volume < best_volume - 1e-9:
            best, best_volume = grid, volume
    if best is None:
        raise ConfigError(
            f"{devices} devices: the cell ({', '.join(f'{w:.2f}' for w in widths)} Å between faces) cannot be cut into "
            f"{devices} domains at least the skin ({skin:g} Å) wide: use fewer devices or a larger cell"
        )
    return best


def estimate(
    cell, n_atoms: int, devices: int, cutoff: float, skin: float, hops_of_model: int,
    multiplier: float = 1.5, grid: tuple[int, int, int] | None = None,
) -> Plan:  # fmt: skip
    """A plan with capacities estimated from the mean density, times ``multiplier``, plus slack
    for the fluctuations of small counts.

    Args:
        cell: (3, 3) lattice rows, Å. n_atoms: atoms in the cell. devices: domains.
        cutoff, skin: Å. hops_of_model: the model's receptive field in cut-off spheres.
        grid: force a grid (default: :func:`choose_grid`).
    """
    widths = face_widths(cell)
    halo = hops_of_model * cutoff + skin
    grid = choose_grid(devices, widths, halo, skin) if grid is None else tuple(int(g) for g in grid)
    if int(np.prod(grid)) != devices:
        raise ConfigError(f"grid {grid} has {int(np.prod(grid))} domains, not {devices}")
    domain = widths / np.asarray(grid)
    hops = tuple(int(math.ceil(halo / w - 1e-12)) for w in domain)
    fractions = np.asarray(grid, np.float64) ** -1
    count = lambda fraction: n_atoms * float(np.prod(fraction))  # noqa: E731  atoms in a fractional box
    slack = lambda x: int(math.ceil(x * multiplier)) + 8  # noqa: E731
    ghosts = []
    for a in range(3):  # a message carries at most one domain's thickness, across the local face so far
        face = np.where(np.arange(3) < a, fractions + 2.0 * halo / widths, fractions)
        face[a] = min(halo, domain[a]) / widths[a]
        ghosts.append(slack(count(face)))
    list_cutoff = cutoff + skin
    cells = tuple(max(1, int(math.floor((d + 2.0 * halo) / list_cutoff))) for d in domain)
    local = count(fractions + 2.0 * halo / widths)
    per_cell = count((domain + 2.0 * halo) / widths / np.asarray(cells))
    density = n_atoms / abs(np.linalg.det(np.asarray(cell, np.float64)))
    neighbours = density * 4.0 / 3.0 * math.pi * list_cutoff**3
    return Plan(
        grid=grid, widths=tuple(float(w) for w in widths), cutoff=float(cutoff), skin=float(skin),
        halo=float(halo), hops=hops, owned=slack(n_atoms / devices), migrate=slack(0.05 * n_atoms / devices),
        ghosts=tuple(ghosts), cells=cells, cell_capacity=slack(2.0 * per_cell), pairs=slack(local * neighbours),
    )  # fmt: skip


def grown(plan: Plan, needed: dict[str, int], multiplier: float = 1.5) -> Plan:
    """The plan with every capacity a device outgrew raised to ``needed × multiplier``."""
    more = lambda name, have: max(have, int(math.ceil(needed[name] * multiplier)) + 1) if needed[name] > have else have  # noqa: E731
    return plan._replace(
        owned=more("owned", plan.owned), migrate=more("migrate", plan.migrate),
        ghosts=tuple(more(f"ghosts_{x}", g) for x, g in zip(AXES, plan.ghosts)),
        cell_capacity=more("cell_capacity", plan.cell_capacity), pairs=more("pairs", plan.pairs),
    )  # fmt: skip


def overflowed(plan: Plan, needed: dict[str, int]) -> list[str]:
    """The capacities of ``plan`` that ``needed`` (a rebuild's counts) exceeds."""
    return [name for name, have in plan.capacities().items() if needed[name] > have]
