"""Ensembles and their uncertainty: the mean is the prediction and a conservative potential,
every path (evaluation, ASE calculator, jax-md adaptor) reports the same calibrated spread,
the calibration makes variances match errors, and a saved ensemble loads whole."""

from __future__ import annotations

from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnpes
from nnpes.data.graph import batch_graphs, frame_to_graph
from nnpes.data.io import read_frames
from nnpes.evaluate import evaluate_frames
from nnpes.physics import evaluate
from nnpes.uncertainty import calibrate, member_outputs, uncertainty_metrics

ETHANOL_TEST = str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz")


@pytest.fixture(scope="module")
def ensemble(trained_ensemble):
    return nnpes.load(trained_ensemble)


@pytest.fixture(scope="module")
def test_frames():
    return read_frames(ETHANOL_TEST)[:12]


@pytest.fixture(scope="module")
def evaluated(ensemble, test_frames):
    return evaluate_frames(ensemble, test_frames)


def test_saved_ensemble_loads_whole(ensemble, trained_ensemble):
    assert ensemble.members == 4
    assert all(x.shape[0] == 4 for x in jax.tree.leaves(ensemble.params))
    assert ensemble.calibration != (1.0, 1.0) and ensemble.force_std_alarm_ev_a > 0
    # members start from different seeds and see different data orders: they differ
    first = jax.tree.leaves(ensemble.params)[0]
    assert not np.allclose(first[0], first[1])


def test_ensemble_energy_is_the_members_mean(ensemble, test_frames):
    graphs = [frame_to_graph(f, ensemble.cutoff, ensemble.atomic_numbers) for f in test_frames[:3]]
    batch = batch_graphs(graphs, 40, 256, 4, dtype=np.float32)
    pot = ensemble.astype(jnp.float32)
    mean = evaluate(pot, batch, compute_stress=False)
    members = jax.jit(member_outputs)(pot, batch)
    assert members["energy"].shape == (4, 4) and members["forces"].shape == (4, 40, 3)
    np.testing.assert_allclose(mean["energy"], members["energy"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(mean["forces"], members["forces"].mean(0), atol=2e-5)


def test_calculator_and_jaxmd_give_the_same_uncertainty(ensemble, evaluated, test_frames):
    import ase.io
    from jax_md import space

    from nnpes.md import energy_neighbor_list, uncertainty

    _, preds = evaluated
    atoms = ase.io.read(ETHANOL_TEST, index=0)
    atoms.calc = nnpes.Calculator(ensemble)
    atoms.get_potential_energy()
    res = atoms.calc.results
    np.testing.assert_allclose(res["energy_std"], preds[0]["energy_std"], rtol=1e-4)
    np.testing.assert_allclose(res["forces_std"], preds[0]["forces_std"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res["forces"], preds[0]["forces"], atol=1e-5)

    displacement, _ = space.free()
    neighbor_fn, energy_fn = energy_neighbor_list(ensemble.astype(jnp.float32), displacement, 1.0, atoms.numbers)
    R = jnp.asarray(atoms.positions, jnp.float32)
    out = jax.jit(lambda r, n: uncertainty(energy_fn, r, n))(R, neighbor_fn.allocate(R))
    np.testing.assert_allclose(out["energy"], res["energy"], rtol=1e-6)
    np.testing.assert_allclose(out["energy_std"], res["energy_std"], rtol=2e-3)
    np.testing.assert_allclose(out["forces_std"], res["forces_std"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out["forces"], res["forces"], atol=1e-4)


def test_calibration_makes_variances_match_errors(ensemble, evaluated, test_frames):
    _, preds = evaluated
    recalibrated = calibrate(ensemble, test_frames, preds)
    s_e = recalibrated.calibration[0] / ensemble.calibration[0]
    s_f = recalibrated.calibration[1] / ensemble.calibration[1]
    errors_e = np.array([p["energy"] - f.energy for f, p in zip(test_frames, preds)])
    sigma_e = np.array([p["energy_std"] for p in preds]) * s_e
    assert np.mean((errors_e / sigma_e) ** 2) == pytest.approx(1.0, rel=1e-9)
    errors_f = np.concatenate([np.ravel(p["forces"] - f.forces) for f, p in zip(test_frames, preds)])
    sigma_f = np.concatenate([np.ravel(p["forces_std"]) for p in preds]) * s_f
    assert np.mean((errors_f / sigma_f) ** 2) == pytest.approx(1.0, rel=1e-9)


def test_uncertainty_metrics(evaluated, test_frames):
    _, preds = evaluated
    m = uncertainty_metrics(test_frames, preds, bins=4)
    assert len(m["forces_bins"]) == 4 and len(m["energy_bins"]) == 4
    rmv = [b["rmv"] for b in m["forces_bins"]]
    assert rmv == sorted(rmv)  # bins ordered by predicted σ
    assert -1.0 <= m["forces_spearman"] <= 1.0
    assert np.isfinite(m["energy_nll"]) and np.isfinite(m["forces_nll"])
    with pytest.raises(ValueError, match="not an ensemble"):
        uncertainty_metrics(test_frames, [{k: v for k, v in p.items() if not k.endswith("_std")} for p in preds])


def test_single_network_is_refused_where_an_ensemble_is_needed():
    from helpers import TINY_MODELS

    pot = nnpes.Potential.create(TINY_MODELS["deepsets"](), [1, 6, 8], 3.0)
    with pytest.raises(nnpes.errors.ModelError, match="not an ensemble"):
        pot.member_map(lambda member: member)
    with pytest.raises(nnpes.errors.ModelError, match="members must be"):
        nnpes.Potential.create(TINY_MODELS["deepsets"](), [1, 6, 8], 3.0, members=1)
