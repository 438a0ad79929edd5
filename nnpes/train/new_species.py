"""A trained potential grown to know more elements (fine-tuning on data with new elements).

The species table stays the sorted atomic numbers, now of the union of the base's elements and
the new ones, so an old element's index may move (H, O + C → H, C, O moves O from 1 to 2).
Every parameter whose shape does not depend on the number of species is copied. A parameter
with a species axis (length S_old in the base, S_new now) gets each old element's row at its
new index and freshly initialised rows for the new elements. An axis whose length grows with
the species count in a family's own layout (Behler–Parrinello's element-resolved descriptors)
is mapped by the family's ``feature_positions``; any other growing axis is refused. E0, the
energy scale and the model's fitted constants follow the same map, so the grown potential gives
the base's energies and forces on every structure made of the base's elements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnpes.data.io import Frame
from nnpes.errors import ModelError
from nnpes.potential import Potential, example_inputs, fill_model, num_outputs_for


def grow_species(base: Potential, numbers: Sequence[int], seed: int, frames: Sequence[Frame]) -> tuple[Potential, Any]:
    """The base potential with every element of ``numbers`` added to its species table.

    Args:
        base: the trained potential (one network, not an ensemble).
        numbers: atomic numbers the new data holds (the base's own may be absent: they are kept).
        seed: PRNG seed of the new elements' fresh parameter rows.
        frames: training frames, for the fitted constants (e.g. descriptor statistics) of new elements.
    Returns:
        (potential, added): ``added`` is None when no element is new, else a pytree like the
        parameters with a bool array per leaf, True on its new entries.
        New elements' E0 are 0 eV (the caller fits them) and their scale is the base's mean scale, eV.
    Raises:
        ModelError: a parameter grows along an axis that is neither a species axis nor one the family maps.
    """
    table = tuple(sorted(set(base.atomic_numbers) | {int(z) for z in numbers}))
    if table == base.atomic_numbers:
        return base, None
    if base.members:
        raise ModelError("init_from: adding elements to an ensemble is not supported")
    s_new = len(table)
    species = np.searchsorted(table, base.atomic_numbers)  # old index → new index
    model = fill_model(base.model, base.cutoff, s_new, base.avg_num_neighbors, num_outputs_for(base.terms))
    fitted = _fitted_values(base.model)
    model = model.clone(**{name: None for name in fitted})  # the base's statistics have the old shape
    fresh = jax.jit(model.init)(jax.random.PRNGKey(seed), *example_inputs(base.cutoff))
    positions = getattr(base.model, "feature_positions", None)
    features = None if positions is None else np.asarray(positions(s_new, species))
    params, added = _grow_params(base.params, fresh, species, features, s_new)
    if fitted:
        model = model.clone(**_grow_fitted(fitted, model, frames, table, species, features, base.cutoff))
    e0 = np.zeros(s_new)
    e0[species] = np.asarray(base.e0, np.float64)
    scale = np.full(s_new, float(np.mean(np.asarray(base.scale, np.float64))))
    scale[species] = np.asarray(base.scale, np.float64)
    terms = tuple(t.replace(atomic_numbers=table) if hasattr(t, "atomic_numbers") else t for t in base.terms)
    grown = base.replace(
        model=model,
        params=jax.tree.map(jnp.asarray, params),
        e0=jnp.asarray(e0, base.e0.dtype),
        scale=jnp.asarray(scale, base.scale.dtype),
        atomic_numbers=table,
        terms=terms,
    )
    return grown, added


def _fitted_values(model) -> dict[str, tuple]:
    """The base model's fitted constants that are set: {field: flat tuple}."""
    from nnpes.models.base import fitted_fields

    return {f: getattr(model, f) for f in fitted_fields(type(model)) if getattr(model, f) is not None}


def _axis_index(n_old: int, n_new: int, species: np.ndarray, features: np.ndarray | None) -> np.ndarray | None:
    """Where the entries of an axis of length n_old go in its grown length n_new (None: unknown)."""
    if n_old == n_new:
        return np.arange(n_old)
    if n_old == len(species) and n_new > species.max():
        return species
    if features is not None and n_old == len(features) and n_new > features.max():
        return features
    return None


def _grow_params(old, fresh, species: np.ndarray, features: np.ndarray | None, s_new: int) -> tuple[Any, Any]:
    """Old leaves copied into the fresh ones along mapped axes; (params, added) as in :func:`grow_species`."""
    old_leaves = jax.tree_util.tree_leaves_with_path(old)
    new_leaves, treedef = jax.tree_util.tree_flatten_with_path(fresh)
    if len(old_leaves) != len(new_leaves):
        raise ModelError(f"init_from: the grown model has {len(new_leaves)} parameters, the base {len(old_leaves)}")
    one_hot = f"] {len(species)}x0e,"  # e3nn names a weight by its input irreps: "w[0,0] 2x0e,4x0e"
    params, added = [], []
    for (path, a), (new_path, b) in zip(old_leaves, new_leaves):
        name, new_name = jax.tree_util.keystr(path), jax.tree_util.keystr(new_path)
        if new_name not in (name, name.replace(one_hot, f"] {s_new}x0e,")):
            raise ModelError(f"init_from: parameter {name} has no counterpart in the grown model ({new_name})")
        # an e3nn linear map of the one-hot species divides by √(fan-in) = √S: rows scaled by
        # √(S_new/S_old) keep every old element's embedding
        norm = np.sqrt(s_new / len(species)) if one_hot in name else 1.0
        leaf, new = _grow_leaf(np.asarray(a), np.asarray(b), species, features, norm, name)
        params.append(leaf)
        added.append(new)
    return jax.tree_util.tree_unflatten(treedef, params), jax.tree_util.tree_unflatten(treedef, added)


def _grow_leaf(a, fresh, species, features, norm: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One parameter: (the grown leaf, True on its new entries)."""
    if a.shape == fresh.shape:
        return a, np.zeros(a.shape, bool)
    index = [_axis_index(n, m, species, features) for n, m in zip(a.shape, fresh.shape)]
    if a.ndim != fresh.ndim or any(i is None for i in index):
        raise ModelError(
            f"init_from: cannot add elements: parameter {name} grows from {a.shape} to {fresh.shape} along an "
            "axis that is not a species axis (its family does not say how to map it)"
        )
    out = np.array(fresh, dtype=a.dtype)
    out[np.ix_(*index)] = a * np.asarray(norm, a.dtype)
    new = np.ones(out.shape, bool)
    new[np.ix_(*index)] = False
    # entries of old elements on new descriptor columns (the inputs of an old element's
    # Behler–Parrinello network that see the new elements) start at zero: the base's site
    # energies of old elements are kept exactly, whatever their neighbours
    old_element = np.ones(out.shape, bool)
    for axis, (n, m) in enumerate(zip(a.shape, fresh.shape)):
        if n != m and index[axis] is species:
            old_element &= np.isin(np.arange(m), species).reshape([-1 if i == axis else 1 for i in range(out.ndim)])
    out[new & old_element] = 0
    return out, new


def _grow_fitted(fitted: dict, model, frames, table, species: np.ndarray, features, cutoff: float) -> dict:
    """Fitted constants of the grown model, flat (S_new·F_new) tuples: fitted on the new frames,
    then the base's values put back at their mapped places (new elements' come from the data)."""
    from nnpes.data.graph import frame_to_graph
    from nnpes.data.statistics import fit_model_statistics

    graphs = [frame_to_graph(f, cutoff, table) for f in frames[:1000]]
    refitted = fit_model_statistics(model, graphs)
    out = {}
    for name, old in fitted.items():
        old = np.asarray(old, np.float64).reshape(len(species), -1)
        new = np.asarray(getattr(refitted, name), np.float64).reshape(len(table), -1)
        cols = _axis_index(old.shape[1], new.shape[1], np.arange(0), features)
        if cols is None:
            raise ModelError(f"init_from: cannot add elements: fitted constant {name} grows along an unknown axis")
        new[np.ix_(species, cols)] = old
        out[name] = tuple(float(v) for v in new.reshape(-1))
    return out
