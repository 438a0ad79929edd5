"""Shared pieces of the benchmark scripts: timed cases in subprocesses under limits.

A driver runs each case as ``python SCRIPT --worker ...`` through :func:`run_limited`, under a
wall-clock timeout and an address-space limit (``resource.setrlimit(RLIMIT_AS)``); the worker
prints its measurements with :func:`emit`. An out-of-memory, a timeout or a crash becomes a
status string ("oom", "timeout (> T s)", "error: ...") instead of stopping the run.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

_PREFIX = "RESULT "
_OOM_SIGNS = (
    "MemoryError",
    "RESOURCE_EXHAUSTED",
    "std::bad_alloc",
    "Out of memory",
    "out of memory",
    "Cannot allocate memory",
    "Resource exhausted",
    "failed to map segment",
    "mmap",
)
# under an address-space limit, failed allocations in XLA's C++ surface as these signals
_MEMORY_SIGNALS = (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)


def median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    """(median, all) wall-clock milliseconds of ``repeats`` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), times


def time_energy_forces(potential, batch, repeats: int) -> tuple[dict, dict]:
    """Compile nnpes' energy + forces for one padded batch and time it.

    Returns (the output of the first call, {padded_edges, compile_s, step_ms (median),
    step_ms_all, flops (XLA's count for one call)}); times in s and ms, of the compiled call alone.
    """
    import jax

    from nnpes.physics import evaluate

    start = time.perf_counter()
    compiled = evaluate.lower(potential, batch, compute_stress=False).compile()
    compile_s = time.perf_counter() - start
    flops = flop_count(compiled)
    out = jax.block_until_ready(compiled(potential, batch))
    step_ms, times = median_ms(lambda: jax.block_until_ready(compiled(potential, batch)), repeats)
    timing = {"padded_edges": int(batch.senders.shape[0]), "compile_s": compile_s, "step_ms": step_ms,
              "step_ms_all": times, "flops": flops}  # fmt: skip
    return out, timing


def flop_count(compiled) -> float | None:
    """FLOPs of one call of a compiled function, from XLA's cost analysis (None if unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    """Worker side: hand one JSON-able dict of measurements to the driver (stdout)."""
    print(_PREFIX + json.dumps(result), flush=True)


def worker_env(nnpes_flags: bool = True) -> dict:
    """The environment of a worker: this one with JAX on the CPU (unless JAX_PLATFORMS is set),
    float32, and XLA_FLAGS with nnpes's CPU flags (:mod:`nnpes.xla_flags`) for every case,
    peers included, so that a ratio compares code, not compiler settings; ``nnpes_flags=False``
    gives XLA's defaults (and stops nnpes adding its flags)."""
    from nnpes.xla_flags import ENV_OPT_OUT, with_cpu_flags

    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), JAX_ENABLE_X64="0")
    if nnpes_flags:
        env["XLA_FLAGS"] = with_cpu_flags(env.get("XLA_FLAGS", ""))
    else:
        env[ENV_OPT_OUT] = "0"
    return env


def run_limited(cmd: list[str], timeout_s: float, memory_gb: float, env: dict | None = None) -> dict:
    """Driver side: run a worker command under the limits.

    Returns the worker's :func:`emit` dict with ``status="ok"``, or ``{"status": ...}`` naming
    what went wrong ("oom" with a ``detail``, "timeout (> T s)", "error: <last line>"); always
    with ``wall_s``. The environment defaults to :func:`worker_env`.
    """
    limit = int(memory_gb * 2**30)

    def set_limits():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = worker_env() if env is None else env
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, preexec_fn=set_limits, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {timeout_s:.0f} s)", "wall_s": time.perf_counter() - start}
    wall_s = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_PREFIX)]
    if proc.returncode == 0 and lines:
        return {"status": "ok", "wall_s": wall_s, **json.loads(lines[-1][len(_PREFIX) :])}
    text = proc.stderr + proc.stdout
    if any(sign in text for sign in _OOM_SIGNS):
        return {"status": "oom", "detail": last_line(text, proc.returncode), "wall_s": wall_s}
    if proc.returncode < 0 and -proc.returncode in _MEMORY_SIGNALS:
        name = signal.Signals(-proc.returncode).name
        return {"status": "oom", "detail": f"{name} under the {memory_gb:g} GiB address-space limit", "wall_s": wall_s}
    return {"status": f"error: {last_line(text, proc.returncode)}", "wall_s": wall_s}


def last_line(text: str, returncode: int) -> str:
    """The last non-empty line of a worker's output (300 characters at most)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {returncode}"


def fmt(value, spec: str) -> str:
    """format(value, spec) for numbers, "-" for anything else (a missing measurement)."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def worker_command(script: str, *args: str) -> list[str]:
    """``python SCRIPT --worker ARGS...`` with this interpreter."""
    return [sys.executable, os.path.abspath(script), "--worker", *args]
