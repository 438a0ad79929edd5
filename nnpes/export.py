"""``nnpes export``: a potential as ``jax.export`` programs that run without its Python code.

:func:`export` traces the potential's site energies (network · scale + physical terms, and E0)
and a whole single-structure energy/forces/stress evaluation through :mod:`nnpes.physics`, with
the atom count N and pair count E symbolic, and writes them as serialised StableHLO next to
their metadata; :mod:`nnpes.exported` reads them back (the directory format is described there).
Models whose energy needs the whole cell or latent charges (electrostatics) are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from nnpes.errors import ModelError
from nnpes.exported import (
    DEFAULT_PLATFORMS,
    DTYPES,
    ENERGY_FORCES_STRESS,
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    SITE_ENERGIES,
    ExportedPotential,
    is_export,
    program_file,
)
from nnpes.model_files import write_directory
from nnpes.physics import energy_forces_stress, site_energies_from_vectors

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # jax.export's lowering platforms


def _io(name: str, shape: list, dtype: str, unit: str | None = None, meaning: str | None = None) -> dict:
    """One input or output of a program's signature, as export.json lists it."""
    item = {"name": name, "shape": shape, "dtype": dtype}
    return item | ({"unit": unit} if unit else {}) | ({"meaning": meaning} if meaning else {})


# "float" is the program's dtype (its file name says which); N atoms and E directed pairs are symbolic
_SPECIES = _io("species", ["N"], "int32", None, "index into atomic_numbers")
_PAIRS = [
    _io("senders", ["E"], "int32", None, "j of each pair; every pair is listed both ways (j→i and i→j)"),
    _io("receivers", ["E"], "int32", None, "i of each pair"),
]
_MASK = _io("edge_mask", ["E"], "bool", None, "False: padding; pairs beyond the cutoff are ignored too")
SIGNATURES = {
    SITE_ENERGIES: {
        "vjp_order": 1,
        "inputs": [_io("vectors", ["E", 3], "float", "Å", "r_ij = R_j - R_i + shift"), _SPECIES, *_PAIRS, _MASK],
        "outputs": [
            _io("interaction", ["N"], "float", "eV", "site energy minus E0 (network, scale, physical terms)"),
            _io("reference", ["N"], "float", "eV", "E0 of the atom's species"),
        ],
    },
    ENERGY_FORCES_STRESS: {
        "vjp_order": 0,
        "inputs": [
            _io("positions", ["N", 3], "float", "Å"),
            _io("cell", [3, 3], "float", "Å", "lattice vectors as rows; zeros: a molecule"),
            _SPECIES,
            *_PAIRS,
            _io("shifts", ["E", 3], "int32", None, "r_ij = R_j - R_i + shifts @ cell"),
            _MASK,
        ],
        "outputs": [
            _io("energy", [], "float", "eV", "total, E0 included"),
            _io("forces", ["N", 3], "float", "eV/Å", "-dE/dR"),
            _io("stress", [3, 3], "float", "eV/Å³", "(1/V) dE/dstrain, ASE sign (tension > 0); zeros for a molecule"),
            _io(
                "interaction_energy", [], "float", "eV", "energy minus the E0s: add them in float64 for full precision"
            ),
        ],
    },
}


