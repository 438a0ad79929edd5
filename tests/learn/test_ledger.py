"""The active-learning work directory (nnpes.learn.ledger) and exploration (nnpes.learn.explore):
labels kept as they come, splits that never move a frame, runs that blow up keep their frames."""

from __future__ import annotations

import types

import ase.build
import numpy as np
import pytest

from nnpes.errors import SimulationError
from nnpes.learn import ledger
from nnpes.learn.config import MDConfigSection


def _structures(n: int) -> list:
    out = []
    for seed in range(n):
        atoms = ase.build.bulk("Cu", "fcc", a=3.6).repeat((2, 2, 1))
        atoms.pbc, atoms.cell = False, np.zeros((3, 3))
        atoms.rattle(0.05, seed=seed)
        out.append(atoms)
    return out


def test_labels_saved_one_by_one_are_read_back_not_recomputed(tmp_path):
    from ase.calculators.emt import EMT

    cfg = types.SimpleNamespace(label=types.SimpleNamespace(max_force_ev_a=50.0))
    structures = _structures(3)
    first = ledger.label_saved(structures, ["a", "b", "c"], EMT, str(tmp_path / "labels"), cfg)
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["0000.xyz", "0001.xyz", "0002.xyz"]

    def no_calculator():
        raise AssertionError("the calculator was asked again")

    again = ledger.label_saved(structures, ["a", "b", "c"], no_calculator, str(tmp_path / "labels"), cfg)
    for a, b in zip(first, again):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-6)


def test_split_never_moves_a_frame_when_labels_are_added():
    frames = list(range(10))
    train, val = ledger.split(frames, 0.2)
    assert val == [4, 9] and len(train) == 8
    train2, val2 = ledger.split(frames + list(range(10, 15)), 0.2)
    assert train2[: len(train)] == train and val2[: len(val)] == val


def test_evenly_spaced_spans_the_file():
    assert ledger.evenly_spaced(1000, 5).tolist() == [0, 250, 500, 749, 999]
    assert ledger.evenly_spaced(3, 10).tolist() == [0, 1, 2]
    assert ledger.evenly_spaced(4, None).tolist() == [0, 1, 2, 3]


class _Recorded:
    """The part of an MDResult exploration reads: three recorded frames of a 4-atom cluster."""

    def __init__(self, atoms):
        self.numbers, self.pbc = atoms.numbers, atoms.pbc
        self.positions = np.stack([atoms.positions + 0.1 * k for k in range(3)])
        self.cells = np.zeros((3, 3, 3))
        self.force_std_ev_a = np.array([0.1, 0.8, np.nan])
        self.written = None

    def write_trajectory(self, path):
        self.written = path


def test_a_run_that_blows_up_keeps_its_frames_as_candidates(tmp_path, monkeypatch):
    import nnpes.md
    from nnpes.learn.explore import candidates, explore

    recorded = _Recorded(_structures(1)[0])

    def exploding(potential, atoms, steps, options, backend, source):
        raise SimulationError(f"{source}: temperature 31000 K at step 40\n(more)", result=recorded)

    monkeypatch.setattr(nnpes.md, "run_md", exploding)
    with pytest.warns(UserWarning, match="md T900_0: start 0: temperature 31000 K at step 40; its recorded frames"):
        (run,) = explore(None, _structures(1), MDConfigSection(temperatures_k=(900.0,)), 0, 0, str(tmp_path))
    assert run.unstable.startswith("start 0: temperature") and recorded.written.endswith("T900_0.xyz")
    pool = candidates([run], threshold=0.5)
    assert [c.frame for c in pool] == [1, 2]  # the start frame is not a candidate; NaN σ counts as above
