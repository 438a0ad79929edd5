"""Compilation: the one counter of traces, the seconds spent compiling, and the persistent cache.

Each jitted function of nnpes calls :func:`traced` with its name inside the traced body: the
Python body runs only while JAX traces, so each increment is one XLA compilation. Callers read
:func:`count` before and after a piece of work and report the difference. The seconds JAX spends
tracing, lowering and compiling (or loading a compiled program from the persistent cache) and the
number of cache hits come from JAX's own monitoring events (:func:`stats`), so training can
report compile time apart from training time.
"""

from __future__ import annotations

import collections
import os

import jax

_COUNTS: collections.Counter[str] = collections.Counter()
_SECONDS: collections.Counter[str] = collections.Counter()
_EVENTS: collections.Counter[str] = collections.Counter()

# JAX's monitoring events: each compilation's phases, and persistent-cache hits and misses.
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_CACHE_HIT, _CACHE_MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"
ENV_CACHE_DIR = "NNPES_CACHE_DIR"
"""Environment variable naming the persistent compilation cache directory."""
ENV_NO_CACHE = "NNPES_NO_COMPILE_CACHE"
"""Set to 1 to switch the persistent cache off (as ``nnpes --no-compile-cache``)."""


def traced(name: str) -> None:
    """Record one trace (= one compilation) of the function called ``name``."""
    _COUNTS[name] += 1


def count(*names: str) -> int:
    """Compilations so far of the named functions (all of them when no name is given)."""
    if not names:
        return sum(_COUNTS.values())
    return sum(_COUNTS[n] for n in names)


def _on_duration(event: str, seconds: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _SECONDS["compile"] += seconds


def _on_event(event: str, **_) -> None:
    if event in (_CACHE_HIT, _CACHE_MISS):
        _EVENTS[event] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)


def stats() -> dict[str, float]:
    """Process totals so far: ``compile_s`` (seconds tracing, lowering and compiling, cache loads
    included), ``cache_hits`` and ``cache_misses`` of the persistent compilation cache."""
    return {
        "compile_s": float(_SECONDS["compile"]),
        "cache_hits": int(_EVENTS[_CACHE_HIT]),
        "cache_misses": int(_EVENTS[_CACHE_MISS]),
    }


def default_cache_dir() -> str:
    """``$NNPES_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnpes/jax``, else ``~/.cache/nnpes/jax``."""
    if os.environ.get(ENV_CACHE_DIR):
        return os.path.abspath(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nnpes", "jax")


def enable_persistent_cache(directory: str | None = None) -> str | None:
    """Switch on JAX's persistent compilation cache (a process-wide setting: entry points call
    this, the library never does), so a second identical ``nnpes train``/``evaluate``/``md``
    loads its compiled programs instead of compiling again.

    Args:
        directory: cache directory (default :func:`default_cache_dir`). Nothing is switched on
            when ``$NNPES_NO_COMPILE_CACHE`` is set to a non-empty value other than 0.

    Returns:
        The directory in use, or None when the cache stays off.
    """
    if os.environ.get(ENV_NO_CACHE, "0") not in ("", "0"):
        return None
    directory = os.path.abspath(directory or default_cache_dir())
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # skip trivial programs
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
