"""MD runs that end early keep what they did: an exploding trajectory stops at its first bad
frame with one line saying where and why (both backends, the same step), Ctrl-C returns the
steps completed, and ``nnpes md`` writes those frames before it exits; a restart from a
trajectory appends to it instead of overwriting it.

The blow-up is real physics, not an injected failure: velocity Verlet on a harmonic bond is
unstable for ω·dt > 2, so H₂ (period ≈ 7.5 fs) at dt = 3 fs gains a factor of ~4 in amplitude per
step until the bond passes the cutoff. The interrupts are raised from inside the run (a progress
callback), never raced from outside.
"""

from __future__ import annotations

import csv
import json

import ase
import ase.io
import numpy as np
import pytest
from md_models import HarmonicBond

import nnpes
import nnpes.cli
from nnpes.errors import Interrupted, SimulationError
from nnpes.md import MDConfig, run, run_md, simulation
from nnpes.md.guard import first_unstable

UNSTABLE = MDConfig(ensemble="nve", dt_fs=3.0, temperature_k=0.0, dtype="float64", every=1)
STABLE = UNSTABLE.replace(dt_fs=0.05)


@pytest.fixture(scope="module")
def bond():
    return nnpes.Potential.create(HarmonicBond(), [1], cutoff=3.0)


@pytest.fixture(scope="module")
def dimer():
    return ase.Atoms("H2", positions=[[0, 0, 0], [0.7401, 0, 0]])  # r0 + 1e-4 Å: ~1.4 mK of bond energy


@pytest.fixture(scope="module")
def files(bond, dimer, tmp_path_factory):
    root = tmp_path_factory.mktemp("md_stops")
    bond.save(root / "model")
    ase.io.write(root / "dimer.xyz", dimer)
    return root


def _raise_at(step: int):
    def callback(done, total):
        if done >= step:
            raise KeyboardInterrupt

    return callback


def test_first_unstable_names_non_finite_and_hot_frames():
    frames = {k: np.zeros((4, 2, 3)) for k in ("positions", "velocities", "forces")}
    frames |= {"epot": np.zeros(4), "ekin": np.array([0.01, 0.02, 0.03, 0.04])}  # 2 atoms: 77, 155, 232, 309 K
    assert first_unstable(frames, 2, limit_k=400.0) is None
    assert first_unstable(frames, 2, limit_k=200.0)[0] == 2
    frames["forces"][1, 0, 2] = np.nan
    index, reason = first_unstable(frames, 2, limit_k=400.0)
    assert index == 1 and "finite" in reason


@pytest.mark.parametrize("backend", ["jax-md", "ase"])
def test_an_exploding_run_stops_at_its_first_hot_frame_keeping_the_frames_before(bond, dimer, backend):
    with pytest.raises(SimulationError) as caught:
        run_md(bond, dimer, 200, UNSTABLE, backend=backend)
    result = caught.value.result
    assert result.stopped == "unstable" and result.backend == backend
    assert 3 <= result.steps < 20  # it blows up within a few steps, and stops there, not at step 200
    assert len(result.time_fs) == result.steps + 1  # every = 1: every step up to the last good one
    assert result.time_fs[-1] == pytest.approx(3.0 * result.steps)
    assert 30.0 < result.temperature_k.max() <= 3000.0  # T grows ~16-fold a step: the next one passed 3 000 K
    message = str(caught.value)
    assert "\n" not in message and f"step {result.steps + 1} " in message
    # jax-md saw the next frame's temperature; ASE's calculator refused the collapsed bond before it
    assert "above the limit of 3000 K" in message if backend == "jax-md" else "closer than 0.1 Å" in message


def test_both_backends_stop_at_the_same_step(bond, dimer):
    steps = {}
    for backend in ("jax-md", "ase"):
        with pytest.raises(SimulationError) as caught:
            run_md(bond, dimer, 200, UNSTABLE, backend=backend)
        steps[backend] = caught.value.result.steps
    assert steps["jax-md"] == steps["ase"]


def test_the_temperature_limit_is_an_option(bond, dimer):
    kept = {}
    for limit in (None, 100.0):
        with pytest.raises(SimulationError) as caught:
            run_md(bond, dimer, 200, UNSTABLE.replace(max_temperature_k=limit))
        kept[limit] = caught.value.result.temperature_k
    assert kept[100.0].max() <= 100.0 and len(kept[100.0]) < len(kept[None])
    with pytest.raises(SimulationError, match="above the limit"):
        run_md(bond, dimer, 200, STABLE.replace(max_temperature_k=1e-3))  # ½k·stretch²: up to 1.4 mK


def test_non_finite_numbers_at_the_start_stop_the_run_with_nothing_to_keep(bond, dimer):
    broken = bond.replace(params=jax_tree_nan(bond.params))
    with pytest.raises(SimulationError, match="step 0 .*no longer finite") as caught:
        run_md(broken, dimer, 10, STABLE)
    assert caught.value.result is None


def jax_tree_nan(params):
    import jax

    return jax.tree.map(lambda x: x * np.nan, params)


