"""Does the ensemble know what it does not know? Uncertainty on rMD17 ethanol, in and out of
distribution.

    .venv/bin/python benchmarks/uncertainty.py [--config configs/rmd17_ethanol_ensemble.yaml]
        [--budget S] [--workdir DIR] [--json FILE] [--plot PNG] [--compare JSON ...]

The deep and the shallow ensemble side by side (the table and plot of docs/trust.md):

    .venv/bin/python benchmarks/uncertainty.py --config configs/rmd17_ethanol_shallow.yaml \
        --workdir runs/uncertainty_shallow --json benchmarks/results/uncertainty_shallow.json \
        --plot benchmarks/results/uncertainty_shallow.png
    .venv/bin/python benchmarks/uncertainty.py --compare benchmarks/results/uncertainty_shallow.json

Trains ``configs/rmd17_ethanol_ensemble.yaml`` (4 NequIP members trained side by side on 100
rMD17 ethanol frames, calibrated on 50 validation frames; ``--budget`` overrides its wall-clock
budget, s), then evaluates the calibrated ensemble:

* in distribution: the 1 000 rMD17 ethanol test frames: force MAE, the Spearman rank
  correlation between each frame's predicted force σ and its actual force RMSE (acceptance:
  ≥ 0.5), negative log-likelihood, binned calibration (ENCE);
* out of distribution (``../shared/data/botnet_ethanol/``: hydrogen removal, two normal-mode
  scans, dimers; a different DFT set-up, so only the uncertainty is compared): the mean
  predicted energy σ must be higher than on the test frames, and it must grow along the
  normal-mode scans (Spearman between |displacement| and σ_E).

Prints a table, writes JSON (default ``benchmarks/results/uncertainty.json``) and the
calibration plot (default ``benchmarks/results/uncertainty_calibration.png``; ``--compare``
adds the test-set calibration of earlier runs' JSON files to it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import ase.io
import numpy as np
from scipy.stats import spearmanr

import nnpes
from nnpes.data.io import read_frames
from nnpes.evaluate import evaluate_frames
from nnpes.train import load_config, train
from nnpes.uncertainty import calibration_plot, uncertainty_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
BOTNET = os.path.join(os.path.dirname(ROOT), "shared", "data", "botnet_ethanol")
OOD = {  # label: file of ../shared/data/botnet_ethanol
    "H removal": "test_H_removal.xyz",
    "normal mode 874": "test_norm_mode_874.xyz",
    "normal mode 3005": "test_norm_mode_3005.xyz",
    "dimers": "test_dimers.xyz",
}


def _row(name: str, frames, preds, metrics: dict | None) -> dict:
    sigma_e = np.array([p["energy_std"] for p in preds]) * 1e3
    sigma_f = np.array([np.sqrt(np.mean(p["forces_std"] ** 2)) for p in preds]) * 1e3
    row = {"set": name, "frames": len(frames), "energy_std_mean_mev": float(sigma_e.mean())}
    row["forces_std_mean_mev_per_a"] = float(sigma_f.mean())
    if metrics is not None:
        row.update({k: metrics.get(k) for k in ("forces_mae_mev_per_a", "energy_mae_mev")})
    return row


def _evaluate(potential, test_path: str) -> tuple[list[dict], dict]:
    """Rows of the table and the details (uncertainty metrics, scans) for the JSON."""
    frames = read_frames(test_path)
    metrics, preds = evaluate_frames(potential, frames)
    unc = uncertainty_metrics(frames, preds)
    rows = [{**_row("rMD17 test (in distribution)", frames, preds, metrics), "forces_spearman": unc["forces_spearman"]}]
    details = {"test": {**metrics, "uncertainty": unc}, "scans": {}}
    for name, file in OOD.items():
        path = os.path.join(BOTNET, file)
        ood = read_frames(path)
        if name == "dimers":  # two-atom frames: drop pairs beyond the cutoff (no edge, σ = 0 by locality)
            ood = [f for f in ood if np.linalg.norm(f.positions[0] - f.positions[1]) < potential.cutoff]
        _, p = evaluate_frames(potential, ood)
        row = _row(name, ood, p, None)
        if name.startswith("normal mode"):
            amplitude = np.abs([a.info["displacement"] for a in ase.io.read(path, index=":")])
            sigma = [x["energy_std"] for x in p]
            row["scan_spearman"] = float(spearmanr(amplitude, sigma).statistic)
            details["scans"][name] = {"displacement": amplitude.tolist(), "energy_std_ev": sigma}
        rows.append(row)
    return rows, details


def _label(cfg) -> str:
    """E.g. "deep ensemble, 4 nequip networks" or "shallow ensemble, 8 heads of one nequip network"."""
    kind, m = getattr(cfg.model, "ensemble_kind", "deep"), cfg.model.ensemble
    family = cfg.model.family
    return f"deep ensemble, {m} {family} networks" if kind == "deep" else f"shallow ensemble, {m} heads of one {family}"


def _print(rows: list[dict]) -> None:
    head = f"{'set':32s} {'frames':>6s} {'σ_E meV':>9s} {'σ_F meV/Å':>10s} {'F MAE meV/Å':>11s} {'Spearman':>9s}"
    print(head)
    for r in rows:
        mae = r.get("forces_mae_mev_per_a")
        rho = r.get("forces_spearman", r.get("scan_spearman"))
        print(
            f"{r['set']:32s} {r['frames']:6d} {r['energy_std_mean_mev']:9.1f} {r['forces_std_mean_mev_per_a']:10.1f} "
            f"{'—' if mae is None else f'{mae:.1f}':>11s} {'—' if rho is None else f'{rho:.3f}':>9s}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "rmd17_ethanol_ensemble.yaml"))
    ap.add_argument("--budget", type=float, help="training wall-clock budget, s (default: the config's)")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "uncertainty"))
    ap.add_argument("--json", default=os.path.join(RESULTS, "uncertainty.json"))
    ap.add_argument("--plot", default=os.path.join(RESULTS, "uncertainty_calibration.png"))
    ap.add_argument("--compare", nargs="*", default=[], help="earlier runs' JSON: their calibration in the plot too")
    args = ap.parse_args(argv)
    if not os.path.isdir(BOTNET):
        sys.exit(f"reference data not found: {BOTNET}")
    overrides = [f"training.time_budget_s={args.budget}"] if args.budget else []
    cfg = load_config(args.config, overrides, workdir=args.workdir)
    result = train(cfg)
    potential = nnpes.load(result.model_dir)
    rows, details = _evaluate(potential, cfg.data.test)
    _print(rows)
    test_sigma = rows[0]["energy_std_mean_mev"]
    checks = {
        "forces_spearman_ge_0.5": rows[0]["forces_spearman"] >= 0.5,
        "ood_sigma_above_test": {r["set"]: r["energy_std_mean_mev"] > test_sigma for r in rows[1:]},
        "sigma_grows_along_scans": {r["set"]: r["scan_spearman"] > 0 for r in rows if "scan_spearman" in r},
    }
    print("checks:", json.dumps(checks))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    series = [(_label(cfg), details["test"]["uncertainty"])]
    for path in args.compare:
        with open(path) as f:
            earlier = json.load(f)
        series.append((earlier.get("label", path), earlier["details"]["test"]["uncertainty"]))
    calibration_plot(series, args.plot)
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "config": os.path.relpath(args.config, ROOT),
        "label": _label(cfg),
        "training": {"steps": result.step, "elapsed_s": result.elapsed_s, "stop_reason": result.stop_reason},
        "calibration": list(potential.calibration),
        "force_std_alarm_ev_a": potential.force_std_alarm_ev_a,
        "rows": rows,
        "checks": checks,
        "details": details,
    }
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
