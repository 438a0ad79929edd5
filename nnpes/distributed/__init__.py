"""Spatial domain decomposition over a device mesh (``jax.sharding``, ``shard_map``, ``ppermute``).

- :func:`decompose`: a periodic structure spread over N devices, halo lists built.
- :func:`energy_forces_stress`: energy, forces and stress of a structure over N devices.
- :func:`simulation`, :func:`run`: NVE / NVT (Langevin) MD over N devices (what
  ``nnpes md --devices N`` calls).

Modules: ``plan`` (the static decomposition and its capacities), ``halo`` (what one device does
inside ``shard_map``), ``domains`` (layout and the energy function), ``md`` (the run loop).
"""

from nnpes.distributed.domains import Domains, decompose, energy_forces_stress
from nnpes.distributed.plan import Plan, choose_grid

__all__ = ["Domains", "Plan", "choose_grid", "decompose", "energy_forces_stress"]
