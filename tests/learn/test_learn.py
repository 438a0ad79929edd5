"""``nnpes learn`` end to end (nnpes.learn.loop, ledger, config): Cu clusters labelled by ASE's EMT,
a tiny DeepSets ensemble, two rounds, then the reruns a user makes."""

from __future__ import annotations

import json
import os

import ase.cluster
import ase.io
import numpy as np
import pytest
import yaml
from ase.calculators.emt import EMT

from nnpes.cli import main
from nnpes.errors import ConfigError
from nnpes.learn import load_learn_config
from nnpes.learn.ledger import COLUMNS

ROUNDS = 2


def _clusters(n: int, seed: int, labelled: bool) -> list:
    """Rattled 13-atom Cu icosahedra (EMT labels when ``labelled``)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = ase.cluster.Icosahedron("Cu", 2)
        atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
        if labelled:
            atoms.calc = EMT()
            atoms.get_forces()
        out.append(atoms)
    return out


def _config() -> dict:
    return {
        "workdir": "runs/learn",
        "rounds": ROUNDS,
        "train": {
            "model": {
                "family": "deepsets",
                "cutoff": 4.0,
                "num_basis": 4,
                "embed_features": 4,
                "phi_features": [8, 8],
                "rho_features": [8],
                "ensemble": 2,
            },
            "training": {"batch_size": 4, "progress": False},
            "optimizer": {"learning_rate": 0.01},
        },  # fmt: skip
        "frames": {"initial": "initial.xyz", "relabel_initial": True, "test": "test.xyz", "validation_fraction": 0.25},
        "md": {"temperatures_k": [300, 600], "steps": 40, "every": 4, "dt_fs": 1.0, "backend": "ase"},
        "select": {"per_round": 3, "threshold_ev_a": 0.0, "min_distance_a": 0.01, "max_per_trajectory": 2},
        "label": {"calculator": "emt"},
        "retrain": {"steps": 20, "finetune_steps": 10},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Two rounds run through the CLI: the config file, work directory and exit status."""
    tmp = tmp_path_factory.mktemp("learn")
    ase.io.write(tmp / "initial.xyz", _clusters(8, 0, labelled=False))  # geometries only: relabel_initial
    ase.io.write(tmp / "test.xyz", _clusters(4, 1, labelled=True))
    (tmp / "learn.yaml").write_text(yaml.safe_dump(_config()))
    status = main(["learn", str(tmp / "learn.yaml")])
    return {"config": str(tmp / "learn.yaml"), "workdir": str(tmp / "runs" / "learn"), "status": status}


def _rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "rounds.json")) as f:
        return json.load(f)["rounds"]


def test_two_rounds_add_labels_with_emt_energies_and_forces(run):
    assert run["status"] == 0
    labelled = ase.io.read(os.path.join(run["workdir"], "labelled.xyz"), ":")
    rounds = [a.info["learn_round"] for a in labelled]
    assert rounds[:8] == [-1] * 8 and set(rounds[8:]) == {0, 1}
    for atoms in labelled:  # every label, initial ones included (relabel_initial), is EMT's
        reference = atoms.copy()
        reference.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-6)  # extxyz: 8 decimals
    origins = [a.info["learn_origin"] for a in labelled if a.info["learn_round"] == 0]
    assert len({o.split(":")[0] for o in origins}) == 2  # both MD runs (T300_0, T600_0) gave labels


