"""Fine-tuning a trained model: the run ``nnpes train`` makes when the config has ``init_from``.

The base potential (a model directory, or a run directory holding ``model/``) is the starting
point: its weights, cutoff, mean neighbour count and energy scale are kept. It is grown to know
every element of the new data (:mod:`nnpes.train.new_species`); its reference energies E0 are
refitted to what the base network leaves unexplained in the new energies; the run's learning
rate is the config's times ``finetune.learning_rate_factor`` (0.1 by default): a trained network
sits near a minimum, and a from-scratch rate would first throw it out of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from nnpes.data.io import Frame
from nnpes.errors import ConfigError, ModelError
from nnpes.potential import Potential
from nnpes.train.config import Config


def load_base(path: str) -> Potential:
    """The ``init_from`` potential; a problem with it is one ConfigError line naming the key."""
    from nnpes.model_files import load

    try:
        base = load(path)
    except ModelError as e:
        raise ConfigError(f"init_from: {e}") from None
    if base.members:
        raise ConfigError(
            f"init_from: {path} is an ensemble of {base.members} networks; fine-tuning one is not supported"
        )
    return base


def finetune_potential(cfg: Config, train: Sequence[Frame], extra: Sequence[Frame] = ()) -> tuple[Potential, str, Any]:
    """The potential a fine-tuning run starts from, for training frames ``train`` (and ``extra``
    frames, e.g. validation, whose elements it must know too).

    Returns:
        (potential, report, added): a one-line report of what was kept, added and refitted;
        ``added`` marks parameter entries that are new (:func:`nnpes.train.new_species.grow_species`),
        so that they train even inside a frozen module.
    """
    from nnpes.train.new_species import grow_species
    from nnpes.train.optimizer import trainable_mask
    from nnpes.train.setup import data_label_keys

    base = load_base(cfg.init_from)
    trainable_mask(base.params, cfg.finetune.freeze)  # an unknown name fails now, before any compilation
    numbers = {int(z) for f in [*train, *extra] for z in f.numbers}
    potential, added = grow_species(base, numbers, cfg.seed, train)
    potential, e0_line = refit_e0(potential, base.atomic_numbers, train, cfg.finetune.refit_e0)
    if cfg.data is not None:  # the model remembers where its labels were, like any run's
        potential = potential.replace(label_keys=data_label_keys(cfg.data))
    new = [z for z in potential.atomic_numbers if z not in base.atomic_numbers]
    report = (
        f"fine-tuning {cfg.init_from} ({_symbols(base.atomic_numbers)}"
        + (f"; added {_symbols(new)}" if new else "")
        + f"); {e0_line}; scale and mean neighbours ({potential.avg_num_neighbors:.2f}) of the base"
    )
    return potential, report, added


def refit_e0(potential: Potential, known: Sequence[int], frames: Sequence[Frame], every: bool) -> tuple[Potential, str]:
    """E0 (eV) fitted to the energies the potential's network leaves unexplained: minimise
    Σ_frames (E − E_network − Σ_atoms E0)² over the E0 of the elements not in ``known`` (the
    base's), then, when ``every``, over all of them. With compositions that cannot tell the
    elements apart (rMD17: one molecule), the least-squares solution closest to the current E0 is
    taken, so the base's values move as little as the data allows.

    Returns the potential and a one-line report.
    """
    from nnpes.data.graph import frame_to_graph
    from nnpes.data.statistics import e0_report
    from nnpes.evaluate import predict_graphs

    table = potential.atomic_numbers
    labelled = [f for f in frames if f.energy is not None]
    new = np.array([z not in known for z in table])
    if not labelled or not (every or new.any()):
        return potential, f"E0 of the base ({potential.e0_method}{', none in the data' if not labelled else ''})"
    graphs = [frame_to_graph(f, potential.cutoff, table) for f in labelled]
    predicted = predict_graphs(potential, graphs)
    counts = np.array([[np.sum(f.numbers == z) for z in table] for f in labelled], np.float64)
    e0 = np.asarray(potential.e0, np.float64)
    # what the network leaves unexplained, minus the current E0: predictions are network + Σ E0
    residual = np.array([f.energy - p["energy"] for f, p in zip(labelled, predicted)])
    if new.any():
        shift, *_ = np.linalg.lstsq(counts[:, new], residual, rcond=None)
        e0[new] += shift
        residual -= counts[:, new] @ shift
    method = potential.e0_method
    if every:
        shift, *_ = np.linalg.lstsq(counts, residual, rcond=None)  # the minimum-norm shift when rank-deficient
        e0 += shift
        method = "least_squares" if np.linalg.matrix_rank(counts) == len(table) else "refit_min_norm"
    refitted = potential.replace(e0=jnp.asarray(e0, potential.e0.dtype), e0_method=method)
    line = e0_report(table, e0, method)
    if method == "refit_min_norm":
        line += " (the compositions cannot tell the elements apart: the smallest change from the base's E0)"
    return refitted, line


def run_config(cfg: Config) -> Config:
    """The config the run's steps follow: with ``init_from``, optimizer.learning_rate ×
    finetune.learning_rate_factor (the run directory's config.yaml keeps the config as given)."""
    if cfg.init_from is None or cfg.finetune.learning_rate_factor == 1.0:
        return cfg
    rate = cfg.optimizer.learning_rate * cfg.finetune.learning_rate_factor
    return cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"learning_rate": rate})})


def _symbols(numbers: Sequence[int]) -> str:
    from ase.data import chemical_symbols

    return " ".join(chemical_symbols[z] for z in numbers)
