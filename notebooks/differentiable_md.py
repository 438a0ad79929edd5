"""Differentiable molecular dynamics with nnpes and jax-md (a script; runs in about a minute on a CPU).

The whole trajectory is a JAX function of the model parameters, so the gradient of a
trajectory observable, here the mean-square displacement (MSD) of ethanol after 100 NVE steps,
with respect to every weight of the network comes from one reverse-mode pass through the
integrator. We check it against central finite differences along a random direction in
parameter space.

    python notebooks/differentiable_md.py
"""

# %% set-up: float64, a small random NequIP, ethanol in free space
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # before any array: finite differences need float64

import ase.io  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax_md import simulate, space  # noqa: E402

import nnpes  # noqa: E402
from nnpes.md import energy_neighbor_list  # noqa: E402
from nnpes.md.units import FS, KB  # noqa: E402
from nnpes.md.velocities import initial_momenta  # noqa: E402

here = Path(__file__).resolve().parent
atoms = ase.io.read(here.parents[1] / "shared" / "data" / "ci" / "rmd17_ethanol_train.xyz", 0)
model = nnpes.models.NequIP(channels=8, l_max=1, num_layers=2, num_basis=6, radial_features=(16,))
potential = nnpes.Potential.create(model, [1, 6, 8], cutoff=4.0, seed=0, scale=0.1, avg_num_neighbors=8.0)
potential = potential.astype("float64")

# %% the jax-md pieces: energy with the parameters as an argument, NVE integrator
displacement, shift = space.free()
neighbor_fn, energy_fn = energy_neighbor_list(potential, displacement, None, atoms.numbers)
R0 = jnp.asarray(atoms.positions)
nbrs = neighbor_fn.allocate(R0)  # a molecule: every pair is listed and stays listed (no rebuilds)
masses = jnp.asarray(atoms.get_masses())
p0 = jnp.asarray(initial_momenta(atoms, 300.0, seed=0))  # Maxwell–Boltzmann at 300 K, amu·Å/unit
init_fn, step_fn = simulate.nve(energy_fn, shift, dt=0.5 * FS)  # dt: 0.5 fs in jax-md's ≈10.18 fs unit
n_steps = 100


def msd_after(params):
    """Mean-square displacement (Å²) after n_steps of NVE, as a function of the model weights."""
    state = init_fn(jax.random.PRNGKey(0), R0, 300 * KB, mass=masses, momenta=p0, neighbor=nbrs, params=params)
    state = jax.lax.fori_loop(0, n_steps, lambda i, s: step_fn(s, neighbor=nbrs, params=params), state)
    return jnp.mean(jnp.sum((state.position - R0) ** 2, axis=-1))


# %% value and gradient by reverse mode through 100 integrator steps
t0 = time.perf_counter()
value, grad = jax.jit(jax.value_and_grad(msd_after))(potential.params)
print(f"MSD after {n_steps} steps: {float(value):.6f} Å²  ({time.perf_counter() - t0:.1f} s incl. compilation)")

# %% check against central finite differences along a random direction
leaves, treedef = jax.tree.flatten(potential.params)
keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
direction = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
norm = jnp.sqrt(sum(jnp.vdot(d, d) for d in jax.tree.leaves(direction)))
direction = jax.tree.map(lambda d: d / norm, direction)
analytic = float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction))))

msd = jax.jit(msd_after)
h = 1e-4
shifted = lambda s: jax.tree.map(lambda p, d: p + s * d, potential.params, direction)  # noqa: E731
fd = (float(msd(shifted(h))) - float(msd(shifted(-h)))) / (2 * h)
print(
    f"d MSD / d params · u:  reverse mode {analytic:+.8e}   finite differences {fd:+.8e}   "
    f"relative difference {abs(analytic - fd) / abs(fd):.1e}"
)
assert abs(analytic - fd) < 1e-5 * abs(fd), "gradient through the trajectory disagrees with finite differences"

# %% which weights matter most for how far the atoms travel?
per_leaf = {
    jax.tree_util.keystr(path): float(jnp.linalg.norm(g)) for path, g in jax.tree_util.tree_flatten_with_path(grad)[0]
}
for name, size in sorted(per_leaf.items(), key=lambda kv: -kv[1])[:5]:
    print(f"  |∂MSD/∂w| {size:10.3e}  {name}")
print("ok" if np.isfinite(analytic) else "not finite")
