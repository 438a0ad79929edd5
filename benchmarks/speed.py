"""Speed of one energy + forces call: nnpes NequIP vs jax-md's own NequIP, fcc Cu, float32.

Cases (each × every size):
    nnpes-default  nnpes.models.NequIP() with its defaults (32 channels, l ≤ 2, both parities,
                   3 layers, 8 Bessel functions, radial MLP 64×64), r_c = 5 Å.
    nnpes-peer     nnpes NequIP with the peer's hyper-parameters: 3 layers, hidden irreps
                   "32x0e+32x1o+32x1e", spherical harmonics l ≤ 1, 8 Bessel functions,
                   radial MLP 64×64, r_c = 5 Å.
    jaxmd-peer     jax_md.energy.nequip_neighbor_list with the same hyper-parameters
                   (graph_net_steps 3, hidden_irreps "32x0e + 32x1o + 32x1e", sh_irreps
                   "1x0e + 1x1o", num_basis 8, radial 2×64, r_max 5 Å).
    nnpes-peer-l2, jaxmd-peer-l2
                   the same two with hidden irreps 32x0e+32x1o+32x1e+32x2e+32x2o and
                   spherical harmonics l ≤ 2 on both sides.
    peak           not a model: a jitted 4096² float32 matmul, this machine's attainable
                   FLOP/s; every case's achieved FLOP/s (XLA's cost analysis of the compiled
                   call / step time) is reported as a fraction of it.

What is timed, per case: the host neighbour list (nnpes: vesin + padding into a GraphsTuple;
jax-md: ``neighbor_fn.allocate``), reported apart; the compile time of the jitted energy +
forces function (lower + compile); the steady-state time of that compiled call (median of
--repeats calls after a warm-up) on the prebuilt padded graph (nnpes ``physics.evaluate``
without stress) or prebuilt neighbour list (jax-md ``jit(value_and_grad(energy_fn))``).

Every case but peak runs with the same XLA_FLAGS, nnpes's CPU flags (``nnpes.xla_flags``: no
YNNPACK fusions), the jax-md cases included, so that a ratio compares code, not compiler
settings; peak runs with XLA's defaults, its fastest matmul. ``--rounds R`` runs the whole case
list R times, one after another, and keeps the median round of each case, so that a drift of
the machine's speed during the run touches both sides of a ratio alike.

With three or more sizes of one case, the run also fits peak RSS = intercept + slope·atoms
(least squares; slope in KB per atom) and step time ∝ atoms^exponent (log-log fit).

Every case runs in its own subprocess under a wall-clock timeout and an address-space limit
(resource.setrlimit), so an out-of-memory or failing case is recorded as "oom", "timeout" or
"error: ..." and the run goes on. Results: a table on stdout and JSON (--json).

Usage:
    python benchmarks/speed.py --sizes 256 2048 --rounds 3 --memory-gb 20 --json benchmarks/results/speed.json
    python benchmarks/speed.py --cases nnpes-default --sizes 2048 8788 32000 108000 \
        --memory-gb 16 --repeats 3 --json benchmarks/results/scaling.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

from _harness import (
    emit,
    flop_count,
    fmt,
    median_ms,
    peak_rss_mb,
    run_limited,
    time_energy_forces,
    worker_command,
    worker_env,
)

CASES = ("peak", "nnpes-default", "nnpes-peer", "jaxmd-peer", "nnpes-peer-l2", "jaxmd-peer-l2")
SIZES = (108, 256, 864, 2048)  # fcc Cu: 4·n³ atoms for n = 3, 4, 6, 8
LATTICE_A = 3.6  # Å
CUTOFF_A = 5.0
RATTLE_A = 0.05  # Å, so that forces are not zero by symmetry
PEER_IRREPS = {"": "32x0e+32x1o+32x1e", "-l2": "32x0e+32x1o+32x1e+32x2e+32x2o"}
PEER_SH = {"": "1x0e + 1x1o", "-l2": "1x0e + 1x1o + 1x2e"}
PEAK_N = 4096  # matmul size of the attainable-FLOP/s case

DIFFERENCES = [
    "messages: nnpes divides by sqrt(avg_num_neighbors), jax-md by n_neighbors (numerics only, same cost)",
    "radial basis: nnpes Bessel x polynomial envelope (p=6); jax-md Bessel with trainable frequencies x "
    "its multiplicative isotropic cutoff (inner 4.5 A, outer 5 A)",
    "tensor product: nnpes contracts Y_l with the Clebsch-Gordan tensor, then the channels (equal to "
    "e3nn.tensor_product), one radial weight per output irrep; jax-md legacy FunctionalTensorProduct in "
    "'uvu' mode with one radial weight per path (the same weights)",
    "edges: nnpes sums messages over edge chunks (scan, recomputed in the backward pass, "
    "NequIP.edge_memory_mb); jax-md all edges at once",
    "last layer: nnpes computes only the scalars the readout reads; jax-md computes all hidden irreps",
    "readout: nnpes 16x0e -> SiLU -> 0e; jax-md 16x0e -> 0e (no non-linearity)",
    "padding: nnpes pads edges to a bucket (<= 25 %); jax-md's sparse list has capacity 1.25 x occupancy",
    "neighbour list: nnpes on the host (vesin, reported apart); jax-md allocate() with jnp "
    "(O(N^2) candidates when the box is < 3 r_c)",
]


# -- worker: one case, one size, in its own process ---------------------------------------------
def copper(n_atoms: int):
    import ase.build

    reps = round((n_atoms / 4) ** (1 / 3))
    if 4 * reps**3 != n_atoms:
        raise SystemExit(f"{n_atoms} atoms is not an fcc supercell 4·n³ (try 108, 256, 500, 864, 2048)")
    atoms = ase.build.bulk("Cu", "fcc", a=LATTICE_A, cubic=True) * (reps, reps, reps)
    atoms.rattle(RATTLE_A, seed=0)
    atoms.wrap()
    return atoms


def run_nnpes(case: str, atoms, repeats: int) -> dict:
    import jax
    import numpy as np

    import nnpes
    from nnpes.data.graph import batch_graphs, frame_to_graph
    from nnpes.data.io import frame_from_atoms
    from nnpes.models import NequIP
    from nnpes.physics import evaluate

    model = (
        NequIP()
        if case == "nnpes-default"
        else NequIP(
            num_layers=3,
            hidden_irreps=PEER_IRREPS[case.removeprefix("nnpes-peer")],
            num_basis=8,
            radial_features=(64, 64),
        )
    )
    frame = frame_from_atoms(atoms, source="benchmark")

    def build():
        graph = frame_to_graph(frame, CUTOFF_A, (29,))
        return graph, batch_graphs([graph], dtype=np.float32)

    build()
    neighbor_ms, _ = median_ms(build, 3)
    graph, batch = build()
    potential = nnpes.Potential.create(model, [29], CUTOFF_A, avg_num_neighbors=graph.n_edge / graph.n_node)
    batch = jax.device_put(batch)

    out, timing = time_energy_forces(potential, batch, repeats)
    # XLA's cost analysis counts a loop body once: count the FLOPs of the same function in one
    # pass over the edges (compiled, never run), i.e. without the backward pass's recomputation
    one_pass = potential.replace(model=potential.model.clone(edge_chunk=0))
    timing["flops"] = flop_count(evaluate.lower(one_pass, batch, compute_stress=False).compile())
    forces = np.asarray(out["forces"][: len(atoms)])
    return {
        "edges": int(graph.n_edge),
        "neighbor_ms": neighbor_ms,
        **timing,
        "energy_ev": float(out["energy"][0]),
        "max_force_ev_a": float(np.abs(forces).max()),
    }


def run_peak(repeats: int) -> dict:
    """Attainable float32 FLOP/s of this machine: a jitted PEAK_N² matmul."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (PEAK_N, PEAK_N), jnp.float32)
    matmul = jax.jit(jnp.dot).lower(a, a).compile()
    jax.block_until_ready(matmul(a, a))
    step_ms, times = median_ms(lambda: jax.block_until_ready(matmul(a, a)), repeats)
    flops = 2.0 * PEAK_N**3
    return {"step_ms": step_ms, "step_ms_all": times, "flops": flops, "gflop_s": flops / step_ms / 1e6}


