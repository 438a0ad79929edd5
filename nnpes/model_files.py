"""Model directories on disk: ``potential.json`` (everything but the weights) + ``params.msgpack``.

Format 2 (written now) adds to format 1 the model class's import path (and source file, for
a module defined in a user's script) and the list of physical terms; format 1 directories
still load. Loading checks that the weights fit the hyper-parameters, parameter by parameter.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from nnpes.errors import ModelError
from nnpes.terms import terms_from_json, terms_to_json

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def potential_metadata(potential) -> dict:
    """The JSON description of a potential (see the module docstring)."""
    from nnpes import __version__
    from nnpes.models import family_name
    from nnpes.models.base import FILLED_FIELDS

    model = potential.model
    hyper = {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if f.name not in ("parent", "name") and f.name not in FILLED_FIELDS
    }
    for key, value in hyper.items():
        try:
            json.dumps(value)
        except TypeError:
            raise ModelError(
                f"cannot save {type(model).__name__}: hyper-parameter {key!r} = {value!r} is not "
                "JSON-serialisable (make it a number, string, bool or tuple)"
            ) from None
    cls = type(model)
    module = sys.modules.get(cls.__module__)
    source = getattr(module, "__file__", None)
    return {
        "format_version": FORMAT_VERSION,
        "nnpes_version": __version__,
        "family": family_name(model),
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
        "model_file": os.path.abspath(source) if source and not cls.__module__.startswith("nnpes.") else None,
        "hyperparameters": hyper,
        "atomic_numbers": list(potential.atomic_numbers),
        "cutoff_a": potential.cutoff,
        "avg_num_neighbors": potential.avg_num_neighbors,
        "e0_ev": [float(x) for x in np.asarray(potential.e0, np.float64)],
        "e0_method": potential.e0_method,
        "scale_ev": [float(x) for x in np.asarray(potential.scale, np.float64)],
        "terms": terms_to_json(potential.terms),
        "label_keys": dict(potential.label_keys),
        "ensemble_members": potential.members,
        "ensemble_kind": "shallow" if potential.shallow else "deep",
        "uncertainty_calibration": list(potential.calibration),
        "force_std_alarm_ev_a": potential.force_std_alarm_ev_a,
    }


def save(potential, directory: str | os.PathLike) -> None:
    """Write the model directory atomically (a reader never sees a half-written model).

    An existing model directory is replaced whole; any other existing path (a file, a non-empty
    directory without potential.json) is refused with a ModelError, never overwritten."""
    directory = os.path.abspath(os.fspath(directory))
    _check_replaceable(directory)
    meta = potential_metadata(potential)
    params = jax.tree.map(np.asarray, potential.params)
    files = {
        "potential.json": json.dumps(meta, indent=2).encode(),
        "params.msgpack": flax.serialization.to_bytes(params),
    }
    write_directory(directory, files)


def write_directory(directory: str, files: dict[str, bytes]) -> None:
    """Write ``files`` ({name: bytes}) as the directory ``directory`` atomically: a temporary
    directory beside it, then one rename, so a reader never sees a half-written one and a failed
    write leaves the previous one; an existing directory is replaced whole (callers check first
    that it may be: model directories here, exports in :mod:`nnpes.export`)."""
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        os.chmod(tmp, 0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(directory):
        old = tempfile.mkdtemp(prefix=".old-", dir=parent)
        os.replace(directory, os.path.join(old, "d"))
    os.replace(tmp, directory)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(directory: str) -> None:
    """Refuse to save over a path that is not a model directory (e.g. a run folder or $HOME):
    only a model directory (it has potential.json), whole, or an empty directory is replaced."""
    if not os.path.lexists(directory):
        return
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise ModelError(f"{directory}: exists and is not a directory; not overwritten")
    names = sorted(os.listdir(directory))
    if names and "potential.json" not in names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ModelError(
            f"{directory}: exists and is not a model directory (it holds {shown}); not overwritten: "
            "save to a new or empty directory"
        )


def _read_metadata(directory: str) -> tuple[str, dict]:
    if os.path.isdir(os.path.join(directory, "model")) and not os.path.exists(
        os.path.join(directory, "potential.json")
    ):
        directory = os.path.join(directory, "model")
    meta_path = os.path.join(directory, "potential.json")
    if not os.path.isfile(meta_path):
        raise ModelError(f"{directory}: not a model directory (no potential.json)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ModelError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ModelError(
            f"{meta_path}: format_version {meta.get('format_version')!r}; this nnpes reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if meta.get("ensemble_kind", "deep") not in ("deep", "shallow"):
        raise ModelError(f"{meta_path}: ensemble_kind {meta['ensemble_kind']!r}; expected 'deep' or 'shallow'")
    return directory, meta


def model_class(meta: dict, where: str) -> type:
    """The module class a saved model names: a registered family, else its recorded import
    path, else its recorded source file (a class defined in a user's script)."""
    from nnpes.models import FAMILIES

    family = meta.get("family")
    if family in FAMILIES:
        return FAMILIES[family]
    path = meta.get("model_class")
    if not path:
        raise ModelError(f"{where}: unknown model family {family!r}, expected one of {sorted(FAMILIES)}")
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name) if module_name == "__main__" else None
    if module is None or not hasattr(module, qualname):
        what = f"model family {family!r} is not registered and model class {path}" if family else f"model class {path}"
        module = _import_module(module_name, meta.get("model_file"), where, what)
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type):
        raise ModelError(f"{where}: model class {path} not found (register it with nnpes.models.register_family)")
    return obj


