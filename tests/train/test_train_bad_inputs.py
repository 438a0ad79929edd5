"""`nnpes train` refuses what it cannot use: exit status ≠ 0, one stderr line naming the file or
key, no traceback, and nothing compiled (every case fails during validation or data loading)."""

from __future__ import annotations

import copy

import ase.io
import numpy as np
import pytest
import yaml

from nnpes import compilation
from nnpes.cli import main


def _set(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return cfg


_DELETE = object()


def _write_frames(path, mutate) -> str:
    from importlib import resources

    frames = ase.io.read(resources.files("nnpes.data") / "files" / "ethanol_train.xyz", index=":4")
    for i, atoms in enumerate(frames):
        mutate(i, atoms)
    ase.io.write(path, frames, format="extxyz")
    return str(path)


def _nan_force(i, atoms):
    if i == 2:
        f = atoms.get_forces()
        f[0, 0] = np.nan
        atoms.calc.results["forces"] = f


def _ref_keys(i, atoms):
    atoms.info["REF_energy"] = atoms.get_potential_energy()
    atoms.arrays["REF_forces"] = atoms.get_forces()
    atoms.calc = None


def _energy_only(i, atoms):
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy())


# (id, how to change the config dict, extra CLI arguments, what the line must name)
CONFIG_CASES = [
    ("unknown-key", lambda c: _set(c, "training.max_step", 3), [], "training.max_step"),
    ("family-typo", lambda c: _set(c, "model.family", "nequipp"), [], "did you mean 'nequip'"),
    ("zero-layers", lambda c: _set(c, "model.num_layers", 0), [], "model.num_layers"),
    ("negative-channels", lambda c: _set(c, "model.channels", -3), [], "model.channels"),
    ("no-data", lambda c: _set(c, "data", _DELETE), [], "data.train"),
    ("missing-train-file", lambda c: _set(c, "data.train", "nowhere.xyz"), [], "nowhere.xyz"),
    ("bad-dtype", lambda c: _set(c, "dtype", "float16"), [], "dtype"),
    ("negative-lr", lambda c: _set(c, "optimizer.learning_rate", -1.0), [], "optimizer.learning_rate"),
    ("validation-fraction", lambda c: _set(c, "data.validation_fraction", 1.5), [], "data.validation_fraction"),
    ("bad-override-value", lambda c: c, ["training.batch_size=many"], "training.batch_size"),
    ("override-not-key-value", lambda c: c, ["batch_size"], "batch_size"),
    ("override-unknown-key", lambda c: c, ["training.epochs=3"], "training.epochs"),
    ("stress-on-molecules", lambda c: _set(c, "loss.stress_weight", 1.0), [], "stress"),
    ("zero-bucket-shapes", lambda c: _set(c, "training.max_bucket_shapes", 0), [], "training.max_bucket_shapes"),
]


def _main(argv: list[str]) -> int:
    """``nnpes.cli.main``, with argparse's exit (usage errors) as its status."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def _assert_one_line(rc: int, err: str, names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0, err
    assert len(lines) == 1, err
    assert names in lines[0] and "Traceback" not in err, lines[0]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_configs_are_one_line(case, tmp_path, tiny_config, write, capsys):
    _, change, extra, names = case
    before = compilation.count()
    rc = _main(["train", write(change(tiny_config())), "--workdir", str(tmp_path / "run"), *extra])
    _assert_one_line(rc, capsys.readouterr().err, names)
    assert compilation.count() == before


FILE_CASES = [
    ("not-yaml", "data: [unclosed\n", "line 2, column 1: not valid YAML"),
    ("top-level-list", "- a\n- b\n", "mapping"),
    ("empty-mapping-values", "model:\n  family: nequip\n  cutoff: -1\n", "model.cutoff"),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_config_files_are_one_line(case, tmp_path, capsys):
    _, text, names = case
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    rc = main(["train", str(path), "--workdir", str(tmp_path / "run")])
    _assert_one_line(rc, capsys.readouterr().err, names)


def test_missing_config_file_is_one_line(tmp_path, capsys):
    rc = main(["train", str(tmp_path / "absent.yaml")])
    _assert_one_line(rc, capsys.readouterr().err, "absent.yaml")


DATA_CASES = [
    ("nan-force", _nan_force, "frame 2"),
    ("renamed-keys", _ref_keys, "REF_forces"),
    ("energy-only-data", _energy_only, "or, to train without it, loss.forces_weight=0"),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_files_are_one_line(case, tmp_path, tiny_config, write, capsys):
    _, mutate, names = case
    data = _write_frames(tmp_path / "data.xyz", mutate)
    cfg = _set(tiny_config(), "data.train", data)
    rc = main(["train", write(cfg), "--workdir", str(tmp_path / "run")])
    _assert_one_line(rc, capsys.readouterr().err, names)


def test_renamed_keys_name_what_the_file_has_and_how_to_point_at_it(tmp_path, tiny_config, write, capsys):
    data = _write_frames(tmp_path / "mace_style.xyz", _ref_keys)
    rc = main(["train", write(_set(tiny_config(), "data.train", data)), "--workdir", str(tmp_path / "run")])
    line = capsys.readouterr().err.strip()
    assert rc != 0 and "mace_style.xyz" in line
    assert "'energy'" in line and "'forces'" in line  # both missing labels at once
    assert "REF_energy" in line and "REF_forces" in line and "data.energy_key" in line


def test_workdir_that_is_a_file_is_one_line(tmp_path, tiny_config, write, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    rc = main(["train", write(tiny_config()), "--workdir", str(blocker)])
    _assert_one_line(rc, capsys.readouterr().err, "taken")


def test_yaml_config_with_a_wrongly_typed_section_names_the_line(tmp_path, tiny_config, capsys):
    cfg = tiny_config()
    text = yaml.safe_dump(cfg, sort_keys=False).replace("  batch_size: 2", "  batch_size: two")
    path = tmp_path / "typed.yaml"
    path.write_text(text)
    line_no = text.splitlines().index("  batch_size: two") + 1
    rc = main(["train", str(path)])
    _assert_one_line(rc, capsys.readouterr().err, f"line {line_no}")


def test_stress_in_kbar_is_warned_about_before_training(tmp_path):
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from helpers import PairModel

    from nnpes.data.io import read_frames
    from nnpes.errors import LabelWarning
    from nnpes.train import fit

    frames = []
    for seed in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s * 1602.18)  # kbar, not eV/Å³
        frames.append(atoms)
    path = tmp_path / "cu_kbar.xyz"
    ase.io.write(path, frames, format="extxyz")
    config = {"loss": {"stress_weight": 1.0}, "training": {"max_steps": 1, "batch_size": 2, "progress": False}}
    with pytest.warns(LabelWarning, match=r"cu_kbar\.xyz.*kbar"):
        fit(PairModel(), read_frames(path), workdir=tmp_path / "run", config=config)


def test_a_test_file_with_an_element_the_model_cannot_know_fails_before_training(tmp_path, tiny_config, write, capsys):
    """The test set is evaluated only after training: its elements are checked before the first step."""
    silicon = tmp_path / "silicon.xyz"
    ase.io.write(silicon, ase.Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    before = compilation.count()
    rc = main(["train", write(_set(tiny_config(), "data.test", str(silicon))), "--workdir", str(tmp_path / "run")])
    _assert_one_line(rc, capsys.readouterr().err, "silicon.xyz: frame 0: element Si (Z=14)")
    assert compilation.count() == before and not (tmp_path / "run" / "checkpoints").exists()
