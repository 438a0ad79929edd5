"""The active-learning loop: train an ensemble → run MD → select uncertain, diverse frames → label
them with the reference calculator → add them → retrain, for ``rounds`` rounds.

Round 0 trains the ensemble of ``train`` from scratch; round r > 0 continues from round r − 1's
model (its weights, E0, scale: :func:`nnpes.train.fit` given a Potential) at the learning rate ×
``retrain.learning_rate_factor``, on every label so far. Each round's row (test errors, labels,
σ_F over the MD frames, frames above the threshold, frames chosen) goes to rounds.json/.csv;
the work directory layout and its resume rules are in :mod:`nnpes.learn.ledger`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from nnpes.learn import ledger
from nnpes.learn.config import LearnConfig


def learn(cfg: LearnConfig, on_round: Callable[[list[dict]], None] | None = None, config_dir: str = ".") -> list[dict]:
    """Run (or resume) the loop ``cfg`` describes in ``cfg.workdir``.

    Args:
        cfg: the validated config (:func:`nnpes.learn.config.load_learn_config`).
        on_round: called with all rows so far after each finished round (and once at the start
            when a resumed run has finished rounds).
        config_dir: where a ``module:attribute`` labeller may be imported from, besides the
            current directory.

    Returns:
        One row per round (see :data:`nnpes.learn.ledger.COLUMNS`; errors in meV/Å and meV, σ in eV/Å).

    Raises:
        ConfigError: a bad labeller, a work directory started with another config.
        DataError: unusable frames. TrainingError: a round's loss became NaN.
    """
    from nnpes.learn.label import make_calculator

    workdir = ledger.prepare(cfg)
    calculator = functools.cache(lambda: make_calculator(cfg.label.calculator, cfg.label.kwargs, (config_dir,)))
    if cfg.label.calculator == "tblite" or ":" in cfg.label.calculator:
        calculator()  # a missing package or module fails now, not after the first training
    _initial(cfg, workdir, calculator)
    test = _test(cfg, workdir, calculator)
    starts = _starts(cfg, workdir)
    rows = ledger.finished_rows(workdir)
    if rows and on_round is not None:
        on_round(rows)
    for r in range(len(rows), cfg.rounds):
        rows.append(run_round(cfg, workdir, r, test, starts, calculator))
        ledger.write_table(workdir, rows)
        if on_round is not None:
            on_round(rows)
    ledger.write_table(workdir, rows)
    return rows


def _initial(cfg: LearnConfig, workdir: str, calculator) -> None:
    """labelled.xyz with the initial frames (labelled by the calculator with frames.relabel_initial)."""
    from nnpes.data.io import read_frames
    from nnpes.train.setup import required_labels

    path = os.path.join(workdir, ledger.LEDGER)
    if os.path.isfile(path):
        return
    f = cfg.frames
    require = () if f.relabel_initial else required_labels(cfg.train)
    frames = read_frames(f.initial, require=require)
    frames = [frames[i] for i in ledger.evenly_spaced(len(frames), f.initial_count)]
    if f.relabel_initial:
        structures = [ledger.bare(x, learn_origin=f"initial:{x.index}") for x in frames]
        names = [f"{f.initial} frame {x.index}" for x in frames]
        labelled = ledger.label_saved(structures, names, calculator, os.path.join(workdir, "initial_labels"), cfg)
    else:
        labelled = []
        for x in frames:
            atoms = x.to_atoms()
            atoms.info["learn_origin"] = f"initial:{x.index}"
            labelled.append(atoms)
    ledger.require_frames(labelled, f"frames.initial ({f.initial})", least=2)
    ledger.write_xyz(path, ledger.tag(labelled, -1))


def _test(cfg: LearnConfig, workdir: str, calculator) -> list:
    """The test frames (relabelled once and cached in test.xyz with frames.relabel_test)."""
    from nnpes.data.io import read_frames

    f = cfg.frames
    if f.test is None:
        return []
    cache = os.path.join(workdir, "test.xyz")
    if f.relabel_test and not os.path.isfile(cache):
        frames = read_frames(f.test)
        frames = [frames[i] for i in ledger.evenly_spaced(len(frames), f.test_count)]
        structures = [ledger.bare(x, learn_origin=f"test:{x.index}") for x in frames]
        names = [f"{f.test} frame {x.index}" for x in frames]
        labelled = ledger.label_saved(structures, names, calculator, os.path.join(workdir, "test_labels"), cfg)
        ledger.write_xyz(cache, labelled)
    if f.relabel_test:
        return ledger.frames_of(ledger.read_xyz(cache), cache, ("energy", "forces"))
    frames = read_frames(f.test, require=("forces",))
    return [frames[i] for i in ledger.evenly_spaced(len(frames), f.test_count)]


def _starts(cfg: LearnConfig, workdir: str) -> list:
    """MD start structures: frames.start, else the initial frames of labelled.xyz."""
    from nnpes.data.io import read_frames

    if cfg.frames.start is not None:
        return [ledger.bare(x) for x in read_frames(cfg.frames.start)]
    return [ledger.bare(x) for x in ledger.frames_of(_ledger(workdir, 0), ledger.LEDGER)]


def _ledger(workdir: str, before: int) -> list:
    """The labelled structures of rounds < ``before`` (the initial ones have round −1)."""
    return [a for a in ledger.read_xyz(os.path.join(workdir, ledger.LEDGER)) if a.info["learn_round"] < before]


def run_round(cfg: LearnConfig, workdir: str, r: int, test: Sequence, starts: Sequence, calculator) -> dict:
    """Round ``r``: train on every label of rounds < r, test, explore, select, label; its row."""
    from nnpes.evaluate import evaluate_frames
    from nnpes.train.setup import required_labels

    t0 = time.perf_counter()
    rdir = ledger.round_dir(workdir, r)
    known = _ledger(workdir, r)
    labelled = ledger.frames_of(known, os.path.join(workdir, ledger.LEDGER), required_labels(cfg.train))
    train, val = ledger.split(labelled, cfg.frames.validation_fraction)
    potential, steps = train_round(cfg, r, train, val, rdir)
    metrics = evaluate_frames(potential, test)[0] if test else {}
    threshold = _threshold(cfg, potential)
    stats, selected = _explore(cfg, potential, r, starts, known, threshold, rdir)
    new = _label(cfg, workdir, r, selected, calculator, rdir)
    row = {
        "round": r,
        "labelled_frames": len(labelled),
        "train_frames": len(train),
        "validation_frames": len(val),
        "test_forces_mae_mev_per_a": metrics.get("forces_mae_mev_per_a"),
        "test_energy_mae_mev": metrics.get("energy_mae_mev"),
        "threshold_ev_a": threshold,
        **stats,
        "labelled_new": new,
        "train_steps": steps,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    ledger.write_text(os.path.join(rdir, "round.json"), json.dumps(row, indent=1))
    return row


def round_config(cfg: LearnConfig, r: int, workdir: str):
    """The training config of round r: budget from ``retrain`` (an exact step count lifts the
    epoch limit), and for r > 0 the learning rate × ``retrain.learning_rate_factor``."""
    t, rt = cfg.train, cfg.retrain
    steps = rt.steps if r == 0 else (rt.finetune_steps or rt.steps)
    training = t.training if steps is None else t.training.model_copy(update={"max_steps": steps, "max_epochs": 10**9})
    optimizer = t.optimizer
    if r > 0:
        optimizer = optimizer.model_copy(update={"learning_rate": optimizer.learning_rate * rt.learning_rate_factor})
    update = {"training": training, "optimizer": optimizer, "workdir": workdir, "data": None, "seed": t.seed + r}
    return t.model_copy(update=update)


def train_round(cfg: LearnConfig, r: int, train: Sequence, val: Sequence, rdir: str):
    """The round's ensemble (trained, or read back when the round's training had finished) and
    its step count."""
    from nnpes.model_files import load
    from nnpes.train import fit
    from nnpes.train.setup import build_potential

    tdir = os.path.join(rdir, "train")
    done = os.path.join(tdir, "result.json")
    if not os.path.isfile(done):
        start = (
            build_potential(cfg.train, train, val)[0]
            if r == 0
            else load(os.path.join(ledger.round_dir(os.path.dirname(rdir), r - 1), "train", "model"))
        )
        fit(start, train, val, config=round_config(cfg, r, tdir))
    with open(done) as f:
        steps = int(json.load(f)["step"])
    return load(os.path.join(tdir, "model")), steps


def _threshold(cfg: LearnConfig, potential) -> float:
    """σ_F, eV/Å, above which an MD frame is a candidate: select.threshold_ev_a, else
    select.threshold_factor × the ensemble's MD alarm threshold (fitted on validation frames)."""
    from nnpes.errors import ConfigError

    if cfg.select.threshold_ev_a is not None:
        return float(cfg.select.threshold_ev_a)
    if potential.force_std_alarm_ev_a is None:
        raise ConfigError("select.threshold_ev_a: the model has no fitted alarm threshold; give one (eV/Å)")
    return float(cfg.select.threshold_factor * potential.force_std_alarm_ev_a)


