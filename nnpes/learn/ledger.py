"""The files of an active-learning work directory, written so that a killed run loses nothing.

::

    WORKDIR/learn.yaml           the config (a resumed run must match it, ``rounds`` aside)
    WORKDIR/labelled.xyz         every label so far: info learn_round (−1: initial) and learn_origin
    WORKDIR/test.xyz             the relabelled test frames (frames.relabel_test)
    WORKDIR/rounds.json, .csv    one row per finished round
    WORKDIR/round_NNN/train/     the round's training run (nnpes train layout; model/ inside)
    WORKDIR/round_NNN/md/        one extxyz per MD run, σ_F per frame
    WORKDIR/round_NNN/selected.xyz, explore.json   the chosen frames, the exploration's numbers
    WORKDIR/round_NNN/labels/    one file per label as it comes back from the calculator
    WORKDIR/round_NNN/round.json the round's row: its presence marks the round finished

Every file is written to a temporary name and renamed (atomic on POSIX), and each label is saved
the moment the calculator returns it, so rerunning ``nnpes learn`` continues after the last
finished round and never asks the calculator twice for the same frame.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import yaml

from nnpes.errors import ConfigError, DataError
from nnpes.learn.config import RESUMABLE, LearnConfig

LEDGER = "labelled.xyz"
COLUMNS = (  # rounds.csv, in order
    "round", "labelled_frames", "train_frames", "validation_frames", "test_forces_mae_mev_per_a",
    "test_energy_mae_mev", "threshold_ev_a", "md_frames", "mean_force_std_ev_a", "above_threshold",
    "unstable_runs", "selected", "labelled_new", "train_steps", "elapsed_s",
)  # fmt: skip
_COSMETIC = ("train.training.progress", "train.training.log_every_s", "train.training.tensorboard")


def round_dir(workdir: str, r: int) -> str:
    return os.path.join(workdir, f"round_{r:03d}")


def prepare(cfg: LearnConfig) -> str:
    """Create the work directory; refuse one started with a different config; write learn.yaml."""
    from nnpes.train.config import flatten

    workdir = os.path.abspath(cfg.workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"workdir: cannot create {workdir} ({e.strerror})") from None
    path = os.path.join(workdir, "learn.yaml")
    new = cfg.model_dump(mode="json")
    if os.path.isfile(path):
        with open(path) as f:
            old = flatten(yaml.safe_load(f) or {})
        flat = flatten(new)
        changed = [k for k in sorted(set(old) | set(flat)) if old.get(k) != flat.get(k)]
        changed = [k for k in changed if k not in RESUMABLE and k not in _COSMETIC]
        if changed:
            raise ConfigError(
                f"{workdir}: was started with another config; changed keys: {', '.join(changed)} "
                "(use a new --workdir; only rounds may change when resuming)"
            )
    write_text(path, yaml.safe_dump(new, sort_keys=False))
    return workdir


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, then rename)."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_xyz(path: str, structures: Sequence) -> None:
    """extxyz of ``structures`` (labels from their calculators), written atomically; an empty list
    writes an empty file."""
    import ase.io

    buffer = io.StringIO()
    if structures:
        ase.io.write(buffer, list(structures), format="extxyz")
    write_text(path, buffer.getvalue())


def read_xyz(path: str) -> list:
    """The structures of an extxyz file written by :func:`write_xyz` ([] when empty or absent)."""
    import ase.io

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return []
    return ase.io.read(path, index=":", format="extxyz")


def evenly_spaced(n: int, count: int | None) -> np.ndarray:
    """Indices of ``count`` frames spread evenly over ``n`` (all when count is None or ≥ n)."""
    if count is None or count >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, count)).astype(int))


def bare(frame, **info):
    """A :class:`nnpes.data.io.Frame`'s structure as ``ase.Atoms`` without labels, ``info`` set."""
    import ase

    atoms = ase.Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    atoms.info.update(info)
    return atoms


def label_saved(structures: Sequence, names: Sequence[str], calculator: Callable[[], object], folder: str, cfg) -> list:
    """Labels of ``structures``, each saved to ``folder/NNNN.xyz`` as soon as it is computed;
    those already saved (an earlier, killed run) are read back, not recomputed. ``calculator``
    is called only when some structure still needs it. Failures: one warning each, left out."""
    from nnpes.learn.label import label

    os.makedirs(folder, exist_ok=True)
    file = lambda i: os.path.join(folder, f"{i:04d}.xyz")  # noqa: E731
    todo = [i for i in range(len(structures)) if not os.path.isfile(file(i))]
    if todo:
        save = lambda k, atoms: write_xyz(file(todo[k]), [atoms])  # noqa: E731
        label([structures[i] for i in todo], calculator(), [names[i] for i in todo], cfg.label.max_force_ev_a, save)
    return [read_xyz(file(i))[0] for i in range(len(structures)) if os.path.isfile(file(i))]


def tag(structures: Sequence, r: int) -> list:
    """``structures`` with info learn_round = r (their calculators, i.e. labels, kept)."""
    for atoms in structures:
        atoms.info["learn_round"] = r
    return list(structures)


def frames_of(structures: Sequence, source: str, require: Sequence[str] = ()) -> list:
    """Validated :class:`nnpes.data.io.Frame` objects of labelled structures."""
    from nnpes.data.io import frame_from_atoms

    return [frame_from_atoms(a, source=source, index=i, require=require) for i, a in enumerate(structures)]


def split(frames: Sequence, fraction: float) -> tuple[list, list]:
    """(train, validation): every k-th frame validates, k = max(2, round(1/fraction)); frames
    added later are split by the same rule, so earlier frames never change side."""
    k = max(2, int(round(1.0 / fraction)))
    return [f for i, f in enumerate(frames) if i % k != k - 1], [f for i, f in enumerate(frames) if i % k == k - 1]


def finished_rows(workdir: str) -> list[dict]:
    """The rows of the finished rounds (round_NNN/round.json), in order, up to the first gap."""
    rows = []
    for path in sorted(glob.glob(os.path.join(workdir, "round_*", "round.json"))):
        with open(path) as f:
            row = json.load(f)
        if row.get("round") != len(rows):
            break
        rows.append(row)
    return rows


def write_table(workdir: str, rows: Sequence[dict]) -> None:
    """rounds.json and rounds.csv (one row per finished round), both atomically."""
    write_text(os.path.join(workdir, "rounds.json"), json.dumps({"rounds": list(rows)}, indent=1))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    write_text(os.path.join(workdir, "rounds.csv"), buffer.getvalue())


def require_frames(frames: Sequence, what: str, least: int = 1) -> None:
    if len(frames) < least:
        raise DataError(f"{what}: {len(frames)} labelled frame(s), at least {least} needed")
