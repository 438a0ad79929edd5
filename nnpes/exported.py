"""A potential written by ``nnpes export`` (:mod:`nnpes.export`), run without the model's code.

An export directory holds ``export.json`` (format, species table, cutoff, E0, dtypes, platforms,
the programs' signatures with units, nnpes version, the source model's family) and, per dtype,
two serialised ``jax.export`` programs (StableHLO; the atom count N and the pair count E are
symbolic, so one program serves every structure):

- ``site_energies.<dtype>.jax``: (vectors (E, 3) Å, species (N,), senders (E,), receivers (E,),
  edge_mask (E,)) → (interaction (N,) eV, reference E0 (N,) eV), serialised with its first-order
  VJP, so that :mod:`nnpes.physics` differentiates it for forces and stress as it does a model;
- ``energy_forces_stress.<dtype>.jax``: one structure's energy, forces and stress, for programs
  outside Python (docs/trust.md, "Export").

:class:`ExportedPotential` stands wherever a :class:`nnpes.Potential` is evaluated (the ASE
calculator, the jax-md adaptor, ``nnpes evaluate``, ``nnpes md``). This module imports only jax,
numpy and nnpes modules that do not import :mod:`nnpes.models`: that is the point of an export.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nnpes.errors import ModelError

METADATA_FILE = "export.json"
FORMAT = "nnpes-export"
FORMAT_VERSION = 1
SITE_ENERGIES = "site_energies"
ENERGY_FORCES_STRESS = "energy_forces_stress"
DTYPES = ("float32", "float64")
DEFAULT_PLATFORMS = ("cpu", "cuda")  # lowered for both: an export made on a laptop runs on a GPU
_REQUIRED = ("format_version", "dtypes", "platforms", "atomic_numbers", "cutoff_a", "e0_ev")


def program_file(name: str, dtype: str) -> str:
    """File name of one serialised program, e.g. ``site_energies.float32.jax``."""
    return f"{name}.{dtype}.jax"


def is_export(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` was written by ``nnpes export`` (it holds export.json)."""
    return os.path.isfile(os.path.join(os.fspath(directory), METADATA_FILE))


class Programs:
    """The deserialised site-energy programs of one export by dtype name ("float32", ...), and
    its metadata. A static field of :class:`ExportedPotential`, so it is part of jit's cache key:
    compared and hashed by identity (one object per loaded export)."""

    def __init__(self, directory: str, site: dict[str, Any], metadata: dict):
        self.directory = directory
        self.site = site
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"Programs({self.directory!r}, dtypes={sorted(self.site)})"


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """What an export records of its source model: the family (or class path) and the number
    of cut-off spheres a site energy sees (what :func:`nnpes.models.receptive_hops` reads)."""

    family: str | None
    receptive_hops: int


class ExportedPotential(struct.PyTreeNode):
    """An exported potential, evaluated through its serialised programs (no model code).

    Attributes:
        programs: the export's programs and metadata (static).
        e0: (S,) reference energy per species, eV, in the dtype of the program in use.
        atomic_numbers: the species table, sorted (index = species).
        cutoff: Å.
        dtype_name: "float32" or "float64": which program runs (:meth:`astype` switches).
        label_keys: where the training data kept its labels, as for :class:`nnpes.Potential`.
        params: always (): the weights are constants of the programs.
        terms: always (): the programs include every physical term (ZBL...).
        members: always 0: an ensemble is exported as its members' mean.
        calibration: unused (no members), kept so that ensemble-aware paths read it.
    """

    programs: Programs = struct.field(pytree_node=False)
    e0: jnp.ndarray
    atomic_numbers: tuple[int, ...] = struct.field(pytree_node=False)
    cutoff: float = struct.field(pytree_node=False)
    dtype_name: str = struct.field(pytree_node=False, default="float32")
    label_keys: tuple[tuple[str, str], ...] = struct.field(pytree_node=False, default=())
    params: Any = ()
    terms: tuple = ()
    members: int = struct.field(pytree_node=False, default=0)
    calibration: tuple[float, float] = struct.field(pytree_node=False, default=(1.0, 1.0))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dtype_name)

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The dtypes the export holds programs for."""
        return tuple(sorted(self.programs.site))

    @property
    def has_charges(self) -> bool:
        return False  # models with latent charges are not exported

    @property
    def model(self) -> ExportedModel:
        meta = self.programs.metadata
        return ExportedModel(meta.get("family") or meta.get("model_class"), int(meta.get("receptive_hops", 1)))

    def metadata(self) -> dict:
        """A copy of the export's ``export.json``."""
        return json.loads(json.dumps(self.programs.metadata))

    def astype(self, dtype) -> ExportedPotential:
        """The same export evaluated by its program of ``dtype`` (float32 or float64)."""
        name = np.dtype(dtype).name
        if name not in self.programs.site:
            raise ModelError(
                f"{self.programs.directory}: the export holds no {name} program (only {', '.join(self.dtypes)}): "
                f"export the model again with --dtype {name} or both"
            )
        if name == "float64" and not jax.config.jax_enable_x64:
            raise ModelError("float64 needs jax.config.update('jax_enable_x64', True) before any JAX array is made")
        e0 = jnp.asarray(np.asarray(self.programs.metadata["e0_ev"], np.float64).astype(name))
        return self.replace(dtype_name=name, e0=e0)

    def site_energies(self, params, inputs):
        """(interaction, reference, charges) per atom, as :meth:`nnpes.Potential.site_energies`:
        site energies (N,) eV from the exported program, and None (no charges).

        ``inputs`` is a :class:`nnpes.terms.TermInputs`; only its edges and species are read
        (the program masks padding and out-of-range edges itself, as :mod:`nnpes.physics` does,
        and reads the full pair list whatever the layout). Arrays are cast to the program's
        dtypes (int32 indices)."""
        if jax.tree.leaves(params):
            raise ModelError("an exported potential's weights are constants of its programs: it takes no params")
        i32 = jnp.int32
        interaction, reference = self.programs.site[self.dtype_name].call(
            inputs.vectors.astype(self.dtype),
            inputs.species.astype(i32),
            inputs.senders.astype(i32),
            inputs.receivers.astype(i32),
            inputs.edge_mask.astype(bool),
        )
        return interaction, reference, None

    def for_cells(self, cells) -> ExportedPotential:
        return self  # no term depends on the cell (those that do are not exported)

    def for_structures(self, structures) -> ExportedPotential:
        return self

    def label_key(self, label: str) -> str:
        """The key ``label`` had in the training data (the label's own name when unknown)."""
        return dict(self.label_keys).get(label, label)

    def reference_energy(self, numbers) -> float:
        """Σ E0 over the atoms (eV), in float64 on the host."""
        from nnpes.data.graph import species_indices

        return float(np.asarray(self.e0, np.float64)[species_indices(numbers, self.atomic_numbers)].sum())

    def total_energy(self, interaction_energy, numbers) -> float:
        """Total energy, eV: a predicted interaction energy plus Σ E0 of the atoms, in float64."""
        return float(np.float64(interaction_energy)) + self.reference_energy(numbers)