def run_jaxmd(case: str, atoms, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax_md import energy, space
    from jax_md._nn import nequip

    n = len(atoms)
    positions = jnp.asarray(atoms.positions, jnp.float32)
    box = float(atoms.cell[0, 0])  # cubic supercell
    displacement, _ = space.periodic(box)

    cfg = nequip.default_config()
    cfg.graph_net_steps = 3
    suffix = case.removeprefix("jaxmd-peer")
    cfg.hidden_irreps = " + ".join(PEER_IRREPS[suffix].split("+"))
    cfg.sh_irreps = PEER_SH[suffix]
    cfg.num_basis = 8
    cfg.r_max = CUTOFF_A
    cfg.radial_net_n_hidden = 64
    cfg.radial_net_n_layers = 2
    cfg.n_elements = 1
    cfg.shift, cfg.scale = 0.0, 1.0
    species = jnp.ones((n, 1), jnp.float32)
    neighbor_fn, init_fn, energy_fn = energy.nequip_neighbor_list(displacement, box, cfg, atoms=species)

    def allocate():
        nbrs = neighbor_fn.allocate(positions)
        jax.block_until_ready(nbrs.idx)
        return nbrs

    allocate()
    neighbor_ms, _ = median_ms(allocate, 3)
    nbrs = allocate()
    edges = int(jnp.sum(nbrs.idx[0] < n))
    cfg.n_neighbors = edges / n
    neighbor_fn, init_fn, energy_fn = energy.nequip_neighbor_list(displacement, box, cfg, atoms=species)
    params = init_fn(jax.random.PRNGKey(0), positions, nbrs)

    value_and_grad = jax.jit(jax.value_and_grad(energy_fn, argnums=1))
    start = time.perf_counter()
    compiled = value_and_grad.lower(params, positions, nbrs).compile()
    compile_s = time.perf_counter() - start
    flops = flop_count(compiled)
    e, grad = jax.block_until_ready(compiled(params, positions, nbrs))
    step_ms, times = median_ms(lambda: jax.block_until_ready(compiled(params, positions, nbrs)), repeats)
    return {
        "edges": edges,
        "padded_edges": int(nbrs.idx.shape[1]),
        "neighbor_ms": neighbor_ms,
        "compile_s": compile_s,
        "step_ms": step_ms,
        "step_ms_all": times,
        "energy_ev": float(e),
        "max_force_ev_a": float(np.abs(np.asarray(grad)).max()),
        "flops": flops,
    }


def worker(case: str, n_atoms: int, repeats: int) -> None:
    if case == "peak":
        result = run_peak(repeats)
    else:
        atoms = copper(n_atoms)
        result = run_jaxmd(case, atoms, repeats) if case.startswith("jaxmd") else run_nnpes(case, atoms, repeats)
        if result.get("flops"):
            result["gflop_s"] = result["flops"] / result["step_ms"] / 1e6
    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)