def _import_module(module_name: str, source: str | None, where: str, what: str):
    if module_name != "__main__":
        try:
            return importlib.import_module(module_name)
        except ImportError:
            pass
    if not source or not os.path.isfile(source):
        raise ModelError(
            f"{where}: {what} cannot be imported (no source file {source!r}): put its module on "
            "PYTHONPATH or register it with nnpes.models.register_family"
        )
    # a user's script: run under another name, so its `if __name__ == "__main__":` part does not
    name = "_nnpes_model_" + os.path.splitext(os.path.basename(source))[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ModelError(f"{where}: importing {source} for {what} failed ({type(e).__name__}: {e})") from None
    return module


def _restore_params(params_path: str):
    try:
        with open(params_path, "rb") as f:
            params = flax.serialization.msgpack_restore(f.read())
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{params_path}: cannot restore parameters ({type(e).__name__}: {e})") from None
    if not isinstance(params, dict) or "params" not in params:
        raise ModelError(f"{params_path}: not a flax parameter file")
    return params


def check_weights_fit(model, params, cutoff: float, params_path: str, members: int = 0) -> None:
    """Raise one ModelError line naming the first parameter whose presence or shape differs
    from what the hyper-parameters build (shapes only: nothing is computed); an ensemble's
    leaves carry a leading axis of ``members``."""
    from nnpes.potential import example_inputs

    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), *example_inputs(cutoff))
    lead = (members,) if members else ()
    want = {jax.tree_util.keystr(k): lead + v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    have = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    for key in sorted(set(want) | set(have)):
        if key not in have:
            problem = f"parameter {key} is missing (the hyper-parameters need shape {want[key]})"
        elif key not in want:
            problem = f"parameter {key} {have[key]} is not part of a model with these hyper-parameters"
        elif tuple(want[key]) != tuple(have[key]):
            problem = f"parameter {key} has shape {tuple(have[key])}, the hyper-parameters need {tuple(want[key])}"
        else:
            continue
        raise ModelError(f"{params_path}: weights do not fit the hyper-parameters in potential.json: {problem}")


def load(directory: str | os.PathLike):
    """See :func:`nnpes.load`."""
    from nnpes.models.base import validate_hyperparameters  # here: nnpes.potential imports this module
    from nnpes.potential import Potential, fill_model, outputs_per_atom

    directory, meta = _read_metadata(os.fspath(directory))
    meta_path = os.path.join(directory, "potential.json")
    cls = model_class(meta, meta_path)
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["hyperparameters"].items()}
    try:
        model = cls(**hyper)
        validate_hyperparameters(model, meta_path)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{meta_path}: hyper-parameters do not fit model class {cls.__name__} ({e})") from None
    params_path = os.path.join(directory, "params.msgpack")
    params = _restore_params(params_path)
    terms = terms_from_json(meta.get("terms", []), meta_path)
    members = int(meta.get("ensemble_members", 0))
    shallow = meta.get("ensemble_kind", "deep") == "shallow"
    outputs = outputs_per_atom(terms, members, shallow)
    model = fill_model(model, meta["cutoff_a"], len(meta["atomic_numbers"]), meta["avg_num_neighbors"], outputs)
    check_weights_fit(model, params, meta["cutoff_a"], params_path, 0 if shallow else members)
    return Potential.create(
        model,
        meta["atomic_numbers"],
        meta["cutoff_a"],
        e0=meta["e0_ev"],
        e0_method=meta["e0_method"],
        scale=meta["scale_ev"],
        avg_num_neighbors=meta["avg_num_neighbors"],
        params=jax.tree.map(jnp.asarray, params),
        terms=terms,
        label_keys=meta.get("label_keys", {}),
        members=members,
        shallow=shallow,
        calibration=meta.get("uncertainty_calibration", (1.0, 1.0)),
        force_std_alarm_ev_a=meta.get("force_std_alarm_ev_a"),
    )
