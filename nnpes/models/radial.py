"""Radial functions shared by every model family: Bessel basis and a smooth cutoff envelope."""

from __future__ import annotations

import jax.numpy as jnp


def polynomial_envelope(r: jnp.ndarray, cutoff: float, p: int = 6) -> jnp.ndarray:
    """Smooth cutoff u(r/r_c) of Klicpera et al.: 1 at r = 0 and zero, with its first two
    derivatives, at r = r_c (energy and force vanish continuously); exactly 0 beyond r_c.

    Args:
        r: distances, Å (any shape). cutoff: r_c, Å. p: polynomial order (larger is steeper).
    """
    x = r / cutoff
    u = 1.0 - 0.5 * (p + 1) * (p + 2) * x**p + p * (p + 2) * x ** (p + 1) - 0.5 * p * (p + 1) * x ** (p + 2)
    return jnp.where(x < 1.0, u, 0.0)


def bessel_basis(r: jnp.ndarray, cutoff: float, num_basis: int = 8) -> jnp.ndarray:
    """Radial Bessel functions sqrt(2/r_c)·sin(nπr/r_c)/r, n = 1..num_basis.

    Args:
        r: (...,) distances, Å; must be > 0 (padding edges are given a safe length upstream).
    Returns:
        (..., num_basis) in Å^-3/2.
    """
    n = jnp.arange(1, num_basis + 1, dtype=r.dtype)
    r = r[..., None]
    return jnp.sqrt(2.0 / cutoff) * jnp.sin(n * jnp.pi * r / cutoff) / r
