"""Small building blocks shared by the families."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax


class MLP(nn.Module):
    """Dense layers with ``activation`` between them (none after the last).

    ``layer_prefix`` names the parameters ``<prefix>_<i>``; it is a field so that each family
    keeps the parameter names (and hence saved weights and seeded initialisations) it has
    always had.
    """

    features: tuple[int, ...]
    use_bias: bool = True
    activation: Callable = jax.nn.silu
    layer_prefix: str = "dense"

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.features):
            x = nn.Dense(width, use_bias=self.use_bias, name=f"{self.layer_prefix}_{i}")(x)
            if i < len(self.features) - 1:
                x = self.activation(x)
        return x