def export(potential, out: str | os.PathLike, dtypes=None, platforms=None) -> list[str]:
    """Write ``potential`` as an export directory ``out``, atomically; returns its file names.

    Args:
        potential: a :class:`nnpes.Potential` (an ensemble is exported as its members' mean).
        out: the directory; an earlier export there is replaced, any other existing path that
            is not an empty directory is refused (one ModelError line), never overwritten.
        dtypes: "float32", "float64" or both (a sequence); default float32, plus float64 when
            ``jax_enable_x64`` is on (float64 needs it).
        platforms: jax platforms to lower for (default cpu and cuda).
    """
    out = os.path.abspath(os.fspath(out))
    check_replaceable(out)  # before the work
    dtypes = _dtypes(dtypes)
    platforms = tuple(platforms or DEFAULT_PLATFORMS)
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown:
        raise ModelError(f"unknown platforms {unknown}: export lowers for {', '.join(PLATFORMS)}")
    potential = exportable(potential)
    files = {}
    for dtype in dtypes:
        cast = potential.astype(dtype)
        site = _exported(SITE_ENERGIES, _site_function(cast), dtype, platforms)
        efs = _exported(ENERGY_FORCES_STRESS, _energy_forces_stress_function(cast), dtype, platforms)
        files[program_file(SITE_ENERGIES, dtype)] = bytes(site.serialize(vjp_order=1))  # physics differentiates it
        files[program_file(ENERGY_FORCES_STRESS, dtype)] = bytes(efs.serialize())
        # the bare module too, for programs outside Python that do not read jax's flatbuffer format
        files[stablehlo_file(ENERGY_FORCES_STRESS, dtype)] = bytes(efs.mlir_module_serialized)
    # the module's main takes a platform index first when lowered for several, then the inputs it kept
    inputs = [SIGNATURES[ENERGY_FORCES_STRESS]["inputs"][i]["name"] for i in efs.module_kept_var_idx]
    arguments = (["platform_index"] if len(platforms) > 1 else []) + inputs
    meta = export_metadata(potential, dtypes, platforms, arguments)
    files[METADATA_FILE] = json.dumps(meta, indent=2, ensure_ascii=False).encode()
    _write(out, files)
    return sorted(files)


def exportable(potential):
    """The potential made ready to export, or one ModelError line saying why it cannot be.

    A model with an ``edge_chunk`` field gets ``edge_chunk=0`` (one pass over all edges): its
    chunk size is chosen in Python from the edge count, which is symbolic here; only the order
    of summation changes."""
    if isinstance(potential, ExportedPotential):
        raise ModelError(f"{potential.programs.directory}: already an export (export the model directory)")
    if potential.has_charges:
        raise ModelError(
            "cannot export a model with latent charges (an electrostatics term): its energy needs the whole cell and "
            "the total charge, which the exported site-energy program does not take"
        )
    for cells in (np.zeros((1, 3, 3)), 20.0 * np.eye(3)[None]):
        if potential.for_cells(cells).terms != potential.terms:
            kinds = ", ".join(t.kind for t in potential.terms)
            raise ModelError(
                f"cannot export: a term ({kinds}) depends on the cell, which the site-energy program does not take"
            )
    if "edge_chunk" in {f.name for f in dataclasses.fields(potential.model)}:
        potential = potential.replace(model=potential.model.clone(edge_chunk=0))
    return potential


def stablehlo_file(name: str, dtype: str) -> str:
    """File name of a program's bare StableHLO module (portable artifact bytecode)."""
    return f"{name}.{dtype}.stablehlo"


def export_metadata(potential, dtypes, platforms, module_arguments: list[str]) -> dict:
    """The contents of ``export.json`` (see :mod:`nnpes.exported`); ``module_arguments``: the
    arguments of the energy/forces/stress module's main function, in order."""
    from nnpes import __version__
    from nnpes.models import family_name, receptive_hops

    cls = type(potential.model)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nnpes_version": __version__,
        "jax_version": jax.__version__,
        "family": family_name(potential.model),
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
        "ensemble_members": int(getattr(potential, "members", 0)),
        "receptive_hops": receptive_hops(potential.model),
        "terms": [t.kind for t in potential.terms],
        "atomic_numbers": list(potential.atomic_numbers),
        "cutoff_a": potential.cutoff,
        "e0_ev": [float(x) for x in np.asarray(potential.e0, np.float64)],
        "e0_method": potential.e0_method,
        "label_keys": dict(potential.label_keys),
        "dtypes": list(dtypes),
        "platforms": list(platforms),
        "units": {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å³ (ASE sign: positive = tensile)"},
        "symbolic_dimensions": {"N": "atoms", "E": "directed pairs (each pair listed both ways)"},
        "programs": {
            name: {"files": {d: program_file(name, d) for d in dtypes}, **signature}
            for name, signature in SIGNATURES.items()
        },
        "stablehlo": {  # the energy/forces/stress module alone, for XLA or PJRT outside Python
            "files": {d: stablehlo_file(ENERGY_FORCES_STRESS, d) for d in dtypes},
            "main_arguments": module_arguments,
        },
    }


