"""``nnpes.md.plots``: the thermo plot draws what the run recorded, per atom, relative to the start."""

from __future__ import annotations

import numpy as np
import pytest

from nnpes.md.config import MDConfig
from nnpes.md.plots import thermo_figure, thermo_plot
from nnpes.md.results import COLUMNS, md_result


def _result(ensemble: str, frames: int = 6, atoms: int = 3):
    rng = np.random.default_rng(0)
    columns = {k: np.zeros((frames, atoms, 3)) for k in ("positions", "velocities", "forces")}
    columns |= {"time_fs": np.arange(frames) * 5.0, "cells": np.tile(np.eye(3) * 10, (frames, 1, 1))}
    columns |= {"epot": -10 + rng.normal(size=frames) * 0.01, "ekin": 0.1 + rng.normal(size=frames) * 0.01}
    columns |= {"pressure_bar": np.ones(frames), "volume_a3": 1000 + np.arange(frames, dtype=float)}
    assert set(columns) == set(COLUMNS)
    return md_result(
        columns, numbers=[1, 1, 8], pbc=[True] * 3, options=MDConfig(ensemble=ensemble, dt_fs=0.5), steps=frames * 10,
        wall_s=1.0, steps_per_s=1.0, compilations=1, backend="jax-md",
    )  # fmt: skip


def test_nve_energy_panel_is_the_change_per_atom_in_mev():
    result = _result("nve")
    fig = thermo_figure(result)
    energy, temperature = fig.axes
    lines = {line.get_label(): line for line in energy.get_lines()}
    np.testing.assert_allclose(lines["E_tot"].get_ydata(), (result.etot - result.etot[0]) / 3 * 1e3)
    np.testing.assert_allclose(lines["E_pot"].get_xdata(), result.time_fs)
    assert "drift" in energy.get_title()
    np.testing.assert_allclose(temperature.get_lines()[0].get_ydata(), result.temperature_k)


def test_npt_adds_the_volume_panel():
    result = _result("npt")
    fig = thermo_figure(result)
    assert len(fig.axes) == 3
    np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(), result.volume_a3)
    assert "drift" not in fig.axes[0].get_title()


@pytest.mark.parametrize("bad", [3, 5])
def test_a_run_that_blew_up_is_plotted_up_to_its_first_non_finite_frame(bad, tmp_path, monkeypatch):
    result = _result("nve")
    result.epot[bad] = np.nan
    drawn = []
    monkeypatch.setattr("nnpes.md.plots.thermo_figure", lambda r: drawn.append(r) or thermo_figure(r))
    thermo_plot(result, str(tmp_path / "t.png"))
    assert len(drawn[0].time_fs) == bad and (tmp_path / "t.png").stat().st_size > 0
