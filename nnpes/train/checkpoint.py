"""Atomic checkpoints of the whole training state (one pytree, normally a
:class:`nnpes.train.state.TrainState`), serialised with msgpack (``flax.serialization``).

Each checkpoint is one file ``step_XXXXXXXX.msgpack``, written to a temporary name, flushed
to disk and renamed, so a kill at any moment leaves either the old set or the new file, never
a half-written one under a final name. Restoring tries the newest first and falls back to
older ones with a warning if a file is unreadable.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from typing import Any, TypeVar

import flax.serialization
import jax
import numpy as np

T = TypeVar("T")
_NAME = re.compile(r"step_(\d+)\.msgpack$")


def _steps(directory: str) -> list[tuple[int, str]]:
    found = []
    for path in glob.glob(os.path.join(directory, "step_*.msgpack")):
        m = _NAME.search(path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def save(directory: str, step: int, state: Any, keep: int = 3) -> str:
    """Write ``state`` (a pytree) for ``step`` atomically; keep the newest ``keep`` files.

    Returns the path written (``directory/step_XXXXXXXX.msgpack``).
    """
    os.makedirs(directory, exist_ok=True)
    data = flax.serialization.to_bytes(jax.device_get(state))
    final = os.path.join(directory, f"step_{step:08d}.msgpack")
    tmp = final + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    try:  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
    for _, old in _steps(directory)[:-keep]:
        os.remove(old)
    return final


def restore(directory: str, target: T) -> T | None:
    """The newest readable checkpoint restored into the structure of ``target`` (a fresh state
    of the same run: its pytree structure, not its values, is used), or None if none is readable."""
    for _, path in reversed(_steps(directory)):
        try:
            with open(path, "rb") as f:
                state = flax.serialization.from_bytes(target, f.read())
            jax.tree.map(np.asarray, state)
            return state
        except Exception as e:  # a truncated or corrupted file: fall back to the previous one
            warnings.warn(
                f"{path}: checkpoint unreadable ({type(e).__name__}); falling back to an older one", stacklevel=2
            )
    return None


def latest_step(directory: str) -> int | None:
    """Step of the newest checkpoint file in ``directory`` (readable or not), or None."""
    s = _steps(directory)
    return s[-1][0] if s else None
