"""``nnpes evaluate``: metrics per file as JSON (null for labels a file lacks), a parity plot,
labels under the model's training keys or given ones, one line per warning and per error."""

from __future__ import annotations

import json
from importlib import resources

import ase.build
import numpy as np
import pytest

from nnpes.cli import main as cli_main

ETHANOL_TEST = str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz")


def test_evaluate_cli_writes_json_with_nulls_for_absent_labels(tmp_path, ethanol_test_path, models):
    import ase.io

    energies_only = tmp_path / "energies_only.xyz"
    frames = ase.io.read(ethanol_test_path, index=":5")
    for a in frames:
        e = a.get_potential_energy()
        a.calc = None
        a.info["energy"] = e
    ase.io.write(energies_only, frames)
    out = tmp_path / "out.json"
    plot = tmp_path / "parity.png"
    rc = cli_main(
        [
            "evaluate",
            models["plain"],
            ethanol_test_path,
            str(energies_only),
            "--json",
            str(out),
            "--plot",
            str(plot),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    full, partial = result["files"]
    assert full["frames"] == 100 and full["atoms"] == 900
    assert full["forces_mae_mev_per_a"] > 0 and full["stress_mae_mev_per_a3"] is None
    assert partial["energy_mae_mev"] > 0 and partial["forces_mae_mev_per_a"] is None
    assert plot.stat().st_size > 1000


# -- label keys, unit warnings, bad input ----------------------------------------------------------
# One untrained tiny NequIP, saved twice: without a label-key record and
# with {"energy": "REF_energy", "forces": "REF_forces"}. Every evaluated file has 5 ethanol frames,
# so the padded shapes are those of the 5-frame file above and each model compiles once.
def _tiny_potential():
    import nnpes

    model = nnpes.models.NequIP(channels=4, l_max=1, num_layers=1, radial_features=(8,))
    return nnpes.Potential.create(model, [1, 6, 8], 4.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    pot = _tiny_potential()  # initialised once (eager init of the weights takes a second)
    pot.save(root / "plain")
    pot.replace(label_keys=(("energy", "REF_energy"), ("forces", "REF_forces"))).save(root / "ref")
    return {"plain": str(root / "plain"), "ref": str(root / "ref")}


@pytest.fixture(scope="module")
def ref_file(tmp_path_factory) -> str:
    """5 ethanol frames with MACE-style keys: info REF_energy, arrays REF_forces, no calculator."""
    import ase.io

    images = ase.io.read(ETHANOL_TEST, index=":5")
    for a in images:
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.calc = None
    path = tmp_path_factory.mktemp("data") / "ethanol_ref.xyz"
    ase.io.write(path, images, format="extxyz")
    return str(path)


def _evaluate(capsys, *argv: str) -> tuple[int, list[str], str]:
    """``nnpes evaluate ARGV`` in-process: (exit status, stderr lines, stdout)."""
    rc = cli_main(["evaluate", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, [line for line in err.splitlines() if line.strip()], out


def test_ref_keys_without_options_fail_listing_the_keys_found(capsys, models, ref_file):
    rc, err, _ = _evaluate(capsys, models["plain"], ref_file)
    assert rc == 2 and len(err) == 1
    for fragment in (ref_file, "no frame has energy (key 'energy')", "REF_energy", "REF_forces", "--energy-key"):
        assert fragment in err[0]


def test_ref_keys_given_on_the_command_line_evaluate(capsys, tmp_path, models, ref_file):
    out = tmp_path / "m.json"
    argv = (models["plain"], ref_file, "--energy-key", "REF_energy", "--forces-key", "REF_forces", "--json", str(out))
    rc, err, _ = _evaluate(capsys, *argv)
    assert rc == 0 and err == []
    result = json.loads(out.read_text())
    assert result["label_keys"]["energy"] == "REF_energy"
    (metrics,) = result["files"]
    assert metrics["energy_mae_mev"] > 0 and metrics["forces_mae_mev_per_a"] > 0


def test_model_trained_with_ref_keys_evaluates_ref_file_without_options(capsys, tmp_path, models, ref_file):
    out = tmp_path / "m.json"
    rc, err, _ = _evaluate(capsys, models["ref"], ref_file, "--json", str(out))
    assert rc == 0 and err == []
    (metrics,) = json.loads(out.read_text())["files"]
    assert metrics["energy_mae_mev"] > 0 and metrics["forces_mae_mev_per_a"] > 0


def test_label_absent_from_a_file_is_one_warning_line(capsys, tmp_path, models, ref_file):
    out = tmp_path / "m.json"
    rc, err, table = _evaluate(capsys, models["plain"], ref_file, "--energy-key", "REF_energy", "--json", str(out))
    assert rc == 0 and len(err) == 1
    assert err[0].startswith("nnpes evaluate: warning: ")
    assert all(s in err[0] for s in (ref_file, "no frame has forces (key 'forces')", "REF_forces", "--forces-key"))
    (metrics,) = json.loads(out.read_text())["files"]
    assert metrics["energy_mae_mev"] > 0 and metrics["forces_mae_mev_per_a"] is None
    assert "—" in table


def test_kbar_stress_is_one_warning_line_and_the_plot_has_a_stress_panel(capsys, tmp_path, models):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    images = ase.io.read(ETHANOL_TEST, index=":5")
    for i, a in enumerate(images):  # ethanol in a periodic 10 Å box, stress in kbar
        results = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "stress": np.full(6, 5.0 + i)}
        a.set_cell(np.eye(3) * 10.0)
        a.center()
        a.pbc = True
        a.calc = SinglePointCalculator(a, **results)
    path = str(tmp_path / "boxed_kbar.xyz")
    ase.io.write(path, images, format="extxyz")
    plot = tmp_path / "parity.png"
    rc, err, _ = _evaluate(capsys, models["plain"], path, "--plot", str(plot))
    assert rc == 0 and len(err) == 1
    assert path in err[0] and "kbar" in err[0] and err[0].startswith("nnpes evaluate: warning: ")
    assert plot.stat().st_size > 1000


def _fake_parity(name: str, n: int = 3, offset: float = 0.0, stress: bool = True):
    """(name, frames, predictions) without a model: predictions = reference + offset."""
    import dataclasses

    from nnpes.data.io import frame_from_atoms

    frames, preds = [], []
    for i in range(n):
        atoms = ase.build.bulk("Cu", "fcc", a=3.6 + 0.01 * i, cubic=True)
        f = frame_from_atoms(atoms, source=name, index=i)
        f = dataclasses.replace(
            f, energy=-14.0 - i, forces=np.full((4, 3), 0.1 * i), stress=np.eye(3) * 0.01 * i if stress else None
        )
        frames.append(f)
        preds.append({"energy": f.energy + offset, "forces": f.forces + offset, "stress": np.eye(3) * 0.01 * i})
    return name, frames, preds


def test_parity_figure_has_stress_panel_mae_and_train_underneath(tmp_path):
    from nnpes.cli.evaluate import parity_figure, parity_plot

    parity = [_fake_parity("test.xyz", offset=0.01), _fake_parity("my_train.xyz", offset=0.02)]
    fig = parity_figure(parity)
    assert len(fig.axes) == 3
    assert "GPa" in fig.axes[2].get_xlabel()
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0].startswith("my_train.xyz: MAE") and labels[1].startswith("test.xyz: MAE")
        train, test = ax.collections
        assert train.get_zorder() < test.get_zorder()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][1] == "test.xyz: MAE 2.5 meV/atom"
    assert len(parity_figure([_fake_parity("mol.xyz", stress=False)]).axes) == 2
    parity_plot(parity, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _bad_inputs(tmp_path, models) -> dict:
    """case → (argv, fragments the one stderr line must hold)."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    good = ETHANOL_TEST
    nan_forces = ase.io.read(good, index=":2")
    nan_forces[1].calc.results["forces"][3, 1] = np.nan
    ase.io.write(tmp_path / "nan_forces.xyz", nan_forces, format="extxyz")
    cu = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.calc = SinglePointCalculator(cu, energy=-14.0, forces=np.zeros((4, 3)))
    ase.io.write(tmp_path / "copper.xyz", cu, format="extxyz")
    no_labels = _write(
        tmp_path / "no_labels.xyz", '2\nProperties=species:S:1:pos:R:3 pbc="F F F"\nH 0 0 0\nH 0 0 0.74\n'
    )
    (tmp_path / "empty_dir").mkdir()
    plain = models["plain"]
    return {
        "missing_data_file": ([plain, str(tmp_path / "nowhere.xyz")], ["nowhere.xyz", "no such file"]),
        "unreadable_file": ([plain, _write(tmp_path / "garbage.xyz", "not\nxyz\n")], ["garbage.xyz"]),
        "file_without_labels": ([plain, no_labels], ["no_labels.xyz", "no frame has energy", "--energy-key"]),
        "unknown_element": ([plain, str(tmp_path / "copper.xyz")], ["copper.xyz", "frame 0", "Cu"]),
        "model_dir_missing": ([str(tmp_path / "no_model"), good], ["no_model"]),
        "not_a_model_dir": ([str(tmp_path / "empty_dir"), good], ["empty_dir", "not a model directory"]),
        "batch_size_zero": ([plain, good, "--batch-size", "0"], ["--batch-size", "0"]),
        "nan_force": ([plain, str(tmp_path / "nan_forces.xyz")], ["nan_forces.xyz", "frame 1", "forces", "NaN"]),
        "second_file_bad": ([plain, good, str(tmp_path / "absent.xyz")], ["absent.xyz", "no such file"]),
        "plot_folder_missing": ([plain, good, "--plot", str(tmp_path / "no" / "p.png")], ["--plot", "does not exist"]),
        "json_is_a_directory": ([plain, good, "--json", str(tmp_path)], ["--json", "is a directory"]),
    }


BAD_CASES = [
    "missing_data_file",
    "unreadable_file",
    "file_without_labels",
    "unknown_element",
    "model_dir_missing",
    "not_a_model_dir",
    "batch_size_zero",
    "nan_force",
    "second_file_bad",
    "plot_folder_missing",
    "json_is_a_directory",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_error_line(capsys, tmp_path, models, case):
    argv, fragments = _bad_inputs(tmp_path, models)[case]
    rc, err, _ = _evaluate(capsys, *argv)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("nnpes evaluate: error: ")
    for fragment in fragments:
        assert fragment in err[0], f"{fragment!r} missing from {err[0]!r}"


def test_stress_is_only_missed_where_the_file_has_a_stress_like_key(tmp_path):
    import warnings

    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from nnpes.data.io import read_frames
    from nnpes.errors import LabelWarning
    from nnpes.evaluate import check_labels

    keys = {"energy": "energy", "forces": "forces", "stress": "stress", "virial": "virial"}
    cu = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.calc = SinglePointCalculator(cu, energy=-14.0, forces=np.zeros((4, 3)))
    ase.io.write(tmp_path / "plain.xyz", cu, format="extxyz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a periodic file without stress is normal: no warning
        assert check_labels(read_frames(tmp_path / "plain.xyz"), keys) == ("energy", "forces")
    cu.info["REF_stress"] = np.full(6, 0.01)
    ase.io.write(tmp_path / "ref_stress.xyz", cu, format="extxyz")
    with pytest.warns(LabelWarning, match=r"ref_stress.xyz: no frame has stress .*candidates: REF_stress"):
        check_labels(read_frames(tmp_path / "ref_stress.xyz"), keys)
