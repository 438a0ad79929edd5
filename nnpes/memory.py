"""Will it fit? Memory a compiled call needs, against what this process may still use.

Large structures fail late and badly when memory runs out (XLA aborts the process, or the
kernel kills it). Entry points that take a structure of any size (``nnpes.Calculator``,
``nnpes md``) compile first, read what the compiled program needs (XLA's memory analysis:
arguments, outputs and temporaries), and refuse with one line when it exceeds what is
available, before anything of that size is allocated.
"""

from __future__ import annotations

import os
import resource

from nnpes.errors import ModelError

ENV_LIMIT = "NNPES_MEMORY_LIMIT_GB"
"""Environment variable: a memory limit (GiB) to check against instead of the machine's."""


def available_bytes() -> int | None:
    """Bytes this process may still allocate: the least of the machine's available memory
    (``MemAvailable`` in /proc/meminfo), the address-space limit (RLIMIT_AS) minus what is
    mapped now, and ``NNPES_MEMORY_LIMIT_GB`` minus the resident size; None when none is known."""
    limits = []
    meminfo = _meminfo_kb()
    if "MemAvailable" in meminfo:
        limits.append(meminfo["MemAvailable"] * 1024)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    vm_size, rss = _self_status_kb("VmSize"), _self_status_kb("VmRSS")
    if soft != resource.RLIM_INFINITY and vm_size is not None:
        limits.append(soft - vm_size * 1024)
    if os.environ.get(ENV_LIMIT):
        limits.append(int(float(os.environ[ENV_LIMIT]) * 2**30) - (rss or 0) * 1024)
    return max(0, min(limits)) if limits else None


def compiled_bytes(compiled) -> int | None:
    """Bytes a compiled JAX call needs at its peak (arguments + outputs + temporaries, XLA's
    memory analysis), or None where the backend does not say."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if stats is None:
        return None
    parts = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
    return int(sum(getattr(stats, name, 0) or 0 for name in parts))


def check_fits(needed_bytes: int | None, what: str, hint: str = "") -> None:
    """Raise a one-line ModelError when ``needed_bytes`` exceed :func:`available_bytes`.

    Args:
        needed_bytes: the estimate (None: unknown, nothing is checked).
        what: names the work, e.g. "energy + forces of 108000 atoms (12 500 000 pairs)".
        hint: what the user can do instead.
    """
    available = available_bytes()
    if needed_bytes is None or available is None or needed_bytes <= available:
        return
    message = f"{what} needs about {needed_bytes / 2**30:.1f} GiB, but only {available / 2**30:.1f} GiB are available"
    raise ModelError(message + (f": {hint}" if hint else ""))


def _meminfo_kb() -> dict[str, int]:
    try:
        with open("/proc/meminfo") as f:
            return {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1:2]}
    except (OSError, ValueError, IndexError):
        return {}


def _self_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