# -- driver ------------------------------------------------------------------------------------
def run_case(case: str, n_atoms: int, args) -> dict:
    cmd = worker_command(__file__, case, str(n_atoms), "--repeats", str(args.repeats))
    # the peak is XLA's best large matmul: its default flags (nnpes's CPU flags cost a plain matmul ~10 %)
    env = worker_env(nnpes_flags=case != "peak")
    return {"case": case, "atoms": n_atoms, **run_limited(cmd, args.timeout, args.memory_gb, env)}


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One record per case from --rounds runs of the whole case list: the round whose step time is
    the median of the successful rounds (all rounds' step times kept in ``step_ms_rounds``)."""
    merged = []
    for records in zip(*rounds):
        ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: r["step_ms"])
        best = dict(ok[(len(ok) - 1) // 2] if ok else records[0])
        best["step_ms_rounds"] = [r.get("step_ms") for r in records]
        merged.append(best)
    return merged


def peer_of(case: str) -> str | None:
    """The jax-md case an nnpes case is compared with."""
    if case == "nnpes-peer-l2":
        return "jaxmd-peer-l2"
    return "jaxmd-peer" if case.startswith("nnpes") else None


def derive(results: list[dict]) -> None:
    """Add ratio_vs_jaxmd (step time / the jax-md case's, same structure) and fraction_of_peak."""
    peak = next((r for r in results if r["case"] == "peak" and r["status"] == "ok"), None)
    for r in results:
        if r["status"] != "ok" or r["case"] == "peak":
            continue
        peer = next((p for p in results if p["case"] == peer_of(r["case"]) and p["atoms"] == r["atoms"]), None)
        if peer and peer["status"] == "ok":
            r["ratio_vs_jaxmd"] = r["step_ms"] / peer["step_ms"]
        if peak and r.get("gflop_s"):
            r["fraction_of_peak"] = r["gflop_s"] / peak["gflop_s"]


def fits(results: list[dict]) -> dict:
    """Per case with ≥ 3 sizes: peak RSS = intercept + slope·atoms, step ms ∝ atoms^exponent."""
    import numpy as np

    out = {}
    for case in dict.fromkeys(r["case"] for r in results):
        ok = [r for r in results if r["case"] == case and r["status"] == "ok" and r.get("atoms")]
        if len(ok) < 3:
            continue
        n = np.array([r["atoms"] for r in ok], float)
        rss = np.array([r["peak_rss_mb"] for r in ok], float)
        slope, intercept = np.polyfit(n, rss, 1)
        exponent, _ = np.polyfit(np.log(n), np.log([r["step_ms"] for r in ok]), 1)
        out[case] = {
            "atoms": n.astype(int).tolist(),
            "rss_slope_kb_per_atom": slope * 1024,
            "rss_intercept_mb": intercept,
            "time_exponent": exponent,
        }
    return out


def table(results: list[dict]) -> str:
    head = (
        f"{'atoms':>6} {'case':<14} {'edges':>7} {'padded':>7} {'nbr ms':>7} {'compile s':>9} "
        f"{'step ms':>9} {'vs jax-md':>9} {'GFLOP/s':>8} {'of peak':>7} {'peak MB':>8}  status"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        of_peak = f"{100 * r['fraction_of_peak']:.1f}%" if "fraction_of_peak" in r else "-"
        rows.append(
            f"{fmt(r.get('atoms') or None, 'd'):>6} {r['case']:<14} {fmt(r.get('edges'), 'd'):>7} "
            f"{fmt(r.get('padded_edges'), 'd'):>7} "
            f"{fmt(r.get('neighbor_ms'), '.1f'):>7} {fmt(r.get('compile_s'), '.1f'):>9} "
            f"{fmt(r.get('step_ms'), '.1f'):>9} {fmt(r.get('ratio_vs_jaxmd'), '.2f'):>9} "
            f"{fmt(r.get('gflop_s'), '.1f'):>8} {of_peak:>7} "
            f"{fmt(r.get('peak_rss_mb'), '.0f'):>8}  {r['status']}"
        )
    return "\n".join(rows)


def markdown(results: list[dict], scaling: dict, meta: dict) -> str:
    """The tables of docs/benchmarks.md: one row per case, then the fits (what ``--markdown`` prints)."""
    lines = [
        "| atoms | case | edges | compile (s) | step (ms) | ratio vs jax-md | GFLOP/s | of peak | peak RSS (MB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r.get('atoms') or '-'} | {r['case']} | | | | | | | {r['status']} |")
            continue
        ratio = f"**{r['ratio_vs_jaxmd']:.2f}**" if "ratio_vs_jaxmd" in r else "-"
        of_peak = f"{100 * r['fraction_of_peak']:.1f} %" if "fraction_of_peak" in r else "-"
        lines.append(
            f"| {r.get('atoms') or '-'} | {r['case']} | {fmt(r.get('edges'), 'd')} | {fmt(r.get('compile_s'), '.1f')} "
            f"| {fmt(r.get('step_ms'), '.1f')} | {ratio} | {fmt(r.get('gflop_s'), '.1f')} | {of_peak} "
            f"| {fmt(r.get('peak_rss_mb'), '.0f')} |"
        )
    for case, f in scaling.items():
        lines.append(
            f"\n`{case}` over {', '.join(map(str, f['atoms']))} atoms: peak RSS = {f['rss_intercept_mb']:.0f} MB + "
            f"{f['rss_slope_kb_per_atom']:.1f} KB/atom; step time ∝ atoms^{f['time_exponent']:.3f}."
        )
    load = meta["load_average_before"][0], meta["load_average_after"][0]
    lines.append(
        f"\nLoad average {load[0]:.2f} before, {load[1]:.2f} after the run, on {meta['cpu_count']} CPUs; "
        f"{meta['rounds']} round(s), {meta['repeats']} timed calls per case; XLA_FLAGS `{meta['xla_flags']}`."
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="fcc Cu atom counts (4·n³)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    default_json = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "speed.json")
    parser.add_argument("--json", default=default_json, help="where to write the results")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per case after one warm-up")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit per case, GiB")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the whole case list this many times, interleaved; report the median"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the tables as markdown (docs/benchmarks.md's)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "ATOMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.repeats)
        return
    bad = [n for n in args.sizes if 4 * round((n / 4) ** (1 / 3)) ** 3 != n]
    if bad:
        parser.error(f"sizes {bad} are not fcc supercells 4·n³ (e.g. 108, 256, 500, 864, 2048)")

    import jax

    load_before = os.getloadavg()
    rounds = []
    for r in range(args.rounds):
        tag = f" (round {r + 1}/{args.rounds})" if args.rounds > 1 else ""
        results = []
        if "peak" in args.cases:
            print(f"running peak (matmul){tag} ...", file=sys.stderr, flush=True)
            results.append(run_case("peak", 0, args))
        for n_atoms in args.sizes:
            for case in [c for c in args.cases if c != "peak"]:
                print(f"running {case} on {n_atoms} atoms{tag} ...", file=sys.stderr, flush=True)
                results.append(run_case(case, n_atoms, args))
        rounds.append(results)
    results = merge_rounds(rounds)
    derive(results)
    scaling = fits(results)

    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "dtype": "float32",
        "structure": f"fcc Cu, a = {LATTICE_A} A, rattled {RATTLE_A} A",
        "cutoff_a": CUTOFF_A,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "xla_flags": worker_env()["XLA_FLAGS"],
        "xla_flags_note": "every case but peak runs with these XLA_FLAGS (nnpes.xla_flags); peak with XLA's defaults",
        "timeout_s": args.timeout,
        "memory_limit_gib": args.memory_gb,
        "timed_call": "nnpes: physics.evaluate(compute_stress=False) on a prebuilt padded graph; "
        "jax-md: jit(value_and_grad(energy_fn)) on a prebuilt neighbour list",
        "ratio": "ratio_vs_jaxmd = nnpes step_ms / the jax-md case's step_ms (same structure; "
        "nnpes-peer-l2 vs jaxmd-peer-l2, every other nnpes case vs jaxmd-peer)",
        "flops": "XLA cost analysis of the compiled call (nnpes: of the same function in one pass over the "
        "edges, since a loop body is counted once); fraction_of_peak = GFLOP/s / the peak case's",
        "differences_nnpes_peer_vs_jaxmd_peer": DIFFERENCES,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": results, "fits": scaling}, f, indent=2)
    print(table(results))
    for case, fit in scaling.items():
        print(
            f"{case}: peak RSS = {fit['rss_intercept_mb']:.0f} MB + {fit['rss_slope_kb_per_atom']:.1f} KB/atom "
            f"x atoms; step time ~ atoms^{fit['time_exponent']:.3f} over {fit['atoms']}"
        )
    print(
        f"\nload average before/after: {load_before[0]:.2f} / {meta['load_average_after'][0]:.2f} "
        f"on {os.cpu_count()} CPUs; JSON: {args.json}"
    )
    if args.markdown:
        print("\n" + markdown(results, scaling, meta))


if __name__ == "__main__":
    main()
