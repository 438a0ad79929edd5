"""Spatial domain decomposition: ghosts, bytes exchanged, compute vs exchange time, NVE drift,
and a cost model for GPUs.

For liquid-water boxes of ~8 000 and ~64 000 atoms it decomposes over 1, 2, 4 and 8 forced host
devices (each case a worker process with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``)
and reports, per force evaluation (energy + forces, float32, a small 2-layer NequIP):

* ghost fraction (ghost atoms evaluated / atoms), for the halo nnpes uses (layers × r_c + skin)
  and for the per-layer alternative (r_c + skin, features exchanged after each layer) counted
  on the same decomposition;
* bytes each device sends per evaluation (positions out, their gradients back) to other
  devices: the ghosts' payload and the padded messages on the wire;
* time: the whole evaluation and the ghost exchange alone (its ``ppermute``s, forward and
  transpose), the rest being compute. On forced host devices sharing 2 cores, exchange is a
  memory copy and N devices share the cores: times show overhead, not speed-up.

Then a float64 NVE run of 1 536 atoms on 4 devices for 1 000 steps (and the same on one device
with jax-md) gives the energy drift, and a cost model on paper predicts weak-scaling efficiency
for 8 GPUs (NVLink) and 64 GPUs (8 hosts, InfiniBand) at 10⁶–10⁷ atoms from the measured ghost
fractions' geometry, the bytes per ghost and stated link speeds and per-atom GPU cost.

    python benchmarks/distributed.py [--sizes 14 28] [--devices 1 2 4 8] [--drift-steps 1000]
                                     [--json benchmarks/results/distributed.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import emit, fmt, median_ms, run_limited, worker_command, worker_env  # noqa: E402

CUTOFF, SKIN, LAYERS = 4.0, 0.5, 2
WATER_DENSITY = 0.1003  # atoms/Å³ of liquid water at 1 g/cm³


def model(elements=(1, 8), channels: int = 8, cutoff: float = CUTOFF):
    """A small random 2-layer NequIP (l ≤ 1)."""
    import nnpes

    net = nnpes.models.NequIP(
        channels=channels, l_max=1, num_layers=LAYERS, num_basis=8, radial_features=(16,), readout_features=8
    )
    return nnpes.Potential.create(net, elements, cutoff, seed=0, scale=0.05, avg_num_neighbors=20.0)


# --- worker: one (devices, size) case ------------------------------------------------------------


def scaling_worker(n_side: int, devices: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nnpes.distributed import decompose
    from nnpes.distributed import halo as local
    from nnpes.distributed.domains import _squeeze
    from nnpes.distributed.plan import AXES
    from nnpes.testing.systems import water_box

    atoms, pot = water_box(n_side), model()
    domains, state, halo = decompose(pot, atoms, devices, skin_a=SKIN)
    plan = domains.plan
    cell = jnp.asarray(domains.cell, jnp.float32)
    efs = domains.energy_forces_stress_fn()
    forces = jax.jit(lambda p, s, h: jax.grad(domains.energy, argnums=1)(p, s["positions"], s["valid"], h, cell))

    def exchange_sum(positions, halo, weights):  # the exchange alone, differentiated like the energy
        def per_device(positions, halo, weights):
            positions, halo = _squeeze((positions, halo))
            return jax.lax.psum(jnp.sum(local.exchange(positions, cell, halo, plan) * weights), AXES)

        return jax.shard_map(
            per_device,
            mesh=domains.mesh,
            in_specs=(domains_spec(),) * 2 + (jax.sharding.PartitionSpec(),),
            out_specs=jax.sharding.PartitionSpec(),
            check_vma=False,
        )(positions, halo, weights)

    weights = jnp.ones((plan.local, 3), jnp.float32)
    exchange = jax.jit(jax.grad(exchange_sum))
    jax.block_until_ready(efs(domains.potential, state, halo, cell))
    jax.block_until_ready(forces(domains.potential, state, halo))
    jax.block_until_ready(exchange(state["positions"], halo, weights))
    total_ms, _ = median_ms(lambda: jax.block_until_ready(forces(domains.potential, state, halo)), repeats)
    exchange_ms, _ = median_ms(lambda: jax.block_until_ready(exchange(state["positions"], halo, weights)), repeats)
    valid = np.asarray(jax.device_get(halo.valid)).reshape(plan.devices, -1)
    ghosts = valid[:, plan.owned :].sum(axis=1)
    sent = [(a, hop) for a, hop in plan.sends if plan.grid[a] > 1]  # messages to other devices
    starts = plan.owned + np.cumsum([0] + [plan.ghosts[a] for a, _ in plan.sends])
    remote = sum(  # ghosts that came from other devices (not periodic images of this one's atoms)
        valid[:, starts[m] : starts[m + 1]].sum(axis=1) for m, (a, _) in enumerate(plan.sends) if plan.grid[a] > 1
    )
    wire = sum(plan.ghosts[a] for a, _ in sent) * 3 * 4 * 2  # float32 positions out, gradients back
    per_layer = per_layer_ghosts(atoms, plan)
    return {
        "atoms": len(atoms), "devices": devices, "grid": list(plan.grid), "hops": list(plan.hops),
        "halo_a": plan.halo, "ghost_fraction": float(ghosts.sum() / len(atoms)),
        "ghosts_per_device_max": int(ghosts.max()),
        "owned_per_device_max": int(valid[:, : plan.owned].sum(axis=1).max()),
        "ghost_fraction_per_layer_halo": per_layer, "messages_to_other_devices": 2 * len(sent),
        "payload_bytes_per_device": int(np.max(remote)) * 24 if sent else 0, "wire_bytes_per_device": wire,
        "step_ms": total_ms, "exchange_ms": exchange_ms, "compute_ms": total_ms - exchange_ms,
        "local_atoms_max": int(valid.sum(axis=1).max()),
    }  # fmt: skip


def domains_spec():
    from jax.sharding import PartitionSpec

    from nnpes.distributed.plan import AXES

    return PartitionSpec(*AXES)


def per_layer_ghosts(atoms, plan) -> float:
    """Ghost fraction of the same decomposition with a halo of one cutoff + skin (features
    exchanged after each layer), counted on the host: atoms within the halo of each domain,
    periodic images included (fractional slabs, exact for this cubic box)."""
    import numpy as np

    u = atoms.get_scaled_positions(wrap=True)
    halo = (plan.cutoff + plan.skin) / np.asarray(plan.widths)
    grid = np.asarray(plan.grid)
    total = 0
    for domain in np.ndindex(*plan.grid):
        lo, hi = np.asarray(domain) / grid - halo, (np.asarray(domain) + 1) / grid + halo
        inside = np.ones(len(u), int)
        for a in range(3):  # images k along a with lo ≤ u + k < hi
            k = np.arange(math.floor(lo[a]) - 1, math.ceil(hi[a]) + 1)
            inside = inside * ((u[:, a, None] + k >= lo[a]) & (u[:, a, None] + k < hi[a])).sum(axis=1)
        total += int(inside.sum())
    return float(total / len(u) - 1.0)


def drift_worker(devices: int, steps: int) -> dict:
    """1 536-atom Cu/O NVE in float64, 1 fs steps, on ``devices`` domains and on one jax-md device."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import ase.build
    import numpy as np

    import nnpes
    from nnpes.distributed import md as dmd
    from nnpes.md.config import MDConfig

    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat((8, 8, 6))
    atoms.numbers[::7] = 8
    atoms.rattle(0.05, seed=1)
    atoms.set_momenta(
        np.sqrt(atoms.get_masses()[:, None] * 600 * ase.units.kB)
        * np.random.default_rng(0).standard_normal((len(atoms), 3))
    )
    from nnpes.md.units import FS

    dt_fs = float(np.float32(FS)) / FS  # ≈ 1 fs that float32 holds exactly: jax-md rounds dt to float32
    options = MDConfig(ensemble="nve", dt_fs=dt_fs, dtype="float64", every=50)
    pot = model((8, 29), channels=4, cutoff=3.0).astype("float64")
    got = dmd.run(dmd.simulation(pot, atoms, options, devices=devices), steps)
    ref = nnpes.md.run_md(pot, atoms, steps, options, backend="jax-md")
    frac = (got.positions[-1] - ref.positions[-1]) @ np.linalg.inv(atoms.cell[:])
    return {
        "atoms": len(atoms), "devices": devices, "steps": steps, "dt_fs": dt_fs,
        "drift_mev_per_atom_per_ps": got.drift_mev_per_atom_per_ps(),
        "drift_one_device_mev_per_atom_per_ps": ref.drift_mev_per_atom_per_ps(),
        "etot_std_mev_per_atom": float(1e3 * np.std(got.etot) / len(atoms)),
        "final_position_difference_a": float(np.max(np.abs((frac - np.round(frac)) @ atoms.cell[:]))),
        "steps_per_s": got.steps_per_s, "steps_per_s_one_device": ref.steps_per_s,
        "rebuilds": got.state["rebuilds"], "migrated": got.state["migrated"],
    }  # fmt: skip


