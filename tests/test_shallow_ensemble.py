"""Shallow (last-layer) ensembles: one network whose readout has M heads. The heads' mean is the
prediction (a conservative potential), their spread the uncertainty; a negative log-likelihood
of energies and of randomly projected forces trains the heads alone, and every uncertainty
path (evaluation, ASE calculator, jax-md adaptor, saved model, export) treats them as members."""

from __future__ import annotations

import json
import math
import os
import shutil
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY_MODELS, PairModel

import nnpes
from nnpes.data.graph import batch_graphs, frame_to_graph
from nnpes.data.io import read_frames
from nnpes.electrostatics import Electrostatics
from nnpes.errors import ConfigError, ModelError
from nnpes.evaluate import evaluate_frames
from nnpes.physics import evaluate
from nnpes.potential import example_inputs, fill_model
from nnpes.train.loss import nll_sums, projection_directions
from nnpes.train.optimizer import parameter_names
from nnpes.train.step import readout_only
from nnpes.uncertainty import member_energies_and_projections, member_outputs

FILES = resources.files("nnpes.data") / "files"
HEADS = 4


@pytest.fixture(scope="module")
def frames():
    return read_frames(str(FILES / "ethanol_train.xyz"))


def shallow(family: str, seed: int = 0) -> nnpes.Potential:
    return nnpes.Potential.create(TINY_MODELS[family](), [1, 6, 8], 3.0, seed, members=HEADS, shallow=True)


def batch(potential, frames):
    graphs = [frame_to_graph(f, potential.cutoff, potential.atomic_numbers) for f in frames]
    return batch_graphs(graphs, 32, 256, 4, dtype=np.float32)


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_every_family_has_heads_in_its_readout_layers(family):
    def shapes(outputs: int):  # shapes only: nothing is compiled
        model = fill_model(TINY_MODELS[family](), 3.0, 3, 1.0, outputs)
        return model, jax.eval_shape(model.init, jax.random.PRNGKey(0), *example_inputs(3.0))

    model, params = shapes(HEADS)
    names = parameter_names(params)
    heads = [n for n in names if any(n == r or n.startswith(r + "/") for r in model.readout_layers)]
    assert heads, names  # the declared readout layers exist
    for name, leaf, one in zip(names, jax.tree.leaves(params), jax.tree.leaves(shapes(1)[1])):
        # one network: only the readout layers are wider (M outputs instead of 1); nothing is stacked
        assert leaf.shape == one.shape or (name in heads and leaf.shape[-1] == HEADS * one.shape[-1]), name


