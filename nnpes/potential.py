"""Potential = model + parameters + cutoff + species table + reference energies and scale.

A :class:`Potential` is a pytree (parameters and per-species arrays are leaves; the model,
cutoff and species table are static), so it passes straight through ``jit`` and ``grad``.
Saved models are a directory: ``potential.json`` (everything but the weights) and
``params.msgpack``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nnpes.errors import ModelError

FORMAT_VERSION = 1
_FILLED_FIELDS = ("cutoff", "num_species", "avg_num_neighbors")


class Potential(struct.PyTreeNode):
    """A machine-learned potential ready to evaluate.

    Attributes:
        model: flax module (a family from ``nnpes.models``) producing one output per atom.
        params: its flax variables.
        e0: (S,) reference energy per species, eV (site energy of an isolated atom).
        scale: (S,) energy scale per species, eV: site energy = scale·output + e0.
        atomic_numbers: the species table, sorted atomic numbers (index = species).
        cutoff: Å.
        e0_method: how e0 was obtained ("isolated_atoms", "least_squares", "mean_per_atom", "zero", "given").
    """

    model: nn.Module = struct.field(pytree_node=False)
    params: Any
    e0: jnp.ndarray
    scale: jnp.ndarray
    atomic_numbers: tuple[int, ...] = struct.field(pytree_node=False)
    cutoff: float = struct.field(pytree_node=False)
    e0_method: str = struct.field(pytree_node=False, default="zero")

    @classmethod
    def create(
        cls,
        model: nn.Module,
        atomic_numbers,
        cutoff: float,
        seed: int = 0,
        *,
        e0=None,
        e0_method: str | None = None,
        scale=1.0,
        avg_num_neighbors: float = 1.0,
        params=None,
    ) -> "Potential":
        """A potential with random weights (or the given ``params``).

        Args:
            model: an ``nnpes.models`` module with its hyper-parameters (cutoff, number of
                species and average neighbour count are filled in here).
            atomic_numbers: the elements it knows (any order; stored sorted, duplicates removed).
            cutoff: r_c, Å.
            seed: PRNG seed of the initial weights.
            e0: reference energies, eV: a dict {Z: eV} or a sequence aligned with sorted
                atomic_numbers; zero when None.
            scale: eV, a number or one per species.
            avg_num_neighbors: mean neighbour count of the training data (message normaliser).
            params: flax variables to use instead of a random initialisation (as ``load`` does;
                initialising a large equivariant model eagerly takes seconds).
        """
        numbers = tuple(sorted({int(z) for z in np.asarray(atomic_numbers).reshape(-1)}))
        if not numbers or numbers[0] < 1 or numbers[-1] > 118:
            raise ModelError(f"atomic_numbers must be 1..118, got {list(numbers)}")
        if not cutoff > 0:
            raise ModelError(f"cutoff must be > 0 Å, got {cutoff}")
        model = model.clone(cutoff=float(cutoff), num_species=len(numbers), avg_num_neighbors=float(avg_num_neighbors))
        if params is None:
            params = model.init(jax.random.PRNGKey(seed), *_example_inputs(cutoff))
        s = len(numbers)
        if e0 is None:
            e0_arr, method = np.zeros(s), "zero"
        elif isinstance(e0, dict):
            missing = [z for z in numbers if z not in e0]
            if missing:
                raise ModelError(f"e0 lacks a reference energy for atomic numbers {missing}")
            e0_arr, method = np.array([float(e0[z]) for z in numbers]), "given"
        else:
            e0_arr, method = np.asarray(e0, np.float64).reshape(s), "given"
        scale_arr = np.broadcast_to(np.asarray(scale, np.float64), (s,)).copy()
        return cls(model=model, params=params, e0=jnp.asarray(e0_arr, jnp.float32),
                   scale=jnp.asarray(scale_arr, jnp.float32), atomic_numbers=numbers, cutoff=float(cutoff),
                   e0_method=e0_method or method)

    @property
    def avg_num_neighbors(self) -> float:
        return float(self.model.avg_num_neighbors)

    @property
    def dtype(self):
        return jax.tree.leaves(self.params)[0].dtype

    def site_energies(self, params, vectors, species, senders, receivers, edge_mask):
        """(interaction, reference) site energies, eV, each (N,): scale·model output and E0."""
        out = self.model.apply(params, vectors, species, senders, receivers, edge_mask)
        return self.scale.astype(out.dtype)[species] * out, self.e0.astype(out.dtype)[species]

    def astype(self, dtype) -> "Potential":
        """The same potential with every float array (parameters, e0, scale) cast to dtype."""
        cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
        return jax.tree.map(cast, self)

    def reference_energy(self, numbers) -> float:
        """Σ E0 over the atoms (eV), in float64 on the host."""
        from nnpes.data.graph import species_indices

        return float(np.asarray(self.e0, np.float64)[species_indices(numbers, self.atomic_numbers)].sum())

    # -- persistence -------------------------------------------------------------------------
    def metadata(self) -> dict:
        from nnpes import __version__
        from nnpes.models import family_name

        hyper = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(self.model)
                 if f.name not in ("parent", "name") and f.name not in _FILLED_FIELDS}
        return {
            "format_version": FORMAT_VERSION,
            "nnpes_version": __version__,
            "family": family_name(self.model),
            "hyperparameters": hyper,
            "atomic_numbers": list(self.atomic_numbers),
            "cutoff_a": self.cutoff,
            "avg_num_neighbors": self.avg_num_neighbors,
            "e0_ev": [float(x) for x in np.asarray(self.e0, np.float64)],
            "e0_method": self.e0_method,
            "scale_ev": [float(x) for x in np.asarray(self.scale, np.float64)],
        }

    def save(self, directory: str | os.PathLike) -> None:
        """Write the model directory atomically (a reader never sees a half-written model)."""
        directory = os.path.abspath(os.fspath(directory))
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-model-", dir=parent)
        try:
            with open(os.path.join(tmp, "potential.json"), "w") as f:
                json.dump(self.metadata(), f, indent=2)
            params = jax.tree.map(np.asarray, self.params)
            with open(os.path.join(tmp, "params.msgpack"), "wb") as f:
                f.write(flax.serialization.to_bytes(params))
        except BaseException:  # a failed save leaves the previous model and no half-written copy
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if os.path.exists(directory):
            old = tempfile.mkdtemp(prefix=".old-model-", dir=parent)
            os.replace(directory, os.path.join(old, "m"))
        os.replace(tmp, directory)
        if old:
            shutil.rmtree(old, ignore_errors=True)


def _example_inputs(cutoff: float):
    vectors = jnp.asarray([[0.5 * cutoff, 0.0, 0.0], [-0.5 * cutoff, 0.0, 0.0]], jnp.float32)
    species = jnp.zeros(2, jnp.int32)
    senders = jnp.asarray([1, 0], jnp.int32)
    receivers = jnp.asarray([0, 1], jnp.int32)
    return vectors, species, senders, receivers, jnp.ones(2, bool)


def load(directory: str | os.PathLike) -> Potential:
    """Load a model directory written by :meth:`Potential.save` (or a run directory that holds
    one in ``model/``)."""
    from nnpes.models import FAMILIES

    directory = os.fspath(directory)
    if os.path.isdir(os.path.join(directory, "model")) and not os.path.exists(os.path.join(directory, "potential.json")):
        directory = os.path.join(directory, "model")
    meta_path = os.path.join(directory, "potential.json")
    if not os.path.isfile(meta_path):
        raise ModelError(f"{directory}: not a model directory (no potential.json)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ModelError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{meta_path}: format_version {meta.get('format_version')!r}; this nnpes reads {FORMAT_VERSION}")
    family = meta.get("family")
    if family not in FAMILIES:
        raise ModelError(f"{meta_path}: unknown model family {family!r}, expected one of {sorted(FAMILIES)}")
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["hyperparameters"].items()}
    params_path = os.path.join(directory, "params.msgpack")
    try:
        with open(params_path, "rb") as f:
            params = flax.serialization.msgpack_restore(f.read())
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{params_path}: cannot restore parameters ({type(e).__name__}: {e})") from None
    if not isinstance(params, dict) or "params" not in params:
        raise ModelError(f"{params_path}: not a flax parameter file")
    try:
        model = FAMILIES[family](**hyper)
    except TypeError as e:
        raise ModelError(f"{meta_path}: hyper-parameters do not fit family {family!r} ({e})") from None
    return Potential.create(model, meta["atomic_numbers"], meta["cutoff_a"], e0=meta["e0_ev"],
                            e0_method=meta["e0_method"], scale=meta["scale_ev"],
                            avg_num_neighbors=meta["avg_num_neighbors"], params=jax.tree.map(jnp.asarray, params))