def _dtypes(dtypes) -> tuple[str, ...]:
    if dtypes is None:
        return DTYPES if jax.config.jax_enable_x64 else ("float32",)
    names = tuple(sorted({np.dtype(d).name for d in ([dtypes] if isinstance(dtypes, str) else dtypes)}))
    if not names or not set(names) <= set(DTYPES):
        raise ModelError(f"dtypes must be some of {list(DTYPES)}, got {list(names)}")
    if "float64" in names and not jax.config.jax_enable_x64:
        raise ModelError("float64 programs need jax.config.update('jax_enable_x64', True) before any JAX array is made")
    return names


def _site_function(potential):
    """(vectors, species, senders, receivers, edge_mask) → (interaction, reference), eV per atom."""

    def site(vectors, species, senders, receivers, edge_mask):
        interaction, reference, _ = site_energies_from_vectors(
            potential, vectors, species, senders, receivers, edge_mask
        )
        return interaction, reference

    return site


def _energy_forces_stress_function(potential):
    """One structure's (energy eV, forces (N, 3) eV/Å, stress (3, 3) eV/Å³, interaction energy
    eV = energy − Σ E0: a float32 total loses digits, so a caller may add Σ E0 in float64), through
    :func:`nnpes.physics.energy_forces_stress` on a graph of it and a padding graph of one atom."""

    def energy_forces_stress_of(positions, cell, species, senders, receivers, shifts, edge_mask):
        # a masked edge becomes a zero-length self-edge, which the energy function drops
        senders = jnp.where(edge_mask, senders, receivers)
        shifts = jnp.where(edge_mask[:, None], shifts, 0)
        n_node, n_edge = positions.shape[0], senders.shape[0]  # symbolic
        # jraph's padding convention: the padding graph holds at least one node, here one atom at the end
        graph = jraph.GraphsTuple(
            nodes={
                "positions": jnp.concatenate([positions, jnp.zeros((1, 3), positions.dtype)]),
                "species": jnp.concatenate([species, jnp.zeros(1, species.dtype)]),
            },
            edges={"shifts": shifts},
            senders=senders,
            receivers=receivers,
            globals={"cell": jnp.stack([cell, jnp.zeros_like(cell)])},
            n_node=jnp.asarray([n_node, 1], jnp.int32),
            n_edge=jnp.asarray([n_edge, 0], jnp.int32),
        )
        out = energy_forces_stress(potential, graph)
        return out["energy"][0], out["forces"][:n_node], out["stress"][0], out["interaction_energy"][0]

    return energy_forces_stress_of


def _exported(name: str, fn, dtype: str, platforms) -> jax.export.Exported:
    """``fn`` exported for ``platforms`` with the signature of program ``name``, N and E symbolic."""
    n, e = jax.export.symbolic_shape("N, E")
    shapes = {"N": n, "E": e}
    dtypes = {"float": jnp.dtype(dtype), "int32": jnp.int32, "bool": jnp.bool_}
    specs = [
        jax.ShapeDtypeStruct(tuple(shapes.get(d, d) for d in item["shape"]), dtypes[item["dtype"]])
        for item in SIGNATURES[name]["inputs"]
    ]
    try:
        exported = jax.export.export(jax.jit(fn), platforms=platforms)(*specs)
    except Exception as e:  # e.g. model code that branches in Python on the atom or pair count
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(
            f"cannot export {name} ({dtype}) with symbolic atom and pair counts: {type(e).__name__}: {first}"
        ) from None
    return exported


def _write(out: str, files: dict[str, bytes]) -> None:
    """Write ``files`` as the directory ``out`` atomically (a reader never sees a half-written export)."""
    check_replaceable(out)
    write_directory(out, files)


def check_replaceable(out: str) -> None:
    """Only an earlier export or an empty directory is replaced; anything else is refused."""
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out) or os.path.islink(out):
        raise ModelError(f"{out}: exists and is not a directory; not overwritten")
    names = sorted(os.listdir(out))
    if names and not is_export(out):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ModelError(
            f"{out}: exists and is not an export (it holds {shown}); not overwritten: export to a new directory"
        )