# --- the cost model on paper ---------------------------------------------------------------------

# Stated assumptions (not measured here): link speeds per GPU and direction, per-message latency.
LINKS = {"8 GPUs, NVLink 4 (one host)": (450e9, 10e-6), "64 GPUs, 8 hosts, InfiniBand NDR": (50e9, 20e-6)}
GPU_US_PER_ATOM = (0.2, 1.0)  # force evaluation cost per evaluated atom on one GPU, µs: small … production model
FEATURE_BYTES = 32 * 4 * 4  # per-layer alternative: 32 channels of l ≤ 1 (4 components), float32, per ghost and layer


def cost_model(halo_full: float, halo_layer: float, layers: int, density: float = WATER_DENSITY) -> list[dict]:
    """Weak-scaling efficiency T(1 GPU, n atoms, no ghosts) / T(P GPUs, n atoms each) of a 3-D
    decomposition into cubic domains, for both halos:

    g = ((L + 2h)³ − L³) / L³ ghosts per owned atom, L = (n/ρ)^(1/3) the domain side.
    Full halo (nnpes): every ghost is evaluated, T_P = c·n·(1 + g) + t_exchange with 24 B per
    ghost (positions out, gradients back) in one round of 3 stages × 2 (forward, transpose).
    Per-layer halo: ghosts' features arrive instead of being computed, T_P = c·n + t_exchange
    with, on top of the positions, FEATURE_BYTES per ghost per layer each way, 1 + layers rounds.
    t_exchange = rounds × 6 × latency + bytes / bandwidth (no overlap of compute and exchange).
    """
    rows = []
    for link, (bandwidth, latency) in LINKS.items():
        gpus = 8 if link.startswith("8 ") else 64
        for total in (1e6, 1e7):
            n = total / gpus
            side = (n / density) ** (1 / 3)
            for c_us in GPU_US_PER_ATOM:
                row = {
                    "link": link,
                    "gpus": gpus,
                    "atoms": int(total),
                    "atoms_per_gpu": int(n),
                    "domain_side_a": side,
                    "us_per_atom": c_us,
                }
                for name, h, payload, rounds, evaluated in (
                    ("full", halo_full, 24, 1, 1.0),
                    ("per_layer", halo_layer, 24 + 2 * FEATURE_BYTES * layers, 1 + layers, 0.0),
                ):
                    g = ((side + 2 * h) ** 3 - side**3) / side**3
                    t_exchange = rounds * 6 * latency + g * n * payload / bandwidth
                    t_compute = c_us * 1e-6 * n * (1 + evaluated * g)
                    row[f"{name}_ghost_fraction"] = g
                    row[f"{name}_exchange_ms"] = 1e3 * t_exchange
                    row[f"{name}_efficiency"] = c_us * 1e-6 * n / (t_compute + t_exchange)
                rows.append(row)
    return rows


