"""Tiny instances of every model family, for the physics-law tests (tests/test_physics.py).

Each entry maps a family name of ``nnpes.models.FAMILIES`` to a factory returning a small
model (a few hundred parameters: each distinct model compiles once per padded shape, and the
machine running the suite is small). Adding a family means adding one line here, e.g.::

    "behler_parrinello": lambda: BehlerParrinello(<small hyper-parameters>),

``test_every_family_has_a_tiny_model`` fails until the line exists. The receptive field the
locality law uses is the one the model declares (:func:`nnpes.models.receptive_hops`).
"""

from __future__ import annotations

from nnpes.models import BehlerParrinello, DeepSets, NequIP

TINY_MODELS = {
    "nequip": lambda: NequIP(channels=4, l_max=2, num_layers=2, num_basis=4, radial_features=(8,), readout_features=4),
    "behler_parrinello": lambda: BehlerParrinello(num_radial=4, zetas=(1, 2), hidden_features=(8,)),
    "deepsets": lambda: DeepSets(num_basis=4, embed_features=4, phi_features=(8, 8), rho_features=(8,)),
}

# Cut-off radius of the tiny potentials, Å: below half the 3.6 Å fcc-Cu cube, so the periodic
# test cells are smaller than 2·r_c and atoms see several images of their neighbours.
TINY_CUTOFF = 3.0
