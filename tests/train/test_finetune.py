"""Fine-tuning (``init_from``): a run continues from the base model's weights, frozen modules stay
bit-identical, new elements get new rows while the base's rows and energies are kept, E0 is
refitted, config mistakes are one line, and a fine-tuned model learns new data in fewer steps."""

from __future__ import annotations

import csv
import dataclasses
import os
from importlib import resources

import ase.build
import ase.io
import jax
import numpy as np
import pytest
from helpers import TINY_CUTOFF, TINY_MODELS

import nnpes
from nnpes.data.graph import frame_to_graph
from nnpes.data.io import frame_from_atoms, read_frames
from nnpes.errors import ConfigError
from nnpes.evaluate import predict_graphs
from nnpes.train import Callback, load_config, train
from nnpes.train.config import changed_keys

ETHANOL = str(resources.files("nnpes.data") / "files" / "ethanol_train.xyz")
TINY_MODEL = {"family": "nequip", "cutoff": 4.0, "channels": 4, "l_max": 1, "parity": False, "num_layers": 1,
              "radial_features": [8], "readout_features": 4}  # fmt: skip
pytestmark = pytest.mark.filterwarnings("ignore::nnpes.errors.LabelWarning")


class StepLosses(Callback):
    """Records the loss of every step (computed before the step's update)."""

    def __init__(self):
        self.losses = []

    def on_step(self, step, metrics):
        self.losses.append(float(metrics["loss"]))