def load(directory: str | os.PathLike) -> ExportedPotential:
    """Read an export directory: its metadata and every site-energy program, checked (format,
    signature, platform). Float32 is used when the export has it (:meth:`~ExportedPotential.astype`
    switches). Every problem is one ModelError line naming the file."""
    directory = os.path.abspath(os.fspath(directory))
    meta = _read_metadata(os.path.join(directory, METADATA_FILE))
    site = {
        dtype: _program(os.path.join(directory, program_file(SITE_ENERGIES, dtype)), dtype) for dtype in meta["dtypes"]
    }
    for dtype in meta["dtypes"]:  # the other program is for users outside Python: only present
        path = os.path.join(directory, program_file(ENERGY_FORCES_STRESS, dtype))
        if not os.path.isfile(path):
            raise ModelError(f"{path}: missing (the export is incomplete: export the model again)")
    potential = ExportedPotential(
        programs=Programs(directory, site, meta),
        e0=jnp.zeros(len(meta["atomic_numbers"])),
        atomic_numbers=tuple(int(z) for z in meta["atomic_numbers"]),
        cutoff=float(meta["cutoff_a"]),
        label_keys=tuple(sorted((str(k), str(v)) for k, v in meta.get("label_keys", {}).items())),
    )
    return potential.astype("float32" if "float32" in site else meta["dtypes"][0])


def _read_metadata(path: str) -> dict:
    try:
        with open(path) as f:
            meta = json.load(f)
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not an nnpes export (its format is not {FORMAT!r})")
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise ModelError(f"{path}: lacks {', '.join(missing)}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ModelError(f"{path}: format_version {meta['format_version']!r}; this nnpes reads {FORMAT_VERSION}")
    if not meta["dtypes"] or not set(meta["dtypes"]) <= set(DTYPES):
        raise ModelError(f"{path}: dtypes must be some of {list(DTYPES)}, got {meta['dtypes']!r}")
    if len(meta["e0_ev"]) != len(meta["atomic_numbers"]):
        raise ModelError(f"{path}: {len(meta['e0_ev'])} e0_ev values for {len(meta['atomic_numbers'])} atomic numbers")
    return meta


def _program(path: str, dtype: str):
    """One deserialised site-energy program, its signature and platforms checked."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror}); export the model again") from None
    try:
        program = jax.export.deserialize(bytearray(data))
    except Exception as e:  # flatbuffers raises anything on a damaged file
        raise ModelError(
            f"{path}: not a serialised jax.export program ({type(e).__name__}); export the model again"
        ) from None
    inputs = program.in_avals
    if len(inputs) != 5 or inputs[0].dtype != np.dtype(dtype) or not program.has_vjp():
        raise ModelError(f"{path}: not an nnpes {dtype} site-energy program with its VJP; export the model again")
    here = jax.export.default_export_platform()
    if here not in program.platforms:
        raise ModelError(
            f"{path}: lowered for {', '.join(program.platforms)}, not for this machine's {here}: "
            f"export again with --platforms {','.join([*program.platforms, here])}"
        )
    return program
