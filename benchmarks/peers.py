"""Accuracy of peer frameworks at the quick start's budget: nnpes vs apax (GMNN) vs mlip (MACE).

    .venv/bin/python benchmarks/peers.py [--apax-python ../peer-venvs/apax/bin/python]
        [--mlip-python ../peer-venvs/mlip/bin/python] [--budget-s 180] [--data quickstart|rmd17]
        [--nnpes "NAME;CONFIG[;KEY=VALUE...]" ...] [--json FILE]

Every framework trains on the same frames under the same wall-clock budget, data loading and
compilation included, one after another (never in parallel) on the CPU, and is tested on the
1 000-frame rMD17 ethanol test set (--test). --data quickstart: the 100 rMD17 ethanol frames
shipped in nnpes (``nnpes/data/files/ethanol_train.xyz``: energies eV, forces eV/Å), the last
10 for validation; --data rmd17: the 1 000 train frames of ``../shared/data/rmd17``, the last
50 for validation. The driver writes the two files into each framework's work directory and
every framework reads those. The table gives the
wall-clock of each training subprocess (interpreter start to exit, s), the energy MAE per
molecule (meV) and the force-component MAE (meV/Å); the JSON (--json) adds the settings.

Rows:
    nnpes  one row per --nnpes NAME;CONFIG;OVERRIDES (default: quickstart;configs/quickstart.yaml,
           NequIP, 16 channels, l <= 2, 2 layers): ``python -P -m nnpes train CONFIG --workdir
           DIR data.train=DIR/train.xyz data.validation=DIR/val.xyz data.test=null
           training.time_budget_s=BUDGET training.progress=false OVERRIDES``, then ``python -P -m
           nnpes evaluate DIR/model TEST --json FILE``. The budget counts from the start of
           ``train()``; it stops there or at the config's step cap, whichever comes first.
           (-P: the interpreter's installed nnpes, not a ./nnpes in the cwd.)
    apax   apax 0.14.0, its default GMNN model (nn 256x256, 5 radial, 8 contractions, 16 Bessel
           functions, r_c 5 A) and the settings of ``apax template train --full`` (batch 4,
           forces weight 4, cyclic-cosine learning rate), trained by ``apax.train.run.run``.
           apax has no time-budget option, so ``n_epochs`` is 100 000 and the worker leaves
           (``os._exit``) when the budget, counted from after its imports, is spent. apax saves
           the best-validation checkpoint (``best/``, orbax: written to a temporary folder,
           then renamed) after every improving epoch; the test set is predicted from it with
           ``apax.md.ASECalculator.batch_eval``.
    mlip   InstaDeep mlip 0.2.5, a small MACE (32 channels, l <= 2, 2 layers, correlation 3,
           r_c 5 A), its default loss (MSE, energy weight 1, forces 25) and optimizer
           (``get_default_mlip_optimizer``: AMSGrad, learning rate 0.01), batch 4. The
           budget is kept by a logger attached to its ``TrainingIOHandler``: after each
           epoch's validation it stops the ``TrainingLoop`` (by raising) when one more epoch
           as long as the last would end past the budget (counted from after the imports).
           ``TrainingLoop.best_model`` (best validation, EMA parameters) is saved with
           ``save_model_to_zip`` and predicted with ``run_batched_inference``. mlip builds its
           parameters un-jitted (about a thousand small XLA compilations), which the budget
           counts like any compilation.

Each peer lives in its own virtualenv, so that their dependencies (tensorflow for apax, ...)
stay out of nnpes's:
    python3 -m venv ../peer-venvs/apax && ../peer-venvs/apax/bin/pip install apax==0.14.0
    python3 -m venv ../peer-venvs/mlip && ../peer-venvs/mlip/bin/pip install mlip==0.2.5
A peer whose interpreter is missing is recorded as "not installed". Peer code runs as
``PEER_PYTHON benchmarks/peers.py --worker KIND ...``; the worker path imports only numpy,
ase, the peer and ``_harness`` (standard library). The MAEs are computed here, by the same
code for every peer, from the predicted and reference energies and forces.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import threading
import time

import numpy as np
from _harness import emit, fmt, run_limited

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RMD17 = os.path.join(os.path.dirname(ROOT), "shared", "data", "rmd17")
TEST_XYZ = os.path.join(RMD17, "ethanol_test.xyz")
PEER_VENVS = os.path.join(os.path.dirname(ROOT), "peer-venvs")  # beside the repository
DATA = {  # --data: (training file, validation frames = its last ones)
    "quickstart": (os.path.join(ROOT, "nnpes", "data", "files", "ethanol_train.xyz"), 10),
    "rmd17": (os.path.join(RMD17, "ethanol_train.xyz"), 50),
}
NNPES_DEFAULT = "quickstart;configs/quickstart.yaml"
CUTOFF_A = 5.0
BATCH_SIZE = 4  # as nnpes's quick start
MACE = {"num_channels": 32, "l_max": 2, "num_layers": 2, "correlation": 3}


# -- workers: run with a peer's interpreter (numpy, ase and the peer only) ---------------------
def write_split(train_xyz: str, n_validation: int, workdir: str) -> tuple[str, str]:
    """Write all but the last ``n_validation`` frames of train_xyz to workdir/train.xyz and those
    to workdir/val.xyz (every framework trains and validates on these two files); return the paths."""
    import ase.io

    frames = ase.io.read(train_xyz, ":")
    if not 0 < n_validation < len(frames):
        raise SystemExit(f"{train_xyz}: {len(frames)} frames, cannot keep {n_validation} for validation")
    paths = _split(workdir)
    ase.io.write(paths[0], frames[:-n_validation])
    ase.io.write(paths[1], frames[-n_validation:])
    return paths


def _split(workdir: str) -> tuple[str, str]:
    return os.path.join(workdir, "train.xyz"), os.path.join(workdir, "val.xyz")


def _save_predictions(path: str, energies_ev, forces_ev_per_a) -> None:
    np.savez(
        path,
        energy_ev=np.asarray(energies_ev, np.float64),
        forces_ev_per_a=np.concatenate([np.asarray(f, np.float64).reshape(-1, 3) for f in forces_ev_per_a]),
    )


def apax_train(workdir: str, budget_s: float) -> None:
    import ase.io
    from apax.train.run import run

    t0 = time.perf_counter()
    train_xyz, val_xyz = _split(workdir)
    config = {
        "n_epochs": 100_000,
        "seed": 1,
        "data_parallel": False,
        "data": {
            "directory": workdir,
            "experiment": "apax",
            "train_data_path": train_xyz,
            "val_data_path": val_xyz,
            "batch_size": BATCH_SIZE,
            "valid_batch_size": len(ase.io.read(val_xyz, ":")),
        },
        "model": {"name": "gmnn", "basis": {"name": "bessel", "n_basis": 16, "r_max": CUTOFF_A}},
        "loss": [{"name": "energy"}, {"name": "forces", "weight": 4.0}],
        "metrics": [{"name": "energy", "reductions": ["mae"]}, {"name": "forces", "reductions": ["mae"]}],
        "optimizer": {"schedule": {"name": "cyclic_cosine", "period": 40, "decay_factor": 0.93}},
        "progress_bar": {"disable_epoch_pbar": True},
    }

    def summary(stop: str) -> dict:
        model_dir = os.path.join(workdir, "apax")
        best_dir, log_csv = os.path.join(model_dir, "best"), os.path.join(model_dir, "log.csv")
        best = [int(d) for d in os.listdir(best_dir) if d.isdigit()] if os.path.isdir(best_dir) else []
        epochs = max(0, sum(1 for _ in open(log_csv)) - 1) if os.path.isfile(log_csv) else 0
        return {
            "stop": stop,
            "train_s": time.perf_counter() - t0,
            "epochs": epochs,
            "best_epoch": max(best) if best else None,
            "apax_config": config,
        }

    def stop():  # apax has no time budget: leave at it, the best checkpoint is on disk
        try:
            emit(summary("time budget"))
        finally:
            os._exit(0)

    timer = threading.Timer(max(0.0, budget_s - (time.perf_counter() - t0)), stop)
    timer.daemon = True
    timer.start()
    run(config)
    timer.cancel()
    emit(summary("n_epochs"))


def apax_predict(workdir: str, test_xyz: str, out: str) -> None:
    import ase.io
    from apax.md import ASECalculator

    frames = ase.io.read(test_xyz, ":")
    preds = ASECalculator(model_dir=os.path.join(workdir, "apax")).batch_eval(frames, batch_size=100, silent=True)
    _save_predictions(out, [a.get_potential_energy() for a in preds], [a.get_forces() for a in preds])
    emit({})


def mlip_train(workdir: str, budget_s: float) -> None:
    import ase.io
    from mlip.data import ASEAtomsReader, GraphDatasetBuilder
    from mlip.models import ForceField, Mace
    from mlip.models.loss import MSELoss
    from mlip.models.model_io import save_model_to_zip
    from mlip.training import TrainingIOHandler, TrainingLoop, get_default_mlip_optimizer
    from mlip.training.training_io_handler import LogCategory

    t0 = time.perf_counter()
    train_xyz, val_xyz = _split(workdir)
    readers = {
        "train": ASEAtomsReader(ase.io.read(train_xyz, ":")),
        "validation": ASEAtomsReader(ase.io.read(val_xyz, ":")),
    }
    builder = GraphDatasetBuilder(
        readers, GraphDatasetBuilder.Config(graph_cutoff_angstrom=CUTOFF_A, batch_size=BATCH_SIZE)
    )
    splits = builder.get_datasets()
    force_field = ForceField.from_mlip_network(Mace(Mace.Config(**MACE), builder.dataset_info))

    class BudgetSpent(Exception):
        pass

    last = {"t": time.perf_counter(), "epoch": 0, "epoch_s": 0.0}

    def budget_logger(category, to_log, epoch):  # called after every validation
        if category != LogCategory.BEST_MODEL:
            return
        now = time.perf_counter()
        last.update(epoch_s=now - last["t"], t=now, epoch=epoch)
        next_epoch_s = last["epoch_s"] if epoch >= 2 else 0.0  # epoch 1 includes the compilation
        if epoch > 0 and now - t0 + next_epoch_s > budget_s:
            raise BudgetSpent

    io_handler = TrainingIOHandler()  # no checkpoints: the best parameters are kept in memory
    io_handler.attach_logger(budget_logger)
    loop = TrainingLoop(
        train_dataset=splits["train"],
        validation_dataset=splits["validation"],
        force_field=force_field,
        loss=MSELoss(),
        optimizer=get_default_mlip_optimizer(),
        config=TrainingLoop.Config(num_epochs=100_000),
        io_handler=io_handler,
    )
    stop = "num_epochs"
    try:
        loop.run()
    except BudgetSpent:
        stop = "time budget"
    save_model_to_zip(os.path.join(workdir, "mace.zip"), loop.best_model)
    emit(
        {
            "stop": stop,
            "train_s": time.perf_counter() - t0,
            "epochs": last["epoch"],
            "best_epoch": loop.best_evaluation_epoch,
            "mace_config": MACE,
        }
    )


def mlip_predict(workdir: str, test_xyz: str, out: str) -> None:
    import ase.io
    from mlip.inference import run_batched_inference
    from mlip.models import Mace
    from mlip.models.model_io import load_model_from_zip

    force_field = load_model_from_zip(Mace, os.path.join(workdir, "mace.zip"))
    preds = run_batched_inference(ase.io.read(test_xyz, ":"), force_field, batch_size=50)
    _save_predictions(out, [float(p.energy) for p in preds], [p.forces for p in preds])
    emit({})


WORKERS = {
    "apax-train": apax_train,
    "apax-predict": apax_predict,
    "mlip-train": mlip_train,
    "mlip-predict": mlip_predict,
}


# -- driver (nnpes's interpreter) --------------------------------------------------------------
def reference(test_xyz: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference energies (eV, per frame) and force components (eV/Å, all atoms stacked)."""
    import ase.io

    frames = ase.io.read(test_xyz, ":")
    return (np.array([a.get_potential_energy() for a in frames]), np.concatenate([a.get_forces() for a in frames]))