def _config(workdir, train_path, **sections) -> dict:
    cfg = {
        "workdir": str(workdir),
        "seed": 1,
        "data": {"train": train_path, "validation_fraction": 0.0},
        "optimizer": {"learning_rate": 0.01, "schedule": "constant", "ema_decay": None},
        "training": {"batch_size": 8, "max_steps": 3, "checkpoint_every_steps": 1000, "progress": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """rMD17 ethanol frames (H, C, O): 16 the base model sees, 16 new ones and 8 to validate on."""
    root = tmp_path_factory.mktemp("finetune")
    out = {"root": root}
    for name, index in (("base", ":16"), ("new", "20:36"), ("val", "40:48")):
        out[name] = str(root / f"{name}.xyz")
        ase.io.write(out[name], ase.io.read(ETHANOL, index=index))
    return out


@pytest.fixture(scope="module")
def base(files):
    """A tiny NequIP trained from scratch for 100 steps on the base frames: (run dir, frames file)."""
    cfg = _config(files["root"] / "base", files["base"], model=dict(TINY_MODEL), training={"max_steps": 100})
    train(load_config(raw=cfg))
    return str(files["root"] / "base"), files["base"]


def _new_data_config(files, name: str, **sections) -> dict:
    """16 steps on the 16 new frames (one batch: one step per epoch), validated on 8 others."""
    data = {"train": files["new"], "validation": files["val"]}
    return _config(
        files["root"] / name, files["new"], data=data, training={"batch_size": 16, "max_steps": 16}, **sections
    )


@pytest.fixture(scope="module")
def scratch(files):
    """The tiny NequIP trained from scratch on the new frames: (result, step losses)."""
    losses = StepLosses()
    result = train(load_config(raw=_new_data_config(files, "scratch", model=dict(TINY_MODEL))), callbacks=[losses])
    return result, losses.losses


@pytest.fixture(scope="module")
def tuned(files, base):
    """The base fine-tuned on the new frames, embedding and first layer frozen, the base's E0 kept (so
    its first loss is the base's): (raw config, result, step losses)."""
    finetune = {"freeze": ["embedding", "layer_0"], "refit_e0": False}
    raw = _new_data_config(files, "tuned", init_from=base[0], finetune=finetune)
    losses = StepLosses()
    return raw, train(load_config(raw=raw), callbacks=[losses]), losses.losses


def _loss(potential, frames, energy_weight=10.0, forces_weight=1.0) -> float:
    """The training loss (default weights) of a potential on frames: w_E⟨(ΔE/N)²⟩ + w_F⟨ΔF²⟩."""
    preds = predict_graphs(potential, [frame_to_graph(f, potential.cutoff, potential.atomic_numbers) for f in frames])
    de = [((p["energy"] - f.energy) / f.n_atoms) ** 2 for p, f in zip(preds, frames)]
    df = np.concatenate([(p["forces"] - f.forces).reshape(-1) ** 2 for p, f in zip(preds, frames)])
    return energy_weight * float(np.mean(de)) + forces_weight * float(np.mean(df))


def _leaves(potential) -> dict:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(potential.params)}


def test_first_step_loss_of_a_finetuning_run_is_the_base_models_loss(base, tuned, scratch, files):
    losses, fresh = tuned[2], scratch[1]  # the same first batch: all 16 new frames
    assert losses[0] == pytest.approx(_loss(nnpes.load(base[0]), read_frames(files["new"])), rel=1e-4)
    assert losses[0] < 0.5 * fresh[0]  # not where a fresh model starts


def test_frozen_modules_are_bit_identical_and_the_others_trained(base, tuned):
    base_model, model = nnpes.load(base[0]), nnpes.load(tuned[1].model_dir)
    before, after = _leaves(base_model), _leaves(model)
    frozen = [k for k in before if "['embedding']" in k or "['layer_0']" in k]
    assert frozen and all(np.array_equal(before[k], after[k]) for k in frozen)
    assert all(not np.array_equal(before[k], after[k]) for k in before if k not in frozen)
    assert model.label_key("energy") == "energy" and model.atomic_numbers == base_model.atomic_numbers


def test_finetuning_run_keeps_its_config_as_given_and_resumes(tuned):
    raw, result, _ = tuned
    saved = load_config(os.path.join(result.workdir, "config.yaml"))  # the base's model section, lr unscaled
    assert changed_keys(saved, load_config(raw=raw)) == [] and saved.optimizer.learning_rate == 0.01
    with open(os.path.join(result.workdir, "metrics.csv")) as f:
        assert float(list(csv.DictReader(f))[-1]["learning_rate"]) == pytest.approx(0.001)  # × learning_rate_factor
    assert train(load_config(raw=raw)).step == 16  # the same command resumes from the checkpoint: nothing left


def _force_errors(workdir) -> list[tuple[int, float]]:
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return [(int(r["step"]), float(r["val_forces_mae_mev_per_a"])) for r in csv.DictReader(f)]


def test_finetuning_reaches_the_scratch_force_error_in_at_most_half_the_steps(scratch, tuned):
    target = _force_errors(scratch[0].workdir)[-1][1]
    reached = [step for step, mae in _force_errors(tuned[1].workdir) if mae <= target]
    assert reached and reached[0] <= scratch[0].step // 2


def _emt_frames(names, seed) -> list:
    """Rattled small molecules labelled by ASE's EMT (energies eV, forces eV/Å)."""
    from ase.calculators.emt import EMT

    out = []
    for i, name in enumerate(names):
        atoms = ase.build.molecule(name)
        atoms.rattle(0.05, seed=seed + i)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        out.append(atoms)
    return out


def test_new_element_gets_a_new_row_and_the_old_rows_keep_their_values(base, tmp_path):
    base_dir, _ = base
    path = str(tmp_path / "amines.xyz")  # N (Z = 7) sorts between C and O: O moves from index 2 to 3
    ase.io.write(path, _emt_frames(["H3CNH2", "NH3", "CH3OH", "HCN"], seed=3))
    cfg = load_config(raw=_config(tmp_path / "n", path, init_from=base_dir, finetune={"freeze": ["embedding"]}))
    tuned = nnpes.load(train(cfg).model_dir)
    base_model = nnpes.load(base_dir)
    assert tuned.atomic_numbers == (1, 6, 7, 8)
    (key,) = [k for k in _leaves(tuned) if "['embedding']" in k]
    old, new = next(iter(_leaves(base_model).values())), _leaves(tuned)[key]
    # e3nn divides the one-hot embedding by √S: the old rows are kept, times √(4/3), and frozen
    np.testing.assert_array_equal(new[[0, 1, 3]], (old * np.float32(np.sqrt(4 / 3))).astype(old.dtype))
    assert np.abs(new[2]).max() > 0  # N's row: fresh and trained (new rows train inside a frozen module)
    np.testing.assert_allclose(np.asarray(tuned.scale)[[0, 1, 3]], np.asarray(base_model.scale))


def _assert_same_predictions(base, grown, frames) -> None:
    before = predict_graphs(base, [frame_to_graph(f, base.cutoff, base.atomic_numbers) for f in frames])
    after = predict_graphs(grown, [frame_to_graph(f, grown.cutoff, grown.atomic_numbers) for f in frames])
    for b, a in zip(before, after):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-4)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-5)


def test_trained_nequip_grown_by_nitrogen_gives_the_base_energies_and_forces_on_ethanol(base):
    from nnpes.train.new_species import grow_species

    potential = nnpes.load(base[0])
    grown, added = grow_species(potential, [7], seed=5, frames=[])  # N sorts between C and O
    assert grown.atomic_numbers == (1, 6, 7, 8) and any(np.any(a) for a in jax.tree.leaves(added))
    _assert_same_predictions(potential, grown, read_frames(base[1]))