def _explore(cfg: LearnConfig, potential, r: int, starts, known, threshold: float, rdir: str) -> tuple[dict, list]:
    """(numbers for the row, chosen structures): MD, candidates, selection; read back when the
    round's exploration had finished (explore.json)."""
    from nnpes.learn.explore import candidates, explore, structure
    from nnpes.learn.select import descriptor, select

    done, chosen_file = os.path.join(rdir, "explore.json"), os.path.join(rdir, "selected.xyz")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f), ledger.read_xyz(chosen_file)
    runs = explore(potential, starts, cfg.md, r, cfg.seed, os.path.join(rdir, "md"))
    sigma = np.concatenate([t.sigma for t in runs]) if runs else np.zeros(0)
    pool = candidates(runs, threshold)
    s = cfg.select
    known_d = [descriptor(a.numbers, a.positions, a.cell[:], a.pbc) for a in known]
    picked = select(pool, s.per_round, threshold, s.min_distance_a, s.max_per_trajectory, s.order, known_d)
    chosen = [structure(runs[pool[i].trajectory], pool[i].frame) for i in picked]
    finite = sigma[np.isfinite(sigma)]
    stats = {
        "md_frames": int(sigma.size),
        "mean_force_std_ev_a": float(finite.mean()) if finite.size else None,
        "above_threshold": int(np.sum(~(sigma <= threshold))),
        "unstable_runs": sum(t.unstable is not None for t in runs),
        "selected": len(chosen),
    }
    ledger.write_xyz(chosen_file, chosen)
    ledger.write_text(done, json.dumps(stats, indent=1))
    return stats, chosen


def _label(cfg: LearnConfig, workdir: str, r: int, chosen: Sequence, calculator, rdir: str) -> int:
    """Label the chosen structures and add them to labelled.xyz (once); how many were added."""
    path = os.path.join(workdir, ledger.LEDGER)
    everything = ledger.read_xyz(path)
    added = [a for a in everything if a.info["learn_round"] == r]
    if added or not chosen:
        return len(added)
    names = [f"round_{r:03d}/md/{a.info['learn_origin'].replace(':', '.xyz frame ', 1)}" for a in chosen]
    new = ledger.label_saved(chosen, names, calculator, os.path.join(rdir, "labels"), cfg)
    if new:
        ledger.write_xyz(path, everything + ledger.tag(new, r))
    return len(new)
