"""A user's own flax module, defined in the user's script (not in nnpes/), is first-class: it is
trained from Python with the same loop as ``nnpes train``, saved, and then loaded in fresh
processes by ``nnpes evaluate`` and ``nnpes md`` (the saved model records the class's import
path and source file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import resources

import pytest

ETHANOL_TEST = str(resources.files("nnpes.data") / "files" / "ethanol_test.xyz")

USER_SCRIPT = textwrap.dedent('''
    """A user's training script: a pair model written from scratch, trained with nnpes.train.fit."""
    import sys
    from importlib import resources

    import flax.linen as nn
    import jax
    import jax.numpy as jnp


    class PairMLP(nn.Module):
        """ε_i = Σ_j MLP(s_i, s_j, r_ij) (1 − r_ij/r_c)² / n̄: pairwise, smooth at r_c."""

        hidden: int = 8
        cutoff: float = 4.0
        num_species: int = 1
        avg_num_neighbors: float = 1.0

        @nn.compact
        def __call__(self, vectors, species, senders, receivers, edge_mask):
            r = jnp.linalg.norm(vectors, axis=-1)
            pair_species = jnp.concatenate([jax.nn.one_hot(species[senders], self.num_species, dtype=r.dtype),
                                            jax.nn.one_hot(species[receivers], self.num_species, dtype=r.dtype)], 1)
            x = jnp.concatenate([pair_species, jnp.exp(-r)[:, None]], axis=1)
            h = nn.Dense(1)(jax.nn.silu(nn.Dense(self.hidden)(x)))[:, 0]
            pair = jnp.where(edge_mask, h * (1.0 - r / self.cutoff) ** 2, 0.0)
            return jnp.zeros(species.shape[0], r.dtype).at[receivers].add(pair) / self.avg_num_neighbors


    if __name__ == "__main__":
        from nnpes.data.io import read_frames
        from nnpes.train import fit

        frames = read_frames(str(resources.files("nnpes.data") / "files" / "ethanol_train.xyz"), index=":24")
        result = fit(PairMLP(hidden=8), frames[:20], frames[20:], workdir=sys.argv[1],
                     config={"seed": 3, "training": {"max_steps": 30, "batch_size": 4, "progress": False}})
        print("trained", result.step)
''')


def _run(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_user_script_model_trains_saves_evaluates_and_runs_md_in_fresh_processes(tmp_path):
    scripts = tmp_path / "my_project"
    scripts.mkdir()
    (scripts / "train_pair.py").write_text(USER_SCRIPT)
    run_dir = tmp_path / "run"
    nnpes_cli = [sys.executable, "-m", "nnpes"]

    trained = _run(sys.executable, str(scripts / "train_pair.py"), str(run_dir), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "trained 30" in trained.stdout
    meta = json.loads((run_dir / "model" / "potential.json").read_text())
    assert meta["family"] is None and meta["model_class"] == "__main__:PairMLP"
    assert meta["model_file"] == str(scripts / "train_pair.py") and meta["hyperparameters"]["hidden"] == 8

    # fresh processes, started elsewhere, with the script's folder not on sys.path
    evaluated = _run(
        *nnpes_cli, "evaluate", str(run_dir / "model"), ETHANOL_TEST, "--json", str(tmp_path / "e.json"), cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "e.json").read_text())["files"][0]
    assert metrics["frames"] == 100 and metrics["forces_mae_mev_per_a"] > 0
    md = _run(
        *nnpes_cli,
        "md",
        str(run_dir / "model"),
        ETHANOL_TEST,
        "--ensemble",
        "nve",
        "--dt",
        "0.25",
        "--steps",
        "20",
        "--every",
        "5",
        "--json",
        str(tmp_path / "md.json"),
        cwd=tmp_path,
    )
    assert md.returncode == 0, md.stderr[-3000:]
    summary = json.loads((tmp_path / "md.json").read_text())
    assert summary["steps"] == 20 and summary["atoms"] == 9 and summary["backend"] == "jax-md"


def test_model_file_that_is_gone_is_a_one_line_error(tmp_path):
    import nnpes
    from nnpes.errors import ModelError

    sys.path.insert(0, str(tmp_path))
    try:
        (tmp_path / "vanishing_model.py").write_text(USER_SCRIPT)
        import vanishing_model

        potential = nnpes.Potential.create(vanishing_model.PairMLP(), [1, 6, 8], cutoff=4.0)
        potential.save(tmp_path / "model")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_model", None)
    (tmp_path / "vanishing_model.py").unlink()
    with pytest.raises(ModelError, match="vanishing_model:PairMLP cannot be imported") as err:
        nnpes.load(tmp_path / "model")
    assert "\n" not in str(err.value)