def test_grown_behler_parrinello_gives_the_base_energies_and_forces_on_base_elements():
    """Its descriptor columns move with the species table and its fitted statistics follow."""
    from nnpes.data.statistics import fit_model_statistics
    from nnpes.train.new_species import grow_species

    old = [frame_from_atoms(a) for a in _emt_frames(["H2O2", "H2O"], seed=1)]  # H, O only
    new = [frame_from_atoms(a) for a in _emt_frames(["CH3OH", "CH4"], seed=5)]  # adds C between H and O
    base = nnpes.Potential.create(TINY_MODELS["behler_parrinello"](), [1, 8], TINY_CUTOFF, seed=3, scale=[0.5, 2.0])
    base = base.replace(model=fit_model_statistics(base.model, [frame_to_graph(f, TINY_CUTOFF, (1, 8)) for f in old]))
    grown, _ = grow_species(base, [1, 6, 8], seed=7, frames=new)
    assert grown.atomic_numbers == (1, 6, 8) and len(grown.model.feature_mean) > len(base.model.feature_mean)
    _assert_same_predictions(base, grown, old)


def test_refit_e0_recovers_known_per_element_offsets(base):
    from nnpes.train.finetune import refit_e0

    base_dir, frames = base
    potential = nnpes.load(base_dir)
    ethanol = ase.io.read(ETHANOL, index=":6")
    # fragments of ethanol with different compositions, so E0 of H, C and O are all determined
    parts = [a[[i for i in range(len(a)) if a.numbers[i] != z]] for a, z in zip(ethanol, [0, 1, 6, 8, 0, 1])]
    structures = [frame_from_atoms(a) for a in parts]
    predicted = predict_graphs(potential, [frame_to_graph(f, potential.cutoff, (1, 6, 8)) for f in structures])
    offsets = np.array([0.25, -1.5, 3.0])  # eV per H, C, O atom
    labelled = [
        dataclasses.replace(f, energy=p["energy"] + offsets[np.searchsorted((1, 6, 8), f.numbers)].sum())
        for f, p in zip(structures, predicted)
    ]
    refitted, report = refit_e0(potential, potential.atomic_numbers, labelled, every=True)
    np.testing.assert_allclose(np.asarray(refitted.e0, np.float64) - np.asarray(potential.e0), offsets, atol=2e-3)
    assert refitted.e0_method == "least_squares" and "E0 (least_squares)" in report


@pytest.mark.parametrize(
    "patch, expected",
    [
        (
            {"finetune": {"freeze": ["layer_9"]}},
            "finetune.freeze: 'layer_9' names no parameter of the model; top-level",
        ),
        ({"model": {"family": "nequip", "channels": 8}}, "key 'model.channels' is 8, but the init_from model"),
        ({"model": {"family": "deepsets"}}, "key 'model.family' is 'deepsets', but the init_from model"),
        ({"init_from": "missing_dir"}, "key 'init_from': "),
        ({"workdir": "BASE"}, "key 'init_from' is the run directory itself"),
        ({"terms": {"zbl": {"outer_radius": 1.0}}}, "key 'terms' is set, but with init_from"),
        ({"init_from": None, "finetune": {"refit_e0": False}}, "key 'finetune.refit_e0' needs init_from"),
    ],
)
def test_finetune_config_mistakes_are_one_line_naming_the_key(base, tmp_path, patch, expected):
    base_dir, frames = base
    raw = _config(tmp_path / "bad", frames, init_from=base_dir)
    raw.update({k: base_dir if v == "BASE" else v for k, v in patch.items()})
    with pytest.raises(ConfigError) as err:
        train(load_config(raw=raw))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_model_section_that_agrees_with_the_base_is_accepted(base, tmp_path):
    base_dir, frames = base
    cfg = load_config(
        raw=_config(tmp_path / "ok", frames, init_from=base_dir, model={"family": "nequip", "channels": 4})
    )
    assert cfg.model.channels == 4 and cfg.model.num_layers == TINY_MODEL["num_layers"]


def test_an_ensemble_as_base_is_refused_in_one_line(base, tmp_path):
    import json
    import shutil

    base_dir, frames = base
    ensemble = tmp_path / "ensemble"
    shutil.copytree(os.path.join(base_dir, "model"), ensemble)
    meta = json.loads((ensemble / "potential.json").read_text())
    (ensemble / "potential.json").write_text(json.dumps({**meta, "ensemble_members": 4}))
    with pytest.raises(ConfigError, match=r"key 'init_from': .* is an ensemble of 4 networks") as err:
        load_config(raw=_config(tmp_path / "run", frames, init_from=str(ensemble)))
    assert "\n" not in str(err.value)
