"""The pure, jitted training step: ``train_step(state, batch, learning_rate) -> (state, metrics)``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jraph
import optax

from nnpes import compilation
from nnpes.physics import energy_forces_stress
from nnpes.potential import Potential
from nnpes.train.loss import combine, energy_nll_sums, error_sums, forces_nll_sums, projection_directions
from nnpes.train.optimizer import keep_trainable, parameter_names
from nnpes.train.state import TrainState
from nnpes.uncertainty import member_energies_and_projections


def readout_only(params, model):
    """``params`` with every leaf outside ``model.readout_layers`` held fixed (``stop_gradient``):
    a shallow ensemble's likelihood trains its heads, not the features they share (which the
    usual loss fits), so the spread costs no accuracy. A model that declares no readout layers
    gets every parameter trained."""
    readouts = tuple(getattr(model, "readout_layers", ()))
    if not readouts:
        return params
    leaves, treedef = jax.tree.flatten(params)
    names = parameter_names(params)  # leaf order, as flatten's
    head = [any(n == r or n.startswith(r + "/") for r in readouts) for n in names]
    return jax.tree.unflatten(treedef, [x if h else jax.lax.stop_gradient(x) for x, h in zip(leaves, head)])


def likelihood_sums(potential: Potential, graph: jraph.GraphsTuple, key) -> dict:
    """A shallow ensemble's negative log-likelihood sums (:mod:`nnpes.train.loss`) of the energy
    per atom and of the forces on a random projection per graph (``key``), through its readout
    heads alone (:func:`readout_only`)."""
    heads = potential.replace(params=readout_only(potential.params, potential.model))
    directions = projection_directions(key, graph, graph.nodes["positions"].dtype)
    energies, projections = member_energies_and_projections(heads, graph, directions)
    return energy_nll_sums(energies, graph) | forces_nll_sums(projections, directions, graph)


def step_metrics(loss, grads, sums: dict) -> dict:
    """A step's metrics: loss, gradient norm, {energy,forces,stress}_mse and the NLLs' means."""
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    for name, key in (("energy", "energy_mse"), ("forces", "forces_mse"), ("stress", "stress_mse"),
                      ("energy_nll", "energy_nll"), ("forces_nll", "forces_nll")):  # fmt: skip
        if name in sums:
            metrics[key] = sums[name] / jnp.maximum(sums[f"{name}_count"], 1.0)
    return metrics


def make_train_step(
    potential: Potential,
    optimizer: optax.GradientTransformation,
    weights: dict,
    kind: str = "mse",
    delta: float = 0.01,
    ema_decay: float | None = None,
    trainable=None,
) -> Callable[[TrainState, jraph.GraphsTuple, jax.Array], tuple[TrainState, dict]]:
    """A jitted step over a batch whose leading axis holds one padded graph per device shard.

    ``optimizer`` gives the update direction; the step scales it by −``learning_rate`` (a scalar
    argument computed on the host, :func:`nnpes.train.optimizer.learning_rate_at`, so changing
    it never recompiles).

    The loss is normalised over the whole batch (sums and counts added over shards first), so
    it is the same number however many devices share the batch. Metrics: ``loss``
    (dimensionless weighted sum), ``grad_norm`` and ``{energy,forces,stress}_mse`` ((eV/atom)²,
    (eV/Å)², (eV/Å³)²). Each trace is counted as ``compilation.count("train_step")``.

    ``trainable`` (:func:`nnpes.train.optimizer.trainable_mask`; None: everything trains) keeps
    the EMA of frozen entries equal to the parameters (d·p + (1 − d)·p is not always p in
    floating point); the optimiser itself must already be :func:`~nnpes.train.optimizer.masked`.
    """
    use_stress = bool(weights.get("stress"))

    # the loss sees one network at a time (a shallow ensemble is one network with M heads)
    single = potential if potential.shallow else potential.replace(members=0)

    def loss_fn(params, batch, key):
        pot = single.replace(params=params)

        def shard(graph):
            sums = error_sums(energy_forces_stress(pot, graph, compute_stress=use_stress), graph, kind, delta)
            if pot.shallow:  # the heads' spread, fitted by likelihoods through the heads alone
                sums |= likelihood_sums(pot, graph, key)
            return sums

        # one shard (one device): no vmap, whose batched gathers and scatters made the aspirin
        # step (batch 8, l <= 1) 78 ms instead of 44 ms on CPU
        if jax.tree.leaves(batch)[0].shape[0] == 1:
            sums = shard(jax.tree.map(lambda x: x[0], batch))
        else:
            sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), jax.vmap(shard)(batch))
        return combine(sums, weights), sums

    def member_step(params, opt_state, ema, step, batch, learning_rate):
        """One network's update (an ensemble vmaps it over members: own batches, own optimiser state)."""
        key = jax.random.fold_in(jax.random.PRNGKey(0), step)  # a shallow ensemble's force projections
        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        direction, opt_state = optimizer.update(grads, opt_state, params, value=loss)
        updates = jax.tree.map(lambda u: (-learning_rate * u).astype(u.dtype), direction)
        new_params = optax.apply_updates(params, updates)
        if ema_decay is not None:
            # warm-up of the EMA decay so early parameters do not dominate
            d = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
            ema = jax.tree.map(lambda e, p: (d * e + (1 - d) * p).astype(p.dtype), ema, new_params)
            ema = keep_trainable(ema, trainable, new_params)
        else:
            ema = new_params
        return new_params, opt_state, ema, step_metrics(loss, grads, sums)

    def train_step(state: TrainState, batch, learning_rate) -> tuple[TrainState, dict]:
        compilation.traced("train_step")
        update = member_step
        if potential.deep_members:  # params, optimiser state, EMA and batch: a leading member axis
            update = jax.vmap(member_step, in_axes=(0, 0, 0, None, 0, None))
        params, opt_state, ema, metrics = update(
            state.params, state.opt_state, state.ema, state.step, batch, learning_rate
        )
        new = state.replace(params=params, opt_state=opt_state, ema=ema, step=state.step + 1)
        return new, jax.tree.map(jnp.mean, metrics)  # an ensemble reports the members' mean

    return jax.jit(train_step)