def test_ctrl_c_returns_the_completed_steps_and_the_run_continues_from_them(bond, dimer):
    sim = simulation(bond, dimer, STABLE)
    whole = run(sim, 400, chunk_steps=100)
    with pytest.raises(Interrupted) as caught:
        run(sim, 400, chunk_steps=100, callback=_raise_at(200))
    first = caught.value.result
    assert first.stopped == "interrupted" and first.steps == 200 and len(first.time_fs) == 201
    rest = run(sim, 200, state=first.state, neighbor=first.neighbor, chunk_steps=100, start_time_fs=first.time_fs[-1])
    assert rest.time_fs[-1] == pytest.approx(whole.time_fs[-1])
    np.testing.assert_allclose(rest.positions[-1], whole.positions[-1], atol=1e-12)


def test_ctrl_c_in_the_ase_backend_returns_the_completed_steps(bond, dimer):
    with pytest.raises(Interrupted) as caught:
        run_md(bond, dimer, 100, STABLE, backend="ase", callback=_raise_at(10))
    result = caught.value.result
    assert result.stopped == "interrupted" and result.steps == 10 and len(result.time_fs) == 11


def _md(files, *extra: str) -> list[str]:
    return ["md", str(files / "model"), str(files / "dimer.xyz"), "--ensemble", "nve", "--temperature", "0"] + [
        str(x) for x in extra
    ]


def test_nnpes_md_writes_the_frames_before_an_instability_and_exits_2(files, tmp_path, capsys):
    out, log, report = tmp_path / "traj.xyz", tmp_path / "thermo.csv", tmp_path / "md.json"
    args = _md(files, "--dt", 3, "--steps", 200, "--every", 1, "--dtype", "float64", "-q")
    rc = nnpes.cli.main(args + ["--out", str(out), "--log", str(log), "--json", str(report)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "dimer.xyz: the simulation became unstable at step" in err and str(out) in err
    summary = json.loads(report.read_text())
    assert summary["stopped"] == "unstable" and 3 <= summary["steps"] < 20
    frames = ase.io.read(out, ":")
    assert len(frames) == summary["steps"] + 1
    with open(log, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(frames)


def _progress_raises_at(monkeypatch, step: int, error: type[BaseException]) -> None:
    """The progress bar is the CLI's per-chunk callback: make it raise ``error`` at ``step``."""
    from rich.progress import Progress

    update = Progress.update

    def raise_at(self, task, **kwargs):
        update(self, task, **kwargs)
        if kwargs.get("completed", 0) >= step:
            raise error("simulated")

    monkeypatch.setattr(Progress, "update", raise_at)


def test_nnpes_md_writes_the_completed_steps_on_ctrl_c_and_exits_130(files, tmp_path, capsys, monkeypatch):
    _progress_raises_at(monkeypatch, 400, KeyboardInterrupt)
    out = tmp_path / "traj.xyz"
    rc = nnpes.cli.main(_md(files, "--dt", 0.5, "--steps", 1000, "--every", 100, "-q", "--out", out))
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted" in err and "400 of 1000 steps" in err and "Traceback" not in err
    assert [f.info["time_fs"] for f in ase.io.read(out, ":")] == [0.0, 50.0, 100.0, 150.0, 200.0]


@pytest.mark.parametrize("backend", ["jax-md", "ase"])
def test_nnpes_md_restarted_from_its_own_trajectory_appends_to_it(files, tmp_path, backend):
    traj, log = tmp_path / "traj.xyz", tmp_path / "thermo.csv"
    first = _md(files, "--dt", 0.5, "--steps", 400, "--every", 100, "-q", "--backend", backend)
    assert nnpes.cli.main(first + ["--out", str(traj), "--log", str(log)]) == 0
    again = ["md", files / "model", traj, "--ensemble", "nve", "--dt", 0.5, "--steps", 200, "--every", 100]
    again += ["-q", "--backend", backend, "--out", traj, "--log", log]
    assert nnpes.cli.main([str(x) for x in again]) == 0
    times = [f.info["time_fs"] for f in ase.io.read(traj, ":")]
    assert times == [0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0]  # no frame lost, none twice
    with open(log, newline="") as f:
        assert [float(r["time_fs"]) for r in csv.DictReader(f)] == times


def test_nnpes_md_writes_frames_as_they_are_recorded(files, tmp_path, monkeypatch):
    """A run killed without any chance to clean up (here: an exception nnpes does not catch, as
    SIGKILL or running out of memory would be) still leaves the frames recorded before it."""
    _progress_raises_at(monkeypatch, 400, RuntimeError)
    out, log = tmp_path / "traj.xyz", tmp_path / "thermo.csv"
    with pytest.raises(RuntimeError, match="simulated"):
        nnpes.cli.main(_md(files, "--dt", 0.5, "--steps", 1000, "--every", 100, "-q", "--out", out, "--log", log))
    assert [f.info["time_fs"] for f in ase.io.read(out, ":")] == [0.0, 50.0, 100.0, 150.0, 200.0]
    with open(log, newline="") as f:
        assert [float(r["time_fs"]) for r in csv.DictReader(f)] == [0.0, 50.0, 100.0, 150.0, 200.0]
