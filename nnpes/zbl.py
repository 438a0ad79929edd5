"""Ziegler–Biersack–Littmark (ZBL) screened nuclear repulsion, as a term of the total energy.

At short range two nuclei repel as bare charges screened by their electrons. ZBL's universal
screened Coulomb potential (J. F. Ziegler, J. P. Biersack and U. Littmark, *The Stopping and
Range of Ions in Solids*, Pergamon, New York, 1985) describes this for any pair of elements:

    E_pair(r) = k_e Z_i Z_j / r · φ(r / a),          k_e = e²/(4πε₀) = 14.3996454784 eV·Å,
    a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),
    φ(x) = 0.18175 e^{−3.19980 x} + 0.50986 e^{−0.94229 x} + 0.28022 e^{−0.40290 x}
           + 0.02817 e^{−0.20162 x}.

(The coefficients of φ sum to 1, so E_pair → k_e Z_i Z_j / r, the bare Coulomb repulsion, as
r → 0.) A network trained on equilibrium data knows nothing of such close encounters; adding
this term makes them repulsive, e.g. in radiation-damage or high-temperature MD.

:class:`ZBL` multiplies E_pair by a switch s(r) that is exactly 1 for r ≤ r_on, exactly 0 for
r ≥ r_off and C² in between (value, first and second derivative continuous), so energy, forces
and their derivatives stay continuous. The term reads the potential's edges, so r_off must not
exceed the potential's cutoff. Forces and stress come from the one energy function of
:mod:`nnpes.physics`, like every other term's.

Usage::

    from nnpes.zbl import ZBL
    pot = nnpes.Potential.create(model, [1, 8], cutoff=5.0)
    pot = pot.replace(terms=(ZBL.for_potential(pot.atomic_numbers, pot.cutoff, outer_radius=2.0),))
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct

from nnpes.errors import ModelError
from nnpes.terms import Term, TermInputs, register_term

COULOMB_EV_A = 14.3996454784  # k_e = e²/(4πε₀), eV·Å
SCREENING_LENGTH_A = 0.46850  # the numerator of ZBL's universal screening length a, Å
SCREENING_EXPONENT = 0.23  # a ∝ 1 / (Z_i^0.23 + Z_j^0.23)
PHI_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)  # of φ(x) = Σ c_k exp(−b_k x); Σ c_k = 1
PHI_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)  # b_k


def screening_length(z_i, z_j):
    """ZBL's universal screening length a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23), Å.

    Args:
        z_i, z_j: atomic numbers (numbers or arrays that broadcast; floats are accepted).
    """
    z_i, z_j = jnp.asarray(z_i), jnp.asarray(z_j)
    return SCREENING_LENGTH_A / (z_i**SCREENING_EXPONENT + z_j**SCREENING_EXPONENT)


def screening_function(x):
    """ZBL's universal screening function φ(x) = Σ_k c_k exp(−b_k x), dimensionless; φ(0) = 1.

    Args:
        x: reduced distance r / a (any shape).
    """
    x = jnp.asarray(x)
    return sum(c * jnp.exp(-b * x) for c, b in zip(PHI_COEFFICIENTS, PHI_EXPONENTS))


def zbl_pair_energy(r, z_i, z_j):
    """ZBL pair energy without switch, eV: k_e Z_i Z_j / r · φ(r / a).

    Args:
        r: distances, Å (any shape; must be > 0). z_i, z_j: atomic numbers that broadcast with r.

    Returns:
        Array of the broadcast shape, in the floating dtype of ``r`` (float32 for Python numbers
        unless x64 is on).
    """
    r = jnp.asarray(r)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(jnp.result_type(float))
    z_i = jnp.asarray(z_i, r.dtype)
    z_j = jnp.asarray(z_j, r.dtype)
    a = screening_length(z_i, z_j)
    return COULOMB_EV_A * z_i * z_j / r * screening_function(r / a)


def smooth_switch(r, inner_radius: float, outer_radius: float):
    """s(r) = 1 − (10t³ − 15t⁴ + 6t⁵), t = (r − r_on) / (r_off − r_on) clipped to [0, 1].

    Exactly 1 for r ≤ r_on and exactly 0 for r ≥ r_off; s′ and s″ vanish at both ends, so a
    switched energy is C² (continuous value, force and force derivative).

    Args:
        r: distances, Å (any shape). inner_radius: r_on, Å. outer_radius: r_off > r_on, Å.
    """
    t = jnp.clip((r - inner_radius) / (outer_radius - inner_radius), 0.0, 1.0)
    s = 1.0 - t**3 * (10.0 + t * (-15.0 + 6.0 * t))
    return jnp.where(r < outer_radius, s, 0.0)


def _validated_numbers(atomic_numbers) -> tuple[int, ...]:
    numbers = tuple(int(z) for z in np.asarray(atomic_numbers).reshape(-1))
    if not numbers or list(numbers) != sorted(set(numbers)) or numbers[0] < 1 or numbers[-1] > 118:
        raise ModelError(f"ZBL atomic_numbers must be the potential's sorted species table (1..118), got {numbers}")
    return numbers


@register_term
class ZBL(Term):
    """ZBL screened nuclear repulsion between all pairs of atoms closer than ``outer_radius``.

    Site energy ε_i = ½ Σ_j E_pair(r_ij) s(r_ij), eV, over the potential's edges (each pair is
    there in both directions, so every pair counts once in the total): see the module docstring.

    Attributes (all static settings):
        atomic_numbers: the potential's species table, sorted (species index → Z). The term reads
            ``TermInputs.species``, which holds species indices, and maps them to Z with it.
        inner_radius: r_on, Å: the full ZBL energy below it (0 ≤ r_on < r_off).
        outer_radius: r_off, Å: nothing from r_off on; must be ≤ the potential's cutoff (pairs
            beyond the cutoff are not edges, so a larger r_off would cut the energy off abruptly).
    """

    kind = "zbl"
    atomic_numbers: tuple[int, ...] = struct.field(pytree_node=False)
    inner_radius: float = struct.field(pytree_node=False, default=1.0)
    outer_radius: float = struct.field(pytree_node=False, default=2.0)

    def __post_init__(self):
        # frozen dataclass: normalise (a JSON list → tuple, numpy ints → int) with object.__setattr__
        object.__setattr__(self, "atomic_numbers", _validated_numbers(self.atomic_numbers))
        object.__setattr__(self, "inner_radius", float(self.inner_radius))
        object.__setattr__(self, "outer_radius", float(self.outer_radius))
        if not 0.0 <= self.inner_radius < self.outer_radius:
            raise ModelError(
                f"ZBL radii must satisfy 0 <= inner_radius < outer_radius, got {self.inner_radius} and "
                f"{self.outer_radius} Å"
            )

    @classmethod
    def for_potential(
        cls,
        atomic_numbers,
        cutoff: float | None = None,
        *,
        outer_radius: float = 2.0,
        inner_radius: float | None = None,
    ) -> ZBL:
        """The term for a potential with this species table (any order; sorted, duplicates dropped).

        Args:
            atomic_numbers: the elements of the potential (``Potential.atomic_numbers``).
            cutoff: the potential's cutoff, Å; when given, ``outer_radius`` must not exceed it.
            outer_radius: r_off, Å (default 2.0 Å).
            inner_radius: r_on, Å (default 0.5·r_off).
        """
        numbers = sorted({int(z) for z in np.asarray(atomic_numbers).reshape(-1)})
        if inner_radius is None:
            inner_radius = 0.5 * outer_radius
        if cutoff is not None and outer_radius > cutoff:
            raise ModelError(f"ZBL outer_radius {outer_radius} Å exceeds the potential's cutoff {cutoff} Å")
        return cls(atomic_numbers=tuple(numbers), inner_radius=inner_radius, outer_radius=outer_radius)

    def pair_energies(self, inputs: TermInputs) -> jnp.ndarray:
        """(E,) switched ZBL energy of every directed edge, eV (0 on masked edges and r ≥ r_off)."""
        dtype = inputs.vectors.dtype
        # masked edges already hold a harmless non-zero vector (physics.safe_edges): r > 0 everywhere
        r = jnp.linalg.norm(inputs.vectors, axis=-1)
        z = jnp.asarray(self.atomic_numbers, dtype)
        z_i, z_j = z[inputs.species[inputs.receivers]], z[inputs.species[inputs.senders]]
        pair = zbl_pair_energy(r, z_i, z_j) * smooth_switch(r, self.inner_radius, self.outer_radius)
        return jnp.where(inputs.edge_mask, pair, 0.0)

    def site_energies(self, inputs: TermInputs) -> jnp.ndarray:
        """(N,) site energies ε_i = ½ Σ_{edges j→i} E_pair(r_ij) s(r_ij), eV, dtype of the vectors."""
        pair = self.pair_energies(inputs)
        return 0.5 * jnp.zeros(inputs.species.shape[0], pair.dtype).at[inputs.receivers].add(pair)

    def to_json(self) -> dict[str, Any]:
        return {
            "atomic_numbers": list(self.atomic_numbers),
            "inner_radius": self.inner_radius,
            "outer_radius": self.outer_radius,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ZBL:
        unknown = sorted(set(data) - {"atomic_numbers", "inner_radius", "outer_radius"})
        if unknown or "atomic_numbers" not in data:
            raise ModelError(f"ZBL term: unknown keys {unknown} or no atomic_numbers in {sorted(data)}")
        return cls(**data)