def test_rounds_table_is_written_and_labels_grow(run):
    rows = _rows(run["workdir"])
    assert [r["round"] for r in rows] == list(range(ROUNDS))
    assert rows[1]["labelled_frames"] == rows[0]["labelled_frames"] + rows[0]["labelled_new"]
    assert rows[0]["labelled_frames"] == 8 and 0 < rows[0]["labelled_new"] <= 3
    for r in rows:
        assert r["test_forces_mae_mev_per_a"] > 0 and r["mean_force_std_ev_a"] > 0
        assert r["md_frames"] == 2 * 10 and r["above_threshold"] == 20  # threshold 0: every frame
    with open(os.path.join(run["workdir"], "rounds.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 1 + ROUNDS
    round0 = os.path.join(run["workdir"], "round_000")
    assert len(ase.io.read(os.path.join(round0, "selected.xyz"), ":")) == rows[0]["selected"]
    assert sorted(os.listdir(os.path.join(round0, "md"))) == ["T300_0.xyz", "T600_0.xyz"]
    assert os.path.isfile(os.path.join(round0, "train", "model", "potential.json"))


def test_later_rounds_fine_tune_the_previous_model_at_a_lower_learning_rate(run):
    configs = []
    for r in range(ROUNDS):
        with open(os.path.join(run["workdir"], f"round_{r:03d}", "train", "config.yaml")) as f:
            configs.append(yaml.safe_load(f))
    assert configs[0]["optimizer"]["learning_rate"] == pytest.approx(0.01)
    assert configs[1]["optimizer"]["learning_rate"] == pytest.approx(0.003)  # × retrain.learning_rate_factor
    assert [c["training"]["max_steps"] for c in configs] == [20, 10]


def test_rerun_resumes_without_training_or_labelling(run, monkeypatch, capsys):
    import nnpes.learn.label
    import nnpes.train

    def refuse(*args, **kwargs):
        raise AssertionError("a finished round was redone")

    monkeypatch.setattr(nnpes.learn.label, "label", refuse)
    monkeypatch.setattr(nnpes.train, "fit", refuse)
    before = _rows(run["workdir"])
    assert main(["learn", run["config"]]) == 0
    assert _rows(run["workdir"]) == before
    assert "nnpes learn" in capsys.readouterr().out  # the table is printed again


def test_a_round_killed_after_labelling_finishes_without_relabelling(run, monkeypatch):
    import nnpes.learn.label

    workdir = run["workdir"]
    row = os.path.join(workdir, "round_001", "round.json")
    with open(row) as f:
        expected = json.load(f)
    os.remove(row)  # as if killed after labelled.xyz was written, before the round was marked done
    monkeypatch.setattr(nnpes.learn.label, "label", lambda *a, **k: pytest.fail("relabelled"))
    assert main(["learn", run["config"]]) == 0
    resumed = _rows(workdir)[1]
    assert {k: v for k, v in resumed.items() if k != "elapsed_s"} == {
        k: v for k, v in expected.items() if k != "elapsed_s"
    }


def test_rerun_with_a_changed_config_is_refused_in_one_line(run, capsys):
    assert main(["learn", run["config"], "select.per_round=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "select.per_round" in err and "--workdir" in err


def test_default_threshold_is_the_models_fitted_alarm(run):
    import nnpes
    from nnpes.learn.loop import _threshold

    cfg = load_learn_config(run["config"], ["select.threshold_ev_a=null"])
    potential = nnpes.load(os.path.join(run["workdir"], "round_000", "train", "model"))
    assert _threshold(cfg, potential) == potential.force_std_alarm_ev_a > 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("select.per_rnd=3", "unknown key 'select.per_rnd'; allowed: max_per_trajectory"),
        ("train.model.ensemble=0", "key 'train.model.ensemble' must be ≥ 2"),
        ("train.data={train: x.xyz}", "key 'train.data': the loop supplies it"),
        ("label.calculator=gaussian", "key 'label.calculator': must be tblite, emt or module:attribute"),
        ("md.temperatures_k=[300,-5]", "key 'md.temperatures_k': every temperature must be > 0 K"),
        ("frames.initial=missing.xyz", "key 'frames.initial': file not found"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, override, message):
    (tmp_path / "initial.xyz").write_text("")
    (tmp_path / "test.xyz").write_text("")
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump(_config()))
    with pytest.raises(ConfigError) as err:
        load_learn_config(path, [override])
    assert "\n" not in str(err.value) and message in str(err.value) and str(path) in str(err.value)


def test_docs_learn_config_block_validates_and_writes_out_every_key(monkeypatch):
    from pathlib import Path

    from pydantic import BaseModel

    from nnpes.learn.config import LearnConfig

    root = Path(__file__).resolve().parents[2]
    section = (root / "docs" / "trust.md").read_text().split("## Active learning: `nnpes learn`", 1)[1]
    raw = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    monkeypatch.chdir(root)  # paths in the docs are relative to the repository root
    load_learn_config(raw=raw, check_files=False)
    assert set(raw) == set(LearnConfig.model_fields)
    for name, field in LearnConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) and name != "train":
            assert set(raw[name]) == set(field.annotation.model_fields), name


def test_every_shipped_learn_config_validates():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    names = sorted(p for p in os.listdir(root) if p.startswith("learn_") and p.endswith(".yaml"))
    assert names
    for name in names:
        try:
            cfg = load_learn_config(os.path.join(root, name))
        except ConfigError as e:
            if "file not found" in str(e) and "shared/data" in str(e):
                continue  # reference data absent on this machine
            raise
        assert cfg.rounds >= 1
