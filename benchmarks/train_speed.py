"""Training throughput: one optimizer step of nnpes NequIP vs jax-md's own NequIP, rMD17 aspirin, float32.

Data: ``../shared/data/rmd17/aspirin_train.xyz`` (relative to the repository root; 1000 frames of
21 atoms, energies eV, forces eV/Å). Both cases train on the same --batch-size frames (the first
batch of epoch 0 of nnpes' seeded order), energy + forces loss.

Cases (each in its own subprocess):
    nnpes   the step ``nnpes train`` runs: nnpes.train.session.setup (the trainer's set-up: residual
            graphs, bucket ladder, optimiser from the default optimizer section, i.e. clip 10 →
            Adam, EMA 0.99; make_train_step with the default loss, MSE, weights energy 10 (eV/atom)²,
            forces 1 (eV/Å)²) around nnpes.models.NequIP(num_layers=3, hidden_irreps=
            "32x0e+32x1o+32x1e", num_basis=8, radial_features=(64, 64)), r_c = 5 Å, statistics (E0,
            scale, mean neighbours) fitted on the training frames as ``nnpes.fit`` does.
    jaxmd   a plain optax loop (optax.adam at the same learning rate) around
            jax_md.energy.nequip_neighbor_list with the same hyper-parameters (graph_net_steps 3,
            hidden_irreps "32x0e + 32x1o + 32x1e", sh_irreps "1x0e + 1x1o", num_basis 8, radial
            2×64, r_max 5 Å), space.free() with disable_cell_list=True, one sparse neighbour list per
            frame allocated once on the host (one common capacity); the loss is the same MSE with
            the same weights: jit(value_and_grad) w.r.t. the parameters of vmap over the frames of
            (energy, −∂energy/∂positions), then the optax update.

What is timed, per case: host batching (nnpes: session.batch, i.e. shard_batch padding into the
ladder's bucket; jax-md: neighbour lists of the batch's frames), reported apart and not part of the
step; the compile time of the jitted step (lower + compile); the steady-state time of the compiled
step (median of --steps calls after --warmup calls, each ``jax.block_until_ready`` on the new
state) on the same pre-built batch already on the device, the state carried from step to step.
frames/s = batch size / median step time; the ratio is nnpes frames/s / jax-md frames/s (> 1:
nnpes faster).

Every case runs in its own subprocess under a wall-clock timeout and an address-space limit
(resource.setrlimit), so an out-of-memory or failing case is recorded as "oom", "timeout" or
"error: ..." and the run goes on. Results: a table on stdout and JSON (--json).

Usage:
    python benchmarks/train_speed.py --steps 20 --json benchmarks/results/train_speed.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

from _harness import emit, fmt, median_ms, peak_rss_mb, run_limited, worker_command, worker_env

CASES = ("nnpes", "jaxmd")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "..", "shared", "data")
DATA = os.path.join(DATA_DIR, "rmd17", "aspirin_train.xyz")
CUTOFF_A = 5.0
PEER_IRREPS = "32x0e+32x1o+32x1e"
PEER_SH = "1x0e + 1x1o"
SEED = 0

DIFFERENCES = [
    "optimiser: nnpes clip_by_global_norm(10) -> scale_by_adam, step scaled by a learning rate passed in as an "
    "argument, plus an EMA of the parameters (the trainer's defaults); jax-md optax.adam(lr) alone "
    "(cheap elementwise work either way)",
    "learning rate: both the default optimizer.learning_rate, fixed (the trainer's warm-up/decay schedule is "
    "host arithmetic, not part of the step)",
    "energy labels: nnpes E - sum E0 (nnpes' fitted E0: with one composition, the mean energy per atom), "
    "output scaled by the force RMS; jax-md E - N x the mean energy per atom (host, float64), output scaled "
    "by the force RMS (the same numbers, set by hand)",
    "messages: nnpes divides by sqrt(avg_num_neighbors), jax-md by n_neighbors (numerics only, same cost)",
    "radial basis: nnpes Bessel x polynomial envelope (p=6); jax-md Bessel with trainable frequencies x "
    "its multiplicative isotropic cutoff (inner 4.5 A, outer 5 A)",
    "tensor product: nnpes contracts Y_l with the Clebsch-Gordan tensor, then the channels, one radial "
    "weight per output irrep; jax-md legacy FunctionalTensorProduct 'uvu', one radial weight per path",
    "edges: nnpes may sum messages over edge chunks (scan, recomputed in the backward pass, "
    "NequIP.edge_memory_mb); jax-md all edges at once",
    "last layer: nnpes computes only the scalars the readout reads; jax-md computes all hidden irreps",
    "readout: nnpes 16x0e -> SiLU -> 0e; jax-md 16x0e -> 0e (no non-linearity)",
    "batching: nnpes one padded graph of the whole batch (nodes and edges padded to a bucket, <= 25 %, "
    "plus a padding graph); jax-md vmap over frames, each with its own neighbour list of one common "
    "capacity (the largest frame's allocate(), 1.25 x its occupancy) and a padding node per frame",
    "forces: nnpes -dE/d(edge vectors) scattered onto atoms (physics.energy_forces_stress); jax-md "
    "-dE/d(positions) per frame; both differentiated again w.r.t. the parameters",
    "loss: same form (weights 10 on (energy/atom)^2, 1 on force components^2); nnpes masks padding and "
    "normalises by label counts, jax-md plain means (no padding frames)",
    "metrics: the nnpes step also returns the gradient norm and per-label MSEs; jax-md only the loss",
]


# -- worker: one case in its own process -------------------------------------------------------
def load_frames():
    from nnpes.data.io import read_frames

    return read_frames(DATA, require=("energy", "forces"))


def run_nnpes(batch_size: int, steps: int, warmup: int) -> dict:
    import jax
    import numpy as np

    from nnpes.models import NequIP
    from nnpes.train.loop import as_config
    from nnpes.train.session import batch as session_batch
    from nnpes.train.session import setup
    from nnpes.train.setup import potential_for_model

    start = time.perf_counter()
    frames = load_frames()
    read_s = time.perf_counter() - start
    model = NequIP(num_layers=3, hidden_irreps=PEER_IRREPS, num_basis=8, radial_features=(64, 64))
    with tempfile.TemporaryDirectory() as workdir:
        cfg = as_config(
            {"seed": SEED, "dtype": "float32", "training": {"batch_size": batch_size, "progress": False}}, workdir
        )
        start = time.perf_counter()
        potential, report = potential_for_model(model, CUTOFF_A, frames, seed=cfg.seed)
        session, state = setup(cfg, workdir, (potential, report, frames, [], []), [], time.perf_counter())
        setup_s = time.perf_counter() - start

        host_batch = session_batch(session, 0, 0)  # what the loop hands the step (numpy arrays)
        batch_ms, _ = median_ms(lambda: session_batch(session, 0, 0), 5)
        batch = jax.device_put(host_batch)
        lr = np.asarray(cfg.optimizer.learning_rate, np.float32)
        state = jax.device_put(state)

        start = time.perf_counter()
        compiled = session.step_fn.lower(state, batch, lr).compile()
        compile_s = time.perf_counter() - start

        carry = {"state": state}

        def step():
            carry["state"], metrics = jax.block_until_ready(compiled(carry["state"], batch, lr))
            return metrics

        first = step()
        for _ in range(max(warmup - 1, 0)):
            step()
        step_ms, times = median_ms(step, steps)
        last = step()
    return {
        "frames": batch_size,
        "atoms": int(np.asarray(host_batch.n_node[0][:-1]).sum()),
        "edges": int(np.asarray(host_batch.n_edge[0][:-1]).sum()),
        "padded_nodes": int(host_batch.nodes["positions"].shape[1]),
        "padded_edges": int(host_batch.senders.shape[1]),
        "read_s": read_s,
        "setup_s": setup_s,
        "host_batch_ms": batch_ms,
        "compile_s": compile_s,
        "step_ms": step_ms,
        "step_ms_all": times,
        "frames_per_s": batch_size / (step_ms / 1e3),
        "loss_first": float(first["loss"]),
        "loss_last": float(last["loss"]),
        "learning_rate": float(lr),
        "statistics": report,
    }


def run_jaxmd(batch_size: int, steps: int, warmup: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax_md import energy, space
    from jax_md._nn import nequip

    from nnpes.train.batches import epoch_batches
    from nnpes.train.config import LossConfig, OptimizerConfig

    start = time.perf_counter()
    frames = load_frames()
    read_s = time.perf_counter() - start
    idx = epoch_batches(len(frames), batch_size, SEED, 0)[0]  # the same frames as the nnpes case
    batch = [frames[i] for i in idx]
    numbers = sorted({int(z) for f in frames for z in f.numbers})
    if any(not np.array_equal(f.numbers, batch[0].numbers) for f in batch):
        raise SystemExit("the batch's frames differ in their atoms; this case needs one species list")
    n = len(batch[0].numbers)

    # labels: energy minus N x the mean energy per atom of the training frames (host, float64)
    e_per_atom = float(np.mean([f.energy / len(f.numbers) for f in frames]))
    force_rms = float(np.sqrt(np.mean(np.concatenate([np.asarray(f.forces).ravel() ** 2 for f in frames]))))
    positions = jnp.asarray(np.stack([f.positions for f in batch]), jnp.float32)
    e_ref = jnp.asarray([f.energy - n * e_per_atom for f in batch], jnp.float32)
    f_ref = jnp.asarray(np.stack([f.forces for f in batch]), jnp.float32)
    species = jax.nn.one_hot(jnp.asarray([numbers.index(int(z)) for z in batch[0].numbers]), len(numbers))

    displacement, _ = space.free()
    box = 100.0  # Å; unused by the all-pairs (disable_cell_list) list in free space

    cfg = nequip.default_config()
    cfg.graph_net_steps = 3
    cfg.hidden_irreps = " + ".join(PEER_IRREPS.split("+"))
    cfg.sh_irreps = PEER_SH
    cfg.num_basis = 8
    cfg.r_max = CUTOFF_A
    cfg.radial_net_n_hidden = 64
    cfg.radial_net_n_layers = 2
    cfg.n_elements = len(numbers)
    cfg.shift, cfg.scale = 0.0, force_rms

    def build(cfg):
        return energy.nequip_neighbor_list(displacement, box, cfg, atoms=species, disable_cell_list=True)

    neighbor_fn, _, _ = build(cfg)

    def neighbour_lists():
        allocated = [neighbor_fn.allocate(r) for r in positions]
        template = max(allocated, key=lambda nb: nb.idx.shape[1])  # one common capacity
        lists = [neighbor_fn.update(r, template) for r in positions]
        if any(bool(nb.did_buffer_overflow) for nb in lists):
            raise SystemExit("jax-md neighbour list overflowed at the common capacity")
        idx = jnp.stack([nb.idx for nb in lists])
        return jax.block_until_ready(template), jax.block_until_ready(idx)

    neighbour_lists()
    neighbor_ms, _ = median_ms(neighbour_lists, 3)
    template, nbr_idx = neighbour_lists()
    edges = int(jnp.sum(nbr_idx[:, 0] < n))
    cfg.n_neighbors = edges / (batch_size * n)
    _, init_fn, energy_fn = build(cfg)
    params = init_fn(jax.random.PRNGKey(SEED), positions[0], template)

    loss_cfg, opt_cfg = LossConfig(), OptimizerConfig()
    w_e, w_f = loss_cfg.energy_weight, loss_cfg.forces_weight
    optimizer = optax.adam(opt_cfg.learning_rate)
    opt_state = optimizer.init(params)

    def loss_fn(params, nbrs, idx, positions, e_ref, f_ref):
        def frame(r, i):
            e, grad = jax.value_and_grad(lambda r: energy_fn(params, r, nbrs.set(idx=i)))(r)
            return e, -grad

        e, f = jax.vmap(frame)(positions, idx)
        return w_e * jnp.mean(((e - e_ref) / n) ** 2) + w_f * jnp.mean((f - f_ref) ** 2)

    @jax.jit
    def train_step(params, opt_state, nbrs, idx, positions, e_ref, f_ref):
        loss, grads = jax.value_and_grad(loss_fn)(params, nbrs, idx, positions, e_ref, f_ref)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    data = (template, nbr_idx, positions, e_ref, f_ref)
    start = time.perf_counter()
    compiled = train_step.lower(params, opt_state, *data).compile()
    compile_s = time.perf_counter() - start

    carry = {"params": params, "opt_state": opt_state}

    def step():
        carry["params"], carry["opt_state"], loss = jax.block_until_ready(
            compiled(carry["params"], carry["opt_state"], *data)
        )
        return loss

    first = step()
    for _ in range(max(warmup - 1, 0)):
        step()
    step_ms, times = median_ms(step, steps)
    last = step()
    return {
        "frames": batch_size,
        "atoms": batch_size * n,
        "edges": edges,
        "padded_nodes": batch_size * (n + 1),
        "padded_edges": int(nbr_idx.shape[0] * nbr_idx.shape[2]),
        "read_s": read_s,
        "host_batch_ms": neighbor_ms,
        "compile_s": compile_s,
        "step_ms": step_ms,
        "step_ms_all": times,
        "frames_per_s": batch_size / (step_ms / 1e3),
        "loss_first": float(first),
        "loss_last": float(last),
        "learning_rate": opt_cfg.learning_rate,
    }


def worker(case: str, batch_size: int, steps: int, warmup: int) -> None:
    run = run_nnpes if case == "nnpes" else run_jaxmd
    result = run(batch_size, steps, warmup)
    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)


# -- driver ------------------------------------------------------------------------------------
def run_case(case: str, args) -> dict:
    cmd = worker_command(
        __file__,
        case,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    )
    return {"case": case, **run_limited(cmd, args.timeout, args.memory_gb)}


def derive(results: list[dict]) -> None:
    """Add ratio_vs_jaxmd = nnpes frames/s / jax-md frames/s to the nnpes row."""
    peer = next((r for r in results if r["case"] == "jaxmd" and r["status"] == "ok"), None)
    for r in results:
        if r["case"] == "nnpes" and r["status"] == "ok" and peer:
            r["ratio_vs_jaxmd"] = r["frames_per_s"] / peer["frames_per_s"]


def table(results: list[dict]) -> str:
    head = (
        f"{'case':<6} {'frames':>6} {'atoms':>6} {'edges':>6} {'padded':>6} {'host ms':>8} {'compile s':>9} "
        f"{'step ms':>8} {'frames/s':>9} {'vs jax-md':>9} {'peak MB':>8}  status"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(
            f"{r['case']:<6} {fmt(r.get('frames'), 'd'):>6} {fmt(r.get('atoms'), 'd'):>6} "
            f"{fmt(r.get('edges'), 'd'):>6} {fmt(r.get('padded_edges'), 'd'):>6} "
            f"{fmt(r.get('host_batch_ms'), '.1f'):>8} {fmt(r.get('compile_s'), '.1f'):>9} "
            f"{fmt(r.get('step_ms'), '.1f'):>8} {fmt(r.get('frames_per_s'), '.1f'):>9} "
            f"{fmt(r.get('ratio_vs_jaxmd'), '.2f'):>9} {fmt(r.get('peak_rss_mb'), '.0f'):>8}  {r['status']}"
        )
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    default_json = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_speed.json")
    parser.add_argument("--json", default=default_json, help="where to write the results")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per step")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit per case, GiB")
    parser.add_argument("--worker", nargs=1, metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not os.path.isfile(DATA):
        where = os.path.normpath(DATA_DIR if not os.path.isdir(DATA_DIR) else DATA)
        raise SystemExit(f"train_speed: {where} not found (rMD17 aspirin is needed); nothing run")
    if args.worker:
        worker(args.worker[0], args.batch_size, args.steps, args.warmup)
        return
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1")

    import jax

    load_before = os.getloadavg()
    results = []
    for case in args.cases:
        print(f"running {case} (batch {args.batch_size}, {args.steps} steps) ...", file=sys.stderr, flush=True)
        results.append(run_case(case, args))
    derive(results)

    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_platforms": os.environ.get("JAX_PLATFORMS", "cpu"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "dtype": "float32",
        "data": os.path.normpath(DATA),
        "cutoff_a": CUTOFF_A,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "timeout_s": args.timeout,
        "memory_limit_gib": args.memory_gb,
        "xla_flags": worker_env()["XLA_FLAGS"],
        "timed_call": "one compiled optimizer step on a pre-built device batch: nnpes session.step_fn "
        "(make_train_step) on session.batch(0, 0); jax-md jit(value_and_grad(loss) + optax.adam update) on "
        "pre-allocated neighbour lists; host_batch_ms is the host batching, not part of the step",
        "ratio": "ratio_vs_jaxmd = nnpes frames_per_s / jax-md frames_per_s (same frames, same batch size)",
        "differences_nnpes_vs_jaxmd": DIFFERENCES,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    print(table(results))
    print(
        f"\nload average before/after: {load_before[0]:.2f} / {meta['load_average_after'][0]:.2f} "
        f"on {os.cpu_count()} CPUs; JSON: {args.json}"
    )


if __name__ == "__main__":
    main()
