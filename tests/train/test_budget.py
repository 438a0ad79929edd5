"""Budgets that shape the run: the learning rate follows the time budget to its floor, batch
shapes are capped (one compilation each), and a second identical run loads its compiled programs
from the persistent cache.

Time is never measured here: the budget test runs on a fake clock that advances per reading.
"""

from __future__ import annotations

import csv
import json
import os
import types

import numpy as np
import pytest
from helpers import PairModel

from nnpes.train import fit, loop
from nnpes.train.batches import fit_ladder
from nnpes.train.config import OptimizerConfig
from nnpes.train.optimizer import learning_rate_at, learning_rate_floor, run_progress


@pytest.fixture(scope="module")
def frames():
    from importlib import resources

    from nnpes.data.io import read_frames

    return read_frames(resources.files("nnpes.data") / "files" / "ethanol_train.xyz", index=":10")


class FakeClock:
    """A clock that advances by ``tick`` seconds each time it is read."""

    def __init__(self, tick: float = 1.0):
        self.t, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.t += self.tick
        return self.t


def test_wsd_holds_the_peak_then_decays_over_the_last_part_of_the_budget():
    cfg = OptimizerConfig(learning_rate=0.01, schedule="wsd", decay_fraction=0.25, min_learning_rate_factor=0.1)
    assert learning_rate_at(cfg, 10, 100, run_progress(10, 100, 70.0, 100.0)) == pytest.approx(0.01)
    mid = learning_rate_at(cfg, 10, 100, run_progress(10, 100, 87.5, 100.0))  # half-way through the decay
    assert mid == pytest.approx(0.01 * (0.9 * 0.5 + 0.1))
    assert learning_rate_at(cfg, 10, 100, 1.0) == pytest.approx(learning_rate_floor(cfg))


def test_schedule_without_budget_is_the_step_cosine():
    cfg = OptimizerConfig(learning_rate=0.01, warmup_steps=10, min_learning_rate_factor=0.1, schedule="cosine")
    assert learning_rate_at(cfg, 0, 110) == pytest.approx(1e-4)
    assert learning_rate_at(cfg, 10, 110) == pytest.approx(0.01)
    assert learning_rate_at(cfg, 60, 110) == pytest.approx(0.01 * (0.9 * 0.5 + 0.1))
    assert learning_rate_at(cfg, 110, 110) == pytest.approx(learning_rate_floor(cfg))
    # a budget three-quarters spent after 20 of 110 steps: the cosine is three-quarters down
    p = run_progress(20, 110, elapsed_s=75.0, budget_s=100.0)
    assert p == 0.75 and learning_rate_at(cfg, 20, 110, p) == pytest.approx(
        0.01 * (0.9 * 0.5 * (1 + np.cos(0.75 * np.pi)) + 0.1)
    )


def test_a_time_budget_run_ends_at_the_schedules_floor(tmp_path, frames, monkeypatch):
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=FakeClock(1.0).perf_counter))
    config = {
        "optimizer": {"learning_rate": 0.01, "warmup_steps": 2, "min_learning_rate_factor": 0.05},
        "training": {"max_steps": 100_000, "time_budget_s": 80, "batch_size": 4, "progress": False},
    }
    result = fit(PairModel(), frames[:8], frames[8:], config=config, workdir=tmp_path / "budget")
    floor = 0.01 * 0.05
    assert result.stop_reason == "time_budget" and 5 < result.step < 1000
    # the step fraction alone (≤ 1 %) would have left the rate at its peak
    assert result.learning_rate <= floor + 0.02 * (0.01 - floor)
    with open(os.path.join(result.workdir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[0] < rates[1] and rates[1:] == sorted(rates[1:], reverse=True)  # warm-up, then decay


def _graphs(sizes):
    return [types.SimpleNamespace(n_node=n, n_edge=e) for n, e in sizes]


@pytest.mark.parametrize("max_shapes", [1, 2, 4])
def test_bucket_ladder_is_capped_and_fits_every_batch(max_shapes):
    rng = np.random.default_rng(0)
    sizes = [(int(n), int(n * rng.uniform(20, 60))) for n in rng.integers(8, 130, size=200)]
    graphs = _graphs(sizes)
    ladder = fit_ladder(graphs, batch_size=4, n_shards=1, seed=0, max_shapes=max_shapes)
    assert 1 <= len(ladder.shapes) <= max_shapes
    from nnpes.train.batches import epoch_batches

    used = set()
    for epoch in range(30):  # beyond the epochs the ladder was fitted on
        for idx in epoch_batches(len(graphs), 4, 0, epoch):
            n, e = sum(sizes[i][0] for i in idx), sum(sizes[i][1] for i in idx)
            shape = ladder.shape_for(n, e)
            assert shape[0] > n and shape[1] >= e
            used.add(shape)
    assert len(used) <= max_shapes
    worst = ladder.shapes[-1]
    top = sorted(sizes, key=lambda s: -s[0])[:4], sorted(sizes, key=lambda s: -s[1])[:4]
    assert worst[0] > sum(n for n, _ in top[0]) and worst[1] >= sum(e for _, e in top[1])


@pytest.mark.slow
def test_a_second_identical_nnpes_train_hits_the_compilation_cache(tmp_path, tiny_config, write, run_train):
    env = {k: v for k, v in os.environ.items() if k != "NNPES_NO_COMPILE_CACHE"}
    env.update(NNPES_CACHE_DIR=str(tmp_path / "cache"), JAX_ENABLE_X64="1")
    path = write(tiny_config(training={"max_steps": 4, "progress": False}))
    results = []
    for name in ("cold", "warm"):
        done = run_train(path, str(tmp_path / name), env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(json.loads(open(tmp_path / name / "result.json").read()))
    cold, warm = results
    assert cold["cache_hits"] == 0 and cold["cache_misses"] > 0
    assert warm["cache_hits"] >= 1 and warm["cache_misses"] < cold["cache_misses"]
    assert "loaded from the compilation cache" in done.stdout
    assert os.listdir(tmp_path / "cache")