def maes(pred_npz: str, ref) -> dict:
    """Energy MAE per molecule (meV) and force-component MAE (meV/Å) of saved predictions."""
    pred = np.load(pred_npz)
    energy_ev, forces_ev_per_a = ref
    if pred["energy_ev"].shape != energy_ev.shape or pred["forces_ev_per_a"].shape != forces_ev_per_a.shape:
        raise ValueError(f"{pred_npz}: prediction shapes do not match the test set")
    return {
        "energy_mae_mev": 1e3 * float(np.mean(np.abs(pred["energy_ev"] - energy_ev))),
        "forces_mae_mev_per_a": 1e3 * float(np.mean(np.abs(pred["forces_ev_per_a"] - forces_ev_per_a))),
    }


def parse_nnpes(spec: str) -> tuple[str, str, list[str]]:
    """``NAME;CONFIG[;KEY=VALUE...]`` → (name, config path, overrides) of one nnpes row."""
    name, config, *overrides = [part.strip() for part in spec.split(";")]
    if not name or not config:
        raise SystemExit(f"--nnpes {spec!r}: expected NAME;CONFIG[;KEY=VALUE...]")
    return name, config if os.path.isabs(config) else os.path.join(ROOT, config), overrides


def run_nnpes(python: str, spec: str, args, workdir: str) -> dict:
    name, config, overrides = parse_nnpes(spec)
    train_xyz, val_xyz = _split(workdir)
    # -P: import the interpreter's installed nnpes, not whatever ./nnpes the cwd holds
    train = run_limited(
        [
            python,
            "-P",
            "-m",
            "nnpes",
            "train",
            config,
            "--workdir",
            workdir,
            f"data.train={train_xyz}",
            f"data.validation={val_xyz}",
            "data.test=null",
            f"training.time_budget_s={args.budget_s:g}",
            "training.progress=false",
            *overrides,
        ],
        args.budget_s + args.slack_s,
        args.memory_gb,
    )
    row = {"framework": f"nnpes {name}", "config": os.path.relpath(config, ROOT), "overrides": overrides}
    row["train_wall_s"] = train["wall_s"]
    result_json = os.path.join(workdir, "result.json")  # nnpes train prints no RESULT line: read its summary
    if not os.path.isfile(result_json):
        return {**row, "status": f"train {train['status']}"}
    with open(result_json) as f:
        result = json.load(f)
    row.update(stop=result["stop_reason"], train_s=result["elapsed_s"], steps=result["step"], epochs=result["epochs"])
    metrics_json = os.path.join(workdir, "evaluate.json")
    ev = run_limited(
        [python, "-P", "-m", "nnpes", "evaluate", os.path.join(workdir, "model"), args.test, "--json", metrics_json],
        args.predict_timeout_s,
        args.memory_gb,
    )
    if not os.path.isfile(metrics_json):
        return {**row, "status": f"evaluate {ev['status']}"}
    with open(metrics_json) as f:
        test = json.load(f)["files"][0]
    return {
        **row,
        "status": "ok",
        "energy_mae_mev": test["energy_mae_mev"],
        "forces_mae_mev_per_a": test["forces_mae_mev_per_a"],
        "test_frames": test["frames"],
    }