# --- driver --------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[14, 28], help="water boxes of n³ molecules (3n³ atoms)")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--drift-steps", type=int, default=1000)
    p.add_argument("--memory-gb", type=float, default=20.0)
    p.add_argument("--json", default="benchmarks/results/distributed.json")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, *rest = args.worker
        emit(
            scaling_worker(int(rest[0]), int(rest[1]), int(rest[2]))
            if kind == "scaling"
            else drift_worker(int(rest[0]), int(rest[1]))
        )
        return
    results = {
        "model": {"family": "nequip", "channels": 8, "l_max": 1, "layers": LAYERS, "cutoff_a": CUTOFF, "skin_a": SKIN}
    }
    scaling = []
    for n_side in args.sizes:
        for devices in args.devices:
            env = worker_env()
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
            cmd = worker_command(__file__, "scaling", str(n_side), str(devices), str(args.repeats))
            row = {"n_side": n_side, "devices": devices, **run_limited(cmd, 3600, args.memory_gb, env)}
            print(json.dumps(row), flush=True)
            scaling.append(row)
    results["scaling"] = scaling
    env = worker_env()
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env.pop("JAX_ENABLE_X64", None)
    results["drift"] = run_limited(
        worker_command(__file__, "drift", "4", str(args.drift_steps)), 7200, args.memory_gb, env
    )
    print(json.dumps(results["drift"]), flush=True)
    results["cost_model"] = cost_model(LAYERS * CUTOFF + SKIN, CUTOFF + SKIN, LAYERS)
    results["cost_model_production"] = cost_model(2 * 5.0 + 1.0, 5.0 + 1.0, 2)
    print_tables(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


def print_tables(results: dict) -> None:
    print(
        "\n| atoms | devices | grid | ghost fraction (L·r_c halo) | ghost fraction (r_c halo) "
        "| bytes/device/eval (payload, wire) | step ms | exchange ms | compute ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["scaling"]:
        if r.get("status") != "ok":
            print(f"| {3 * r['n_side'] ** 3} | {r['devices']} | - | {r.get('status')} |")
            continue
        print(
            f"| {r['atoms']} | {r['devices']} | {'×'.join(map(str, r['grid']))} | {fmt(r['ghost_fraction'], '.2f')} | "
            f"{fmt(r['ghost_fraction_per_layer_halo'], '.2f')} | {r['payload_bytes_per_device'] / 1e3:.0f} kB, "
            f"{r['wire_bytes_per_device'] / 1e3:.0f} kB | "
            f"{fmt(r['step_ms'], '.0f')} | {fmt(r['exchange_ms'], '.1f')} | {fmt(r['compute_ms'], '.0f')} |"
        )
    d = results["drift"]
    if d.get("status") == "ok":
        print(
            f"\nNVE drift, {d['atoms']} atoms, {d['steps']} steps, float64: {d['devices']} devices "
            f"{d['drift_mev_per_atom_per_ps']:.3g} meV/atom/ps, one device (jax-md) "
            f"{d['drift_one_device_mev_per_atom_per_ps']:.3g}; "
            f"final positions differ by {d['final_position_difference_a']:.2g} Å"
        )
    for key in ("cost_model", "cost_model_production"):
        print(
            f"\n{key}: | link | atoms | atoms/GPU | µs/atom | ghost fraction L·r_c / r_c | efficiency L·r_c halo "
            "| efficiency r_c halo + features |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in results[key]:
            print(
                f"| {r['link']} | {r['atoms']:.0e} | {r['atoms_per_gpu']} | {r['us_per_atom']} | "
                f"{r['full_ghost_fraction']:.2f} / {r['per_layer_ghost_fraction']:.2f} | "
                f"{100 * r['full_efficiency']:.0f}% | {100 * r['per_layer_efficiency']:.0f}% |"
            )


if __name__ == "__main__":
    main()
