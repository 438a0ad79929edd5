"""Output files of the ``nnpes`` verbs: checked before any work, written with one-line errors."""

from __future__ import annotations

import json
import os

from nnpes.errors import ConfigError, DataError


def check_outputs(*options: tuple[str, str | None]) -> None:
    """Refuse, before any work is done, an output path that could not be written after it:
    ``options`` are (option, path) pairs such as ("--json", args.json); None paths are skipped."""
    for option, path in options:
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ConfigError(f"{option} {path}: is a directory")
        if not os.path.isdir(folder):
            raise ConfigError(f"{option} {path}: directory {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"{option} {path}: directory {folder} is not writable")


def write(write_fn, *what) -> None:
    """``write_fn(*what)``, an OSError of the file it writes as one line naming that file."""
    try:
        write_fn(*what)
    except OSError as e:
        raise DataError(f"{e.filename or 'output'}: cannot write ({e.strerror or e})") from None


def dump_json(report: dict, path: str) -> None:
    """Write ``report`` as indented JSON to ``path``."""
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