def run_peer(name: str, label: str, python: str | None, args, workdir: str, ref) -> dict:
    row = {"framework": label}
    if not python or not os.path.isfile(python):
        return {**row, "status": f"not installed (no interpreter at {python})"}
    script = os.path.abspath(__file__)
    train = run_limited(
        [python, script, "--worker", f"{name}-train", workdir, f"{args.budget_s:g}"],
        args.budget_s + args.slack_s,
        args.memory_gb,
    )
    row.update(
        train_status=train["status"],
        train_wall_s=train["wall_s"],
        **{k: v for k, v in train.items() if k not in ("status", "wall_s")},
    )
    if train["status"] != "ok":
        return {**row, "status": f"train {train['status']}"}
    if train.get("best_epoch", 0) is None:
        return {**row, "status": "no epoch finished within the budget"}
    pred_npz = os.path.join(workdir, "test_predictions.npz")
    pred = run_limited(
        [python, script, "--worker", f"{name}-predict", workdir, args.test, pred_npz],
        args.predict_timeout_s,
        args.memory_gb,
    )
    if pred["status"] != "ok":
        return {**row, "status": f"predict {pred['status']}"}
    return {**row, "status": "ok", "predict_wall_s": pred["wall_s"], **maes(pred_npz, ref), "test_frames": len(ref[0])}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        kind, *rest = sys.argv[2:]
        WORKERS[kind](rest[0], float(rest[1])) if kind.endswith("-train") else WORKERS[kind](*rest)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=180.0, help="training wall-clock budget per framework, s")
    p.add_argument(
        "--apax-python", default=os.path.join(PEER_VENVS, "apax", "bin", "python"), help="interpreter of apax's venv"
    )
    p.add_argument(
        "--mlip-python", default=os.path.join(PEER_VENVS, "mlip", "bin", "python"), help="interpreter of mlip's venv"
    )
    p.add_argument("--nnpes-python", default=sys.executable, help="interpreter with nnpes installed")
    p.add_argument("--frameworks", nargs="+", default=["nnpes", "apax", "mlip"], choices=["nnpes", "apax", "mlip"])
    p.add_argument(
        "--data",
        default="quickstart",
        choices=list(DATA),
        help="quickstart: the 100 shipped frames (90 + 10); "
        "rmd17: the 1 000 rMD17 ethanol train frames of ../shared/data (950 + 50)",
    )
    p.add_argument(
        "--nnpes",
        action="append",
        metavar="NAME;CONFIG[;KEY=VALUE...]",
        help="an nnpes row (repeatable): "
        f"name, config (relative to the repository) and config overrides; default {NNPES_DEFAULT!r}",
    )
    p.add_argument("--test", default=TEST_XYZ, help="labelled test set (extxyz)")
    p.add_argument("--workdir", default=os.path.join(ROOT, "benchmarks", "results", "peers"))
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "peers.json"))
    p.add_argument("--slack-s", type=float, default=300.0, help="hard timeout = budget + slack (imports, saving), s")
    p.add_argument("--predict-timeout-s", type=float, default=900.0)
    p.add_argument("--memory-gb", type=float, default=64.0, help="address-space limit per subprocess, GiB")
    args = p.parse_args()
    ref = reference(args.test)
    train_xyz, n_validation = DATA[args.data]
    runs = []  # (work directory name, framework, nnpes spec)
    for name in args.frameworks:
        if name == "nnpes":
            runs += [(parse_nnpes(spec)[0], name, spec) for spec in args.nnpes or [NNPES_DEFAULT]]
        else:
            runs.append((name, name, None))
    rows = []
    for dirname, name, spec in runs:  # one after another: each training gets both cores
        workdir = os.path.join(args.workdir, dirname)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        write_split(train_xyz, n_validation, workdir)
        if name == "nnpes":
            rows.append(run_nnpes(args.nnpes_python, spec, args, workdir))
        else:
            label = {"apax": "apax 0.14.0 (GMNN)", "mlip": "mlip 0.2.5 (MACE)"}[name]
            rows.append(run_peer(name, label, getattr(args, f"{name}_python"), args, workdir, ref))
        rows[-1]["workdir"] = workdir
        print(f"{dirname}: {rows[-1]['status']}", file=sys.stderr, flush=True)

    print(
        f"\nrMD17 ethanol ({args.data}: last {n_validation} frames of {train_xyz} for validation), "
        f"{args.budget_s:g} s budget, tested on {len(ref[0])} frames"
    )
    print(f"{'framework':28s} {'train s':>8s} {'E MAE meV':>10s} {'F MAE meV/Å':>12s}  status")
    for r in rows:
        print(
            f"{r['framework']:28s} {fmt(r.get('train_wall_s'), '.1f'):>8s} "
            f"{fmt(r.get('energy_mae_mev'), '.2f'):>10s} {fmt(r.get('forces_mae_mev_per_a'), '.2f'):>12s}  "
            f"{r['status']}"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "budget_s": args.budget_s,
        "train_data": train_xyz,
        "test_data": args.test,
        "split": f"every framework: the last {n_validation} frames validation, the others train",
        "units": {"train_wall_s": "s", "energy_mae_mev": "meV per molecule", "forces_mae_mev_per_a": "meV/Å"},
    }
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
