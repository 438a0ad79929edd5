"""Memory and time scaling of the Behler–Parrinello model on fcc Cu.

Each size runs in its own subprocess, which builds the structure, its host neighbour list
(vesin) and a float32 padded graph, then calls ``nnpes.physics.evaluate`` (energy + forces, no
stress) until the time per call is steady. Reported per size: peak process RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, so the neighbour list and compilation are
included), compile time, and the median and minimum time per call. The scaling exponent k of
time ∝ N^k is a least-squares fit of log(time) against log N over all sizes, using the minimum
over the repeats (the machine may be shared: the minimum is the least disturbed call; the
exponent of the medians is reported too).

Acceptance (defaults: default descriptors, 8 Å cutoff, 500–4000 atoms): peak RSS < 4 GB at the
largest size and k ≤ 1.1. The exit status is 1 when either fails.

Usage:
    python benchmarks/bp_memory.py [--sizes 500 1000 2000 4000] [--cutoff 8] [--repeats 10]
                                   [--json benchmarks/results/bp_memory.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time

DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bp_memory.json")
MAX_RSS_GB = 4.0
MAX_EXPONENT = 1.1
LATTICE_A = 3.615  # Å, fcc Cu


def cubic_repeats(n_atoms: int) -> tuple[int, int, int]:
    """Repeats (a, b, c) of the 4-atom cubic fcc cell with 4abc = n_atoms, as close to a cube
    as possible (raises if n_atoms is not a multiple of 4)."""
    if n_atoms % 4:
        raise SystemExit(f"fcc sizes must be multiples of 4 atoms, got {n_atoms}")
    cells = n_atoms // 4
    triples = [
        (a, b, cells // (a * b))
        for a, b in itertools.product(range(1, cells + 1), repeat=2)
        if cells % (a * b) == 0 and a <= b <= cells // (a * b)
    ]
    return min(triples, key=lambda t: t[2] / t[0])


def worker(n_atoms: int, cutoff: float, repeats: int) -> dict:
    """One size, in this process: build, compile, time; returns the measurements."""
    import jax
    import numpy as np
    from ase.build import bulk

    from nnpes import Potential
    from nnpes.data.graph import batch_graphs, frame_to_graph
    from nnpes.data.io import frame_from_atoms
    from nnpes.models import BehlerParrinello
    from nnpes.models.behler_parrinello import num_features
    from nnpes.physics import evaluate

    atoms = bulk("Cu", "fcc", a=LATTICE_A, cubic=True).repeat(cubic_repeats(n_atoms))
    atoms.rattle(0.05, seed=0)
    t0 = time.perf_counter()
    graph = frame_to_graph(frame_from_atoms(atoms), cutoff, [29])
    n_edge = graph.n_edge
    # exact padding (one padding node, no padding edges) so the fit sees only N, not buckets
    batch = batch_graphs([graph], n_node=n_atoms + 1, n_edge=n_edge, n_graph=2, dtype=np.float32)
    neighbour_s = time.perf_counter() - t0

    potential = Potential.create(BehlerParrinello(), [29], cutoff, avg_num_neighbors=n_edge / n_atoms)
    t0 = time.perf_counter()
    out = evaluate(potential, batch, compute_stress=False)
    jax.block_until_ready(out)
    first_s = time.perf_counter() - t0
    assert np.all(np.isfinite(np.asarray(out["forces"]))), "non-finite forces"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(evaluate(potential, batch, compute_stress=False))
        times.append(time.perf_counter() - t0)
    return {
        "n_atoms": n_atoms,
        "n_edges": n_edge,
        "neighbors_per_atom": n_edge / n_atoms,
        "num_features": num_features(potential.model),
        "neighbor_list_s": neighbour_s,
        "first_call_s": first_s,
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "times_s": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # Linux: KiB
        "backend": jax.default_backend(),
    }


def fit_exponent(sizes, times) -> float:
    """Slope of log(time) against log(N), least squares."""
    import numpy as np

    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000], help="atom counts (multiples of 4)"
    )
    parser.add_argument("--cutoff", type=float, default=8.0, help="cutoff, Å")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per size after the first")
    parser.add_argument("--json", default=DEFAULT_JSON, help="where to write the results")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.cutoff, args.repeats)))
        return 0

    rows = []
    for n in args.sizes:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            str(n),
            "--cutoff",
            str(args.cutoff),
            "--repeats",
            str(args.repeats),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"size {n}: worker failed with status {proc.returncode}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"  done N={n}: {r['median_s']:.3f} s/call, peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True
        )

    sizes = [r["n_atoms"] for r in rows]
    exponent = fit_exponent(sizes, [r["min_s"] for r in rows]) if len(rows) > 1 else float("nan")
    exponent_median = fit_exponent(sizes, [r["median_s"] for r in rows]) if len(rows) > 1 else float("nan")
    peak_gb = max(r["peak_rss_mb"] for r in rows) / 1024.0
    passed = peak_gb < MAX_RSS_GB and (len(rows) < 2 or exponent <= MAX_EXPONENT)

    print(
        f"Behler-Parrinello (default descriptors, {rows[0]['num_features']} features), fcc Cu, "
        f"cutoff {args.cutoff} Å, energy+forces, float32, backend {rows[0]['backend']}"
    )
    print(
        f"{'atoms':>6} {'edges':>9} {'nbrs/atom':>9} {'nlist s':>8} {'1st call s':>10} "
        f"{'median s':>9} {'min s':>8} {'µs/atom':>8} {'peak RSS MB':>11}"
    )
    for r in rows:
        print(
            f"{r['n_atoms']:>6} {r['n_edges']:>9} {r['neighbors_per_atom']:>9.1f} {r['neighbor_list_s']:>8.2f} "
            f"{r['first_call_s']:>10.2f} {r['median_s']:>9.4f} {r['min_s']:>8.4f} "
            f"{1e6 * r['min_s'] / r['n_atoms']:>8.1f} {r['peak_rss_mb']:>11.0f}"
        )
    print(f"time ∝ N^{exponent:.3f} (min over repeats; medians: N^{exponent_median:.3f}); limit {MAX_EXPONENT}")
    print(f"peak RSS {peak_gb:.2f} GB; limit {MAX_RSS_GB} GB -> {'PASS' if passed else 'FAIL'}")

    result = {
        "benchmark": "bp_memory",
        "cutoff_a": args.cutoff,
        "dtype": "float32",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
        "time_exponent": exponent,
        "time_exponent_median": exponent_median,
        "peak_rss_gb": peak_gb,
        "limits": {"peak_rss_gb": MAX_RSS_GB, "time_exponent": MAX_EXPONENT},
        "passed": passed,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.json}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
