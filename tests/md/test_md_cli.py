"""``nnpes md`` (nnpes.cli.md): it writes what it promises, restarts from a trajectory and
reports user errors as one-line nnpes errors."""

from __future__ import annotations

import json

import ase
import ase.io
import numpy as np
import pytest

from nnpes.errors import NnpesError


def test_cli_md_writes_trajectory_thermo_and_json(chno_potential, ethanol, tmp_path):
    import argparse

    from nnpes.cli import md as cli

    model_dir = tmp_path / "model"
    chno_potential.save(model_dir)
    start = tmp_path / "start.xyz"
    ase.io.write(start, [ethanol, ethanol], format="extxyz")
    parser = argparse.ArgumentParser(prog="nnpes")
    cli.register(parser.add_subparsers(dest="command"))
    out, log, report = tmp_path / "traj.xyz", tmp_path / "thermo.csv", tmp_path / "md.json"
    plot = tmp_path / "nve.png"
    args = parser.parse_args(
        [
            "md",
            str(model_dir),
            str(start),
            "--ensemble",
            "nve",
            "--dt",
            "0.25",
            "--steps",
            "2000",
            "--every",
            "100",
            "--dtype",
            "float64",
            "--out",
            str(out),
            "--log",
            str(log),
            "--json",
            str(report),
            "--plot",
            str(plot),
        ]
    )
    assert args.func(args) == 0
    import matplotlib.image

    assert matplotlib.image.imread(plot).shape[:2] == (660, 840)  # the thermo plot: 7 × 5.5 in at 120 dpi
    summary = json.loads(report.read_text())
    assert set(summary) >= {
        "atoms",
        "steps",
        "dt_fs",
        "ensemble",
        "steps_per_s",
        "ns_per_day",
        "drift_mev_per_atom_per_ps",
        "neighbor_reallocations",
        "compilations",
    }
    assert summary["atoms"] == 9 and summary["steps"] == 2000 and summary["ensemble"] == "nve"
    assert abs(summary["drift_mev_per_atom_per_ps"]) < 0.1
    frames = ase.io.read(out, index=":")
    assert len(frames) == 21
    thermo = np.genfromtxt(log, delimiter=",", names=True)
    np.testing.assert_allclose([f.get_potential_energy() for f in frames], thermo["epot_ev"], rtol=1e-12)
    assert np.any(frames[-1].get_velocities() != 0)
    assert thermo.dtype.names == (
        "time_fs",
        "epot_ev",
        "ekin_ev",
        "etot_ev",
        "temperature_k",
        "pressure_bar",
        "volume_a3",
    )
    assert thermo["time_fs"][-1] == pytest.approx(500.0)
    # the trajectory restarts a run: its last frame, velocities and clock included, is the new start
    restart, restart_log = tmp_path / "restart.json", tmp_path / "restart.csv"
    args = parser.parse_args(
        [
            "md",
            str(model_dir),
            str(out),
            "--ensemble",
            "nvt",
            "--dt",
            "0.25",
            "--steps",
            "10",
            "--every",
            "5",
            "--dtype",
            "float64",
            "--backend",
            "ase",
            "--json",
            str(restart),
            "--log",
            str(restart_log),
        ]
    )
    assert args.func(args) == 0
    assert json.loads(restart.read_text())["drift_mev_per_atom_per_ps"] is None
    np.testing.assert_allclose(np.genfromtxt(restart_log, delimiter=",", names=True)["time_fs"], [500, 501.25, 502.5])


def test_cli_md_user_errors_are_nnpes_errors(chno_potential, tmp_path):
    import argparse

    from nnpes.cli import md as cli

    model_dir = tmp_path / "model"
    chno_potential.save(model_dir)
    parser = argparse.ArgumentParser(prog="nnpes")
    cli.register(parser.add_subparsers(dest="command"))
    bad = tmp_path / "bad.xyz"
    bad.write_text("this is not a structure\n")
    silicon = tmp_path / "si.xyz"
    ase.io.write(silicon, ase.Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    for path, match in ((tmp_path / "missing.xyz", "no such file"), (bad, "cannot read"), (silicon, "not known")):
        args = parser.parse_args(["md", str(model_dir), str(path), "--steps", "1"])
        with pytest.raises(NnpesError, match=match):
            args.func(args)


def test_cli_md_bad_option_is_a_one_line_config_error(chno_potential, ethanol, tmp_path, capsys):
    import nnpes.cli

    model_dir = tmp_path / "model"
    chno_potential.save(model_dir)
    start = tmp_path / "start.xyz"
    ase.io.write(start, ethanol)
    assert nnpes.cli.main(["md", str(model_dir), str(start), "--dt", "-1", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "nnpes md: error: --dt: Input should be greater than 0 (got -1.0)\n"