def test_heads_are_members_and_their_mean_is_the_energy(frames):
    pot = shallow("deepsets")
    assert pot.members == HEADS and pot.shallow and pot.deep_members == 0 and pot.model.num_outputs == HEADS
    graph = batch(pot, frames[:3])
    mean = evaluate(pot, graph, compute_stress=False)
    members = jax.jit(member_outputs)(pot, graph)
    assert members["energy"].shape == (HEADS, 4) and members["forces"].shape == (HEADS, 32, 3)
    np.testing.assert_allclose(mean["energy"], members["energy"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(mean["forces"], members["forces"].mean(0), atol=1e-5)
    assert np.ptp(np.asarray(members["forces"][:, :9]), axis=0).max() > 1e-4  # the heads differ
    # one head is the potential whose site energy is that head alone (one-hot head weights)
    head = pot.replace(head_weights=jnp.eye(HEADS)[2])
    np.testing.assert_allclose(evaluate(head, graph, compute_stress=False)["forces"], members["forces"][2], atol=1e-5)


def test_projections_are_the_members_forces_on_the_directions(frames):
    pot = shallow("deepsets")
    graph = batch(pot, frames[:3])
    directions = projection_directions(jax.random.PRNGKey(1), graph, jnp.float32)
    energies, projections = jax.jit(member_energies_and_projections)(pot, graph, directions)
    members = jax.jit(member_outputs)(pot, graph)
    np.testing.assert_allclose(energies, members["interaction_energy"], rtol=1e-6)
    node_graph = np.repeat(np.arange(4), np.asarray(graph.n_node))
    want = np.stack([np.bincount(node_graph, (f * directions).sum(-1), 4) for f in np.asarray(members["forces"])])
    np.testing.assert_allclose(projections, want, atol=1e-5)
    # directions: variance 1/(3 N) per component on labelled atoms, zero on the padding graph's
    assert np.all(np.asarray(directions)[int(np.sum(graph.n_node[:3])) :] == 0)


def test_nll_sums_are_the_gaussian_likelihood():
    rng = np.random.default_rng(0)
    members, labels, weights = rng.normal(size=(5, 3)), rng.normal(size=3), np.array([1.0, 1.0, 0.0])
    sums = nll_sums("energy", jnp.asarray(members), jnp.asarray(labels), jnp.asarray(weights))
    var = members.var(0, ddof=1) + 1e-12
    nll = 0.5 * (np.log(2 * math.pi * var) + (members.mean(0) - labels) ** 2 / var)
    assert float(sums["energy_nll"]) == pytest.approx(nll[:2].sum(), rel=1e-5)
    assert float(sums["energy_nll_count"]) == 2.0


def test_the_likelihood_trains_the_heads_alone(frames):
    pot = shallow("behler_parrinello")
    graph = batch(pot, frames[:2])

    def spread(params):
        heads = pot.replace(params=readout_only(params, pot.model))
        energies, _ = member_energies_and_projections(heads, graph, jnp.zeros((32, 3)))
        return jnp.sum(jnp.var(energies, axis=0))

    grads = jax.grad(spread)(pot.params)
    for name, g in zip(parameter_names(grads), jax.tree.leaves(grads)):
        in_heads = any(name == r or name.startswith(r + "/") for r in pot.model.readout_layers)
        assert (np.abs(np.asarray(g)).max() > 0) == in_heads, name


def test_shallow_ensembles_are_refused_where_they_cannot_be():
    with pytest.raises(ModelError, match="shallow ensemble needs members"):
        nnpes.Potential.create(TINY_MODELS["deepsets"](), [1, 8], 3.0, shallow=True)
    with pytest.raises(ModelError, match="latent charges"):
        nnpes.Potential.create(
            TINY_MODELS["deepsets"](), [1, 8], 3.0, members=2, shallow=True, terms=(Electrostatics(),)
        )
    with pytest.raises(ModelError, match="cannot predict 3 outputs per atom"):
        nnpes.Potential.create(PairModel(), [1, 8], 3.0, members=3, shallow=True)


@pytest.fixture(scope="module")
def trained(frames, tmp_path_factory):
    """A shallow DeepSets ensemble (4 heads) trained briefly on 40 + 10 shipped ethanol frames:
    (its TrainResult, the metrics of its last step)."""
    from nnpes.train import Callback, fit

    class LastStep(Callback):
        metrics: dict = {}

        def on_step(self, step, metrics):
            LastStep.metrics = metrics

    model = TINY_MODELS["deepsets"]()
    config = {"training": {"max_steps": 150, "batch_size": 4, "progress": False}, "optimizer": {"learning_rate": 0.01}}
    workdir = tmp_path_factory.mktemp("shallow")
    result = fit(model, frames[:40], frames[40:50], cutoff=3.0, workdir=workdir, config=config, ensemble=HEADS,
                 ensemble_kind="shallow", callbacks=[LastStep()])  # fmt: skip
    return result, {k: float(v) for k, v in LastStep.metrics.items()}


def test_training_fits_the_likelihoods_and_saves_a_calibrated_shallow_ensemble(trained):
    trained, metrics = trained
    with open(os.path.join(trained.model_dir, "potential.json")) as f:
        meta = json.load(f)
    assert meta["ensemble_kind"] == "shallow" and meta["ensemble_members"] == HEADS
    pot = nnpes.load(trained.model_dir)
    assert pot.shallow and pot.members == HEADS and pot.calibration != (1.0, 1.0)
    assert pot.force_std_alarm_ev_a > 0
    assert np.isfinite(metrics["energy_nll"]) and np.isfinite(metrics["forces_nll"]) and np.isfinite(metrics["loss"])


def test_every_path_reports_the_heads_spread(trained, frames):
    import ase.io
    from jax_md import space

    pot = nnpes.load(trained[0].model_dir)
    test = frames[60:63]
    metrics, preds = evaluate_frames(pot, test)
    assert all(p["energy_std"] > 0 and np.all(p["forces_std"] > 0) for p in preds)
    atoms = ase.io.read(str(FILES / "ethanol_train.xyz"), index=60)  # the calculator shares evaluate's path
    neighbor_fn, energy_fn = nnpes.md.energy_neighbor_list(pot, space.free()[0], None, atoms.numbers)
    R = jnp.asarray(atoms.positions, jnp.float32)
    nbrs = neighbor_fn.allocate(R)
    energies = energy_fn(R, nbrs, members=True)
    assert energies.shape == (HEADS,)
    assert float(jnp.mean(energies)) == pytest.approx(float(energy_fn(R, nbrs)), rel=1e-6)
    got = nnpes.md.uncertainty(energy_fn, R, nbrs)
    np.testing.assert_allclose(got["forces_std"], preds[0]["forces_std"], rtol=1e-3, atol=1e-6)


def test_an_unknown_kind_or_a_shallow_ensemble_of_one_is_one_line(frames, trained, tmp_path):
    from nnpes.train import fit, load_config

    for kind, m in (("wide", 2), ("shallow", 0)):
        with pytest.raises(ConfigError, match="ensemble_kind") as error:
            fit(TINY_MODELS["deepsets"](), frames[:4], workdir=tmp_path, ensemble=m, ensemble_kind=kind)
        assert len(str(error.value).splitlines()) == 1
    raw = {"model": {"family": "deepsets", "ensemble_kind": "shallow"}}
    with pytest.raises(ConfigError, match="shallow needs model.ensemble ≥ 2"):
        load_config(raw=raw)
    assert load_config(raw={"model": {**raw["model"], "ensemble": 4}}).model.ensemble_kind == "shallow"
    with pytest.raises(ConfigError, match="model.ensemble_kind"):
        load_config(raw={"model": {"family": "deepsets", "ensemble": 4, "ensemble_kind": "wide"}})
    # a saved model with a kind this nnpes does not know: one line naming potential.json
    copy = tmp_path / "model"
    shutil.copytree(trained[0].model_dir, copy)
    meta = json.loads((copy / "potential.json").read_text())
    (copy / "potential.json").write_text(json.dumps({**meta, "ensemble_kind": "wide"}))
    with pytest.raises(ModelError, match="potential.json: ensemble_kind 'wide'"):
        nnpes.load(copy)
