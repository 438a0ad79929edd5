"""What a run is made of: its frames, a potential with statistics fitted on the training
frames, and the graphs the loss and the validation see."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
import yaml

from nnpes.data.graph import FrameGraph, frame_to_graph
from nnpes.data.io import Frame, read_frames
from nnpes.data.statistics import e0_report, energy_scale, fit_e0, fit_model_statistics, mean_neighbors
from nnpes.errors import ConfigError, DataError, LabelWarning
from nnpes.potential import Potential
from nnpes.train import checkpoint
from nnpes.train.config import Config, DataConfig, changed_keys, load_config


def _as_list(p) -> list:
    return [] if p is None else [p] if isinstance(p, (str, os.PathLike, Frame)) else list(p)


def _read(paths: Sequence[str], data: DataConfig | None, require: Sequence[str]) -> list[Frame]:
    keys = (
        {}
        if data is None
        else dict(
            energy_key=data.energy_key,
            forces_key=data.forces_key,
            stress_key=data.stress_key,
            virial_key=data.virial_key,
            dipole_key=data.dipole_key,
        )
    )
    frames: list[Frame] = []
    for p in paths:
        frames += read_frames(p, require=require, **keys)
    return frames


def required_labels(cfg: Config) -> tuple[str, ...]:
    """Labels every training frame must carry, from the non-zero loss weights."""
    w = cfg.loss
    return tuple(
        n for n, x in (("energy", w.energy_weight), ("forces", w.forces_weight), ("stress", w.stress_weight)) if x > 0
    )


def warn_untrained_labels(cfg: Config, frames: Sequence[Frame]) -> list[str]:
    """Warn (LabelWarning, one line each) about labels the training frames carry but the loss
    ignores, e.g. stresses with ``loss.stress_weight: 0`` (the default); return the lines."""
    lines = []
    for label, weight in (("forces", cfg.loss.forces_weight), ("stress", cfg.loss.stress_weight)):
        carrying = sum(getattr(f, label) is not None for f in frames)
        if weight == 0 and carrying:
            lines.append(
                f"{carrying} of {len(frames)} training frames carry {label}, but loss.{label}_weight is 0: "
                f"{label} is not trained (set loss.{label}_weight{', e.g. 100' if label == 'stress' else ''})"
            )
    for line in lines:
        warnings.warn(line, LabelWarning, stacklevel=2)
    return lines


def load_datasets(cfg: Config) -> tuple[list[Frame], list[Frame], list[Frame]]:
    """(train, validation, test) frames of ``cfg.data``; validation split off train when no
    file is given. Raises ConfigError without a data section, DataError for unusable data."""
    if cfg.data is None:
        raise ConfigError("missing required key 'data.train'")
    d, require = cfg.data, required_labels(cfg)
    train, val = _read(_as_list(d.train), d, require), _read(_as_list(d.validation), d, require)
    test = _read(_as_list(d.test), d, ())
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    if not val and d.validation_fraction > 0 and len(train) > 1:
        n_val = max(1, int(round(d.validation_fraction * len(train))))
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in sorted(order[n_val:])]
    if d.max_train_frames is not None:
        train = train[: d.max_train_frames]
    if not train:
        raise DataError(f"{_as_list(d.train)[0]}: no training frames left after the validation split")
    return train, val, test


def gather_frames(items, require: Sequence[str] = (), what: str = "train") -> list[Frame]:
    """Frames from a list of :class:`Frame` and/or file paths (or one path); each frame must
    carry the ``require``d labels (DataError naming the frame otherwise)."""
    frames: list[Frame] = []
    for item in _as_list(items):
        frames += [item] if isinstance(item, Frame) else _read([os.fspath(item)], None, require)
    for i, f in enumerate(frames):
        missing = [n for n in require if getattr(f, n) is None]
        if missing:
            where = f"{f.source}: frame {f.index}" if f.source else f"{what} frame {i}"
            raise DataError(f"{where}: label '{missing[0]}' is missing (a non-zero loss weight needs it)")
    return frames


def potential_for_model(
    model: nn.Module,
    cutoff: float,
    train: Sequence[Frame],
    extra: Sequence[Frame] = (),
    seed: int = 0,
    isolated: Sequence[Frame] | None = None,
    terms=(),
    members: int = 0,
    shallow: bool = False,
) -> tuple[Potential, str]:
    """A fresh potential around ``model`` (cutoff in Å) with E0 (eV), scale (eV, force RMS),
    mean neighbour count and the model's own fitted constants fitted on the training frames;
    ``terms``: physical terms beside the network (:mod:`nnpes.terms`), or a callable
    (atomic numbers, cutoff) → terms; ``members`` ≥ 2: an ensemble of that many networks, or of
    that many readout heads of one network when ``shallow``.

    Returns the potential and a one-line report of the fitted statistics.
    """
    numbers = sorted({int(z) for f in list(train) + list(extra) for z in f.numbers})
    e0, method = fit_e0(train, numbers, isolated)
    scale, scale_method = energy_scale(train, numbers, e0)
    probe = [frame_to_graph(f, cutoff, numbers) for f in train[:1000]]
    terms = terms(numbers, cutoff) if callable(terms) else tuple(terms)
    potential = Potential.create(
        model, numbers, cutoff, seed, e0=e0, e0_method=method, scale=scale, avg_num_neighbors=mean_neighbors(probe),
        terms=terms, members=members if members >= 2 else 0, shallow=shallow and members >= 2,
    )  # fmt: skip
    potential = potential.replace(model=fit_model_statistics(potential.model, probe))
    report = (
        f"{e0_report(numbers, e0, method)}; scale {scale:.4f} eV ({scale_method}); "
        f"mean neighbours {potential.avg_num_neighbors:.2f}"
    )
    return potential, report


def build_potential(cfg: Config, train: Sequence[Frame], extra: Sequence[Frame] = ()) -> tuple[Potential, str]:
    """The potential ``cfg.model`` describes, statistics fitted on the training frames
    (isolated-atom energies from ``cfg.data.isolated_atoms`` when given)."""
    d = cfg.data
    isolated = read_frames(d.isolated_atoms, energy_key=d.energy_key) if d is not None and d.isolated_atoms else None
    potential, report = potential_for_model(
        cfg.build_model(), cfg.model.cutoff, train, extra, cfg.seed, isolated, terms=cfg.terms.build,
        members=getattr(cfg.model, "ensemble", 0), shallow=getattr(cfg.model, "ensemble_kind", "deep") == "shallow",
    )  # fmt: skip
    if d is not None:  # the model remembers where its labels were, for `nnpes evaluate`
        potential = potential.replace(label_keys=data_label_keys(d))
    return potential, report


def data_label_keys(d: DataConfig) -> tuple[tuple[str, str], ...]:
    """The (label, key) pairs a potential trained on ``d`` remembers (``Potential.label_keys``)."""
    keys = {"energy": d.energy_key, "forces": d.forces_key, "stress": d.stress_key, "virial": d.virial_key}
    return tuple(sorted(keys.items()))


def residual_graphs(potential: Potential, frames: Sequence[Frame]) -> list[FrameGraph]:
    """Graphs whose energy label is E − Σ E0 (eV, float64 on the host), what the loss compares."""
    out = []
    for f in frames:
        g = frame_to_graph(f, potential.cutoff, potential.atomic_numbers)
        if g.energy is not None:
            g = dataclasses.replace(g, energy=g.energy - potential.reference_energy(f.numbers))
        out.append(g)
    return out


def check_dtype(cfg: Config) -> np.dtype:
    """The float dtype of the run; float64 needs JAX's 64-bit mode, switched on by the caller."""
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError(
            "dtype: float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "at the start of the program (or set JAX_ENABLE_X64=1), or use dtype float32"
        )
    return np.dtype(np.float64 if cfg.dtype == "float64" else np.float32)


def prepare_workdir(cfg: Config) -> str:
    """Create the run directory, refuse to resume with a changed config, write config.yaml."""
    workdir = os.path.abspath(cfg.workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"workdir: cannot create the run directory {workdir} ({e.strerror})") from None
    resolved = os.path.join(workdir, "config.yaml")
    if checkpoint.latest_step(os.path.join(workdir, "checkpoints")) is not None and os.path.isfile(resolved):
        diff = changed_keys(load_config(resolved), cfg)
        if diff:
            raise ConfigError(
                f"{workdir}: cannot resume with a changed config; changed keys: {', '.join(diff)} "
                "(use a new --workdir, or change only training.max_steps/max_epochs/time_budget_s)"
            )
    with open(resolved + ".tmp", "w") as f:
        yaml.safe_dump(cfg.model_dump(mode="json"), f, sort_keys=False)
    os.replace(resolved + ".tmp", resolved)
    return workdir
