"""Potential = model + parameters + cutoff + species table + reference energies + other terms.

A :class:`Potential` is a pytree (parameters, per-species arrays and term arrays are leaves;
the model, cutoff and species table are static), so it passes straight through ``jit`` and
``grad``. Its total energy is a sum of terms (:mod:`nnpes.terms`): the network's site
energies (scale · output), the reference energies E0, and any further physical terms.
Saved models are a directory: ``potential.json`` (everything but the weights) and
``params.msgpack``; reading and writing them is :mod:`nnpes.model_files`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nnpes.charges import conserved_charges
from nnpes.errors import ModelError
from nnpes.model_files import FORMAT_VERSION  # noqa: F401  (re-exported)
from nnpes.terms import Term, TermInputs


class Potential(struct.PyTreeNode):
    """A machine-learned potential ready to evaluate.

    Attributes:
        model: flax module (a family of ``nnpes.models`` or a user's module following the
            contract of :mod:`nnpes.models.base`) producing one output per atom.
        params: its flax variables.
        e0: (S,) reference energy per species, eV (site energy of an isolated atom).
        scale: (S,) energy scale per species, eV: network site energy = scale·output.
        atomic_numbers: the species table, sorted atomic numbers (index = species).
        cutoff: Å.
        e0_method: how e0 was obtained ("isolated_atoms", "least_squares", "mean_per_atom", "zero", "given").
        terms: further physical terms of the energy (:class:`nnpes.terms.Term`), eV.
        label_keys: where the training data kept its labels, as ((label, key), ...) pairs,
            e.g. (("energy", "REF_energy"), ("forces", "REF_forces")); () when unknown.
            ``nnpes evaluate`` reads files with the same keys unless told otherwise.
        members: 0 for one network; M ≥ 2 for an ensemble of M members. The energy is the
            members' mean (itself a conservative potential, so MD and forces need nothing
            else); their spread is the uncertainty (:mod:`nnpes.uncertainty`).
        shallow: how the M members are made. False (a deep ensemble): M networks whose
            parameters are stacked on a leading axis of every leaf. True (a shallow, last-layer
            ensemble): one network whose readout has M outputs per atom (``num_outputs`` = M),
            one site energy per member: the cost of one network, the spread trained by
            negative log-likelihoods of energies and projected forces (:mod:`nnpes.train.loss`).
        head_weights: shallow ensembles only: None (the members' mean), or (M,) weights of the
            members' site energies; :meth:`member_map` sets one-hot rows to evaluate members.
        calibration: (energy, forces) factors that turn the members' standard deviations into
            calibrated ones (fitted on validation data, :func:`nnpes.uncertainty.calibrate`).
        force_std_alarm_ev_a: the MD extrapolation alarm's default threshold on the largest
            per-atom force uncertainty, eV/Å (:mod:`nnpes.md.alarm`); None when not fitted.
    """

    model: nn.Module = struct.field(pytree_node=False)
    params: Any
    e0: jnp.ndarray
    scale: jnp.ndarray
    atomic_numbers: tuple[int, ...] = struct.field(pytree_node=False)
    cutoff: float = struct.field(pytree_node=False)
    e0_method: str = struct.field(pytree_node=False, default="zero")
    terms: tuple[Term, ...] = ()
    label_keys: tuple[tuple[str, str], ...] = struct.field(pytree_node=False, default=())
    members: int = struct.field(pytree_node=False, default=0)
    calibration: tuple[float, float] = struct.field(pytree_node=False, default=(1.0, 1.0))
    force_std_alarm_ev_a: float | None = struct.field(pytree_node=False, default=None)
    shallow: bool = struct.field(pytree_node=False, default=False)
    head_weights: jnp.ndarray | None = None

    @classmethod
    def create(
        cls,
        model: nn.Module,
        atomic_numbers,
        cutoff: float,
        seed: int = 0,
        *,
        e0=None,
        e0_method: str | None = None,
        scale=1.0,
        avg_num_neighbors: float = 1.0,
        params=None,
        terms: tuple[Term, ...] = (),
        label_keys=(),
        members: int = 0,
        calibration=(1.0, 1.0),
        force_std_alarm_ev_a: float | None = None,
        shallow: bool = False,
    ) -> Potential:
        """A potential with random weights (or the given ``params``).

        Args:
            model: a flax module with its hyper-parameters; the fields it has among cutoff,
                num_species and avg_num_neighbors are filled in here.
            atomic_numbers: the elements it knows (any order; stored sorted, duplicates removed).
            cutoff: r_c, Å.
            seed: PRNG seed of the initial weights.
            e0: reference energies, eV: a dict {Z: eV} or a sequence aligned with sorted
                atomic_numbers; zero when None.
            scale: eV, a number or one per species.
            avg_num_neighbors: mean neighbour count of the training data (message normaliser).
            params: flax variables to use instead of a random initialisation (as ``load`` does;
                initialising a large equivariant model eagerly takes seconds).
            terms: further physical terms of the energy.
            label_keys: {label: key} (or pairs) of the data it is trained on, e.g. {"energy": "REF_energy"}.
            members: 0 for one network, M ≥ 2 for an ensemble (member m initialised from seed + m).
            shallow: the ensemble's members are M readout heads of one network (see the class).
            calibration: (energy, forces) factors of the ensemble's standard deviations.
            force_std_alarm_ev_a: the MD alarm's threshold, eV/Å (None: not fitted).
        """
        numbers = tuple(sorted({int(z) for z in np.asarray(atomic_numbers).reshape(-1)}))
        _check_arguments(model, numbers, cutoff, terms, members, shallow)
        model = fill_model(model, cutoff, len(numbers), avg_num_neighbors, outputs_per_atom(terms, members, shallow))
        if params is None:
            init = jax.jit(model.init)  # eager init is slower
            if members and not shallow:
                keys = jnp.stack([jax.random.PRNGKey(seed + m) for m in range(members)])
                params = jax.vmap(init, in_axes=(0,) + (None,) * 5)(keys, *example_inputs(cutoff))
            else:
                params = init(jax.random.PRNGKey(seed), *example_inputs(cutoff))
        e0_arr, method = _reference_energies(e0, numbers)
        scale_arr = np.broadcast_to(np.asarray(scale, np.float64), (len(numbers),)).copy()
        return cls(
            model=model,
            params=params,
            e0=jnp.asarray(e0_arr, jnp.float32),
            scale=jnp.asarray(scale_arr, jnp.float32),
            atomic_numbers=numbers,
            cutoff=float(cutoff),
            e0_method=e0_method or method,
            terms=tuple(terms),
            label_keys=_label_pairs(label_keys),
            members=int(members),
            calibration=(float(calibration[0]), float(calibration[1])),
            force_std_alarm_ev_a=None if force_std_alarm_ev_a is None else float(force_std_alarm_ev_a),
            shallow=bool(shallow),
        )

    def label_key(self, label: str) -> str:
        """The key ``label`` ("energy", "forces", "stress", "virial") had in the training data
        (the label's own name when unknown)."""
        return dict(self.label_keys).get(label, label)

    @property
    def avg_num_neighbors(self) -> float:
        return float(getattr(self.model, "avg_num_neighbors", 1.0))

    @property
    def dtype(self):
        return jax.tree.leaves(self.params)[0].dtype

    def site_energies(self, params, inputs: TermInputs):
        """(interaction, reference, charges) per atom: site energies in eV, each (N,), and the
        charge head's partial charges (N,) in e (None without a head).

        interaction = scale·network output + every term of ``self.terms``; reference = E0.
        They are kept apart so that losses compare interaction energies (float32 never
        subtracts two large totals) and totals add Σ E0 in float64 on the host.
        """
        if self.deep_members:  # a deep ensemble: the members' mean output (stacked parameters, one vmap)
            out = jnp.mean(jax.vmap(lambda p: self._network(p, inputs))(params), axis=0)
        else:
            out = self._network(params, inputs)
        if self.shallow:  # (N, M) heads: their mean, or one member's (member_map)
            out = jnp.mean(out, axis=1) if self.head_weights is None else out @ self.head_weights.astype(out.dtype)
        if out.ndim == 2:  # charge head: (site output, raw charge)
            out, raw = out[:, 0], out[:, 1]
            charges = conserved_charges(raw, inputs.node_graph, inputs.total_charge, inputs.node_mask)
            inputs = inputs.replace(charges=charges)
        interaction = self.scale.astype(out.dtype)[inputs.species] * out
        for term in self.terms:
            interaction = interaction + term.site_energies(inputs).astype(out.dtype)
        return interaction, self.e0.astype(out.dtype)[inputs.species], inputs.charges

    def _network(self, params, inputs: TermInputs):
        """The network's raw outputs, (N,) or (N, 2) with a charge head."""
        args = (params, inputs.vectors, inputs.species, inputs.senders, inputs.receivers, inputs.edge_mask)
        # a family that reads the mirrored layout (nnpes.data.neighbors) is told so; others see a full list
        uses_mirror = inputs.mirrored and getattr(self.model, "reads_mirrored_edges", False)
        return self.model.apply(*args, mirrored=True) if uses_mirror else self.model.apply(*args)

    @property
    def deep_members(self) -> int:
        """M for a deep ensemble (parameters stacked on a leading member axis), else 0."""
        return 0 if self.shallow else self.members

    def member_map(self, fn):
        """``fn(member)`` for every member of the ensemble, as one ``jax.vmap``: each output gets a
        leading member axis (M, ...). ``fn`` takes a :class:`Potential` that is one member. A deep
        ensemble maps over its stacked parameters; a shallow one over one-hot head weights, so
        the shared network runs forward once and only what depends on the head is batched
        (e.g. M backward passes for M members' forces). Raises ModelError for one network."""
        if not self.members:
            raise ModelError("this potential is one network, not an ensemble (train with model.ensemble: M ≥ 2)")
        if self.shallow:
            heads = jnp.eye(self.members, dtype=self.dtype)
            return jax.vmap(lambda w: fn(self.replace(head_weights=w)))(heads)
        single = self.replace(members=0)
        return jax.vmap(lambda p: fn(single.replace(params=p)))(self.params)

    def for_cells(self, cells) -> Potential:
        """The potential with its terms' static grids fixed for these structures' cells
        ((F, 3, 3) Å, zero for molecules): Ewald k grids and PME meshes are shapes under jit.
        Training, evaluation, the calculator and MD call it; it returns self when no term
        depends on the cells."""
        terms = tuple(t.for_cells(cells, self.cutoff) for t in self.terms)
        return self if terms == self.terms else self.replace(terms=terms)

    def for_structures(self, structures) -> Potential:
        """:meth:`for_cells` for the cells of frames, graphs or ``ase.Atoms`` (a structure that is
        not periodic along all three axes counts as a molecule)."""
        return self.for_cells(np.stack([structure_cell(s) for s in structures]) if structures else np.zeros((1, 3, 3)))

    @property
    def has_charges(self) -> bool:
        """Whether the model predicts latent charges (a term reads them)."""
        return num_outputs_for(self.terms) > 1

    def astype(self, dtype) -> Potential:
        """The same potential with every float array (parameters, e0, scale, terms) cast to dtype."""
        cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
        return jax.tree.map(cast, self)

    def reference_energy(self, numbers) -> float:
        """Σ E0 over the atoms (eV), in float64 on the host."""
        from nnpes.data.graph import species_indices

        return float(np.asarray(self.e0, np.float64)[species_indices(numbers, self.atomic_numbers)].sum())

    def total_energy(self, interaction_energy, numbers) -> float:
        """Total energy, eV: a predicted interaction energy plus Σ E0 of the atoms, in float64."""
        return float(np.float64(interaction_energy)) + self.reference_energy(numbers)

    def metadata(self) -> dict:
        """Everything but the weights, as saved in ``potential.json``."""
        from nnpes.model_files import potential_metadata

        return potential_metadata(self)

    def save(self, directory: str | os.PathLike) -> None:
        """Write the model directory atomically (a reader never sees a half-written model)."""
        from nnpes.model_files import save

        save(self, directory)


def _check_arguments(model, numbers, cutoff, terms, members: int, shallow: bool) -> None:
    """:meth:`Potential.create`'s checks: one ModelError line for the first problem."""
    if not numbers or numbers[0] < 1 or numbers[-1] > 118:
        raise ModelError(f"atomic_numbers must be 1..118, got {list(numbers)}")
    if not cutoff > 0:
        raise ModelError(f"cutoff must be > 0 Å, got {cutoff}")
    from nnpes.models.base import validate_hyperparameters  # here: an exported potential needs no model code

    try:
        validate_hyperparameters(model, "model")
    except ValueError as e:
        raise ModelError(str(e)) from None
    if members == 1 or members < 0:
        raise ModelError(f"members must be 0 (one network) or ≥ 2 (an ensemble), got {members}")
    if shallow and (not members or num_outputs_for(terms) > 1):
        raise ModelError(
            "a shallow ensemble needs members ≥ 2 and no latent charges (an electrostatics term), "
            f"got members={members}, terms {[t.kind for t in terms]}"
        )


def structure_cell(structure) -> np.ndarray:
    """(3, 3) cell rows, Å, of a frame, graph or ``ase.Atoms``: zeros unless periodic in 3-D."""
    pbc = structure.get_pbc() if hasattr(structure, "get_pbc") else getattr(structure, "pbc", (True,) * 3)
    cell = np.asarray(structure.get_cell() if hasattr(structure, "get_cell") else structure.cell, np.float64)
    return cell.reshape(3, 3) if np.all(pbc) else np.zeros((3, 3))


def num_outputs_for(terms) -> int:
    """Outputs per atom the model needs: 2 (site output, raw charge) when a term reads charges."""
    return 2 if any(getattr(t, "needs_charges", False) for t in terms) else 1


def outputs_per_atom(terms, members: int = 0, shallow: bool = False) -> int:
    """The model's ``num_outputs``: M for a shallow ensemble's heads, else :func:`num_outputs_for`."""
    return int(members) if shallow else num_outputs_for(terms)


def fill_model(
    model: nn.Module, cutoff: float, num_species: int, avg_num_neighbors: float, num_outputs: int = 1
) -> nn.Module:
    """The model with the contract's filled-in fields set (those the module declares)."""
    values = {
        "cutoff": float(cutoff),
        "num_species": int(num_species),
        "avg_num_neighbors": float(avg_num_neighbors),
        "num_outputs": int(num_outputs),
    }
    from nnpes.models.base import FILLED_FIELDS

    names = {f.name for f in dataclasses.fields(model)}
    if num_outputs > 1 and "num_outputs" not in names:
        raise ModelError(
            f"{type(model).__name__} has no `num_outputs` field, so it cannot predict {num_outputs} outputs per atom "
            "(the charges an electrostatics term needs, or a shallow ensemble's heads): subclass "
            "nnpes.models.SiteModel and return site_outputs(x, num_outputs)"
        )
    return model.clone(**{k: v for k, v in values.items() if k in names and k in FILLED_FIELDS})


def _label_pairs(label_keys) -> tuple[tuple[str, str], ...]:
    items = label_keys.items() if isinstance(label_keys, dict) else label_keys
    return tuple(sorted((str(k), str(v)) for k, v in items))


def _reference_energies(e0, numbers: tuple[int, ...]) -> tuple[np.ndarray, str]:
    s = len(numbers)
    if e0 is None:
        return np.zeros(s), "zero"
    if isinstance(e0, dict):
        missing = [z for z in numbers if z not in e0]
        if missing:
            raise ModelError(f"e0 lacks a reference energy for atomic numbers {missing}")
        return np.array([float(e0[z]) for z in numbers]), "given"
    return np.asarray(e0, np.float64).reshape(s), "given"


def example_inputs(cutoff: float):
    """A two-atom graph to initialise (or shape-check) a model with."""
    vectors = jnp.asarray([[0.5 * cutoff, 0.0, 0.0], [-0.5 * cutoff, 0.0, 0.0]], jnp.float32)
    species = jnp.zeros(2, jnp.int32)
    senders = jnp.asarray([1, 0], jnp.int32)
    receivers = jnp.asarray([0, 1], jnp.int32)
    return vectors, species, senders, receivers, jnp.ones(2, bool)


def load(directory: str | os.PathLike) -> Potential:
    """Load a model directory written by :meth:`Potential.save` (or a run directory that holds
    one in ``model/``). A model whose class is not a registered family is imported from the
    module (or source file) recorded at save time. A directory written by ``nnpes export``
    gives an :class:`nnpes.exported.ExportedPotential` instead, which runs the saved programs
    without importing any model code. Every problem is one ModelError line."""
    from nnpes import exported

    if exported.is_export(directory):
        return exported.load(directory)
    from nnpes import electrostatics, zbl  # noqa: F401  (their term kinds registered before terms are read)
    from nnpes.model_files import load as _load

    return _load(directory)
