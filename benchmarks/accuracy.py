"""Accuracy per CPU-minute on rMD17: test MAE after 2, 5, 10 and 20 minutes of training, for
nnpes's NequIP- and MACE-style families and InstaDeep mlip's MACE, side by side in one run.

    .venv/bin/python benchmarks/accuracy.py [--molecules ethanol aspirin] [--budgets 120 300 600 1200]
        [--rows nequip mace mlip] [--resume] [--json FILE] [--plot PNG]

Data: ``../shared/data/rmd17/<molecule>_train.xyz`` (split 01, 1 000 frames): the first 950
train, the last 50 validate (the same two files for every row), tested on the 1 000 frames of
``<molecule>_test.xyz``. Every (molecule, budget, row) is its own training from scratch under
that wall-clock budget, imports, data loading and compilation included, one after another
(never two at once) on this machine's cores; the budget sets the schedule too (nnpes's learning
rate follows the fraction of the budget spent), so a 5-minute point is a 5-minute run, not a
snapshot of a longer one.

Rows:
    nequip  ``configs/rmd17_<molecule>.yaml`` (NequIP, 32 channels, l <= 2, 3 layers)
    mace    ``configs/rmd17_<molecule>_mace.yaml`` (MACE, 32 channels, l <= 2, ν = 3, 2 layers)
    mlip    InstaDeep mlip 0.2.5's MACE as ``benchmarks/peers.py`` runs it (32 channels, l <= 2,
            ν = 3, 2 layers, its default loss and optimiser, batch 4), in its own virtualenv
            (``--mlip-python``; install command in peers.py's docstring).
nnpes rows run ``nnpes train`` then ``nnpes evaluate`` (peers.run_nnpes); mlip runs its worker and
the same MAE code (peers.run_peer). Results are appended to the JSON after every run, so an
interrupted sweep continues with --resume (rows already measured are kept, not rerun). The
table prints the force MAE (meV/Å) and energy MAE (meV per molecule) at every budget; the plot
(--plot) draws force MAE against budget, one panel per molecule. For scale, the published NequIP
results on the same splits (days on a GPU) are drawn as dotted lines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
from types import SimpleNamespace

import peers
from _harness import fmt

ROOT = peers.ROOT
RESULTS = os.path.join(ROOT, "benchmarks", "results")
PUBLISHED = {  # (energy MAE meV per molecule, force MAE meV/Å): NequIP, Batzner et al. 2022, rMD17, 950 + 50 frames
    "ethanol": (0.4, 2.8),
    "aspirin": (2.3, 8.2),
}
ROWS = {  # row: (label, config with {molecule}, or None for the mlip peer)
    "nequip": ("nnpes NequIP", "configs/rmd17_{molecule}.yaml"),
    "mace": ("nnpes MACE", "configs/rmd17_{molecule}_mace.yaml"),
    "mlip": ("mlip 0.2.5 MACE", None),
}


def run_one(molecule: str, row: str, budget_s: float, args) -> dict:
    """Train and test one (molecule, row, budget) in a fresh work directory; one result row."""
    workdir = os.path.join(args.workdir, f"{molecule}_{row}_{int(budget_s)}s")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    peers.write_split(os.path.join(peers.RMD17, f"{molecule}_train.xyz"), 50, workdir)
    test = os.path.join(peers.RMD17, f"{molecule}_test.xyz")
    settings = SimpleNamespace(
        budget_s=budget_s,
        slack_s=args.slack_s,
        memory_gb=args.memory_gb,
        predict_timeout_s=args.predict_timeout_s,
        test=test,
    )
    label, config = ROWS[row]
    if config is None:
        result = peers.run_peer("mlip", label, args.mlip_python, settings, workdir, peers.reference(test))
    else:
        spec = f"{row};{config.format(molecule=molecule)}"
        result = peers.run_nnpes(sys.executable, spec, settings, workdir)
    return {"molecule": molecule, "row": row, "label": label, "budget_s": budget_s, **result}


def load_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)["rows"]


def save(path: str, rows: list[dict]) -> None:
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "split": "rMD17 split 01: first 950 of the train file train, last 50 validate; 1 000 test frames",
        "units": {"energy_mae_mev": "meV per molecule", "forces_mae_mev_per_a": "meV/Å", "budget_s": "s"},
        "published_nequip": PUBLISHED,
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    os.replace(tmp, path)


def table(rows: list[dict]) -> str:
    """Force MAE (energy MAE) per molecule × row × budget."""
    budgets = sorted({r["budget_s"] for r in rows})
    head = f"{'molecule':9s} {'row':18s} " + " ".join(f"{f'{b / 60:g} min':>16s}" for b in budgets)
    lines = [head, "  F MAE meV/Å (E MAE meV) on the test frames"]
    for molecule in dict.fromkeys(r["molecule"] for r in rows):
        for row in ROWS:
            cells = []
            for b in budgets:
                hit = [r for r in rows if r["molecule"] == molecule and r["row"] == row and r["budget_s"] == b]
                if not hit:
                    cells.append(f"{'':>16s}")
                elif hit[-1].get("status") != "ok":
                    cells.append(f"{hit[-1].get('status', '?')[:16]:>16s}")
                else:
                    r = hit[-1]
                    cells.append(
                        f"{fmt(r['forces_mae_mev_per_a'], '.1f') + ' (' + fmt(r['energy_mae_mev'], '.1f') + ')':>16s}"
                    )
            if any(c.strip() for c in cells):
                lines.append(f"{molecule:9s} {ROWS[row][0]:18s} " + " ".join(cells))
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Force MAE against budget (minutes), one panel per molecule, a line per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    molecules = list(dict.fromkeys(r["molecule"] for r in rows))
    minutes = sorted({r["budget_s"] / 60 for r in rows})  # ticks at the measured budgets
    fig, axes = plt.subplots(1, len(molecules), figsize=(5 * len(molecules), 4), squeeze=False)
    for ax, molecule in zip(axes[0], molecules):
        for row, (label, _) in ROWS.items():
            ok = sorted(
                (r["budget_s"] / 60, r["forces_mae_mev_per_a"])
                for r in rows
                if r["molecule"] == molecule and r["row"] == row and r.get("status") == "ok"
            )
            if ok:
                ax.plot(*zip(*ok), marker="o", label=label)
        ax.axhline(PUBLISHED[molecule][1], color="grey", linestyle=":", label="NequIP published (GPU, days)")
        ax.set(
            xscale="log", yscale="log", xlabel="training budget, minutes (2 CPU cores)", ylabel="test force MAE, meV/Å"
        )
        ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(min(minutes) / 1.3, max(minutes) * 1.3)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_title(f"rMD17 {molecule}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecules", nargs="+", default=["ethanol", "aspirin"], choices=sorted(PUBLISHED))
    p.add_argument("--budgets", nargs="+", type=float, default=[120.0, 300.0, 600.0, 1200.0], help="seconds")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--resume", action="store_true", help="keep the JSON's finished rows and run only the others")
    p.add_argument("--mlip-python", default=os.path.join(peers.PEER_VENVS, "mlip", "bin", "python"))
    p.add_argument("--workdir", default=os.path.join(RESULTS, "accuracy"))
    p.add_argument("--json", default=os.path.join(RESULTS, "accuracy_budget.json"))
    p.add_argument("--plot", default=os.path.join(RESULTS, "accuracy_budget.png"))
    p.add_argument("--slack-s", type=float, default=300.0, help="hard timeout = budget + slack, s")
    p.add_argument("--predict-timeout-s", type=float, default=900.0)
    p.add_argument("--memory-gb", type=float, default=64.0)
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rows = load_rows(args.json) if args.resume else []
    for budget_s in args.budgets:
        for molecule in args.molecules:
            for row in args.rows:
                done = [
                    r
                    for r in rows
                    if (r["molecule"], r["row"], r["budget_s"]) == (molecule, row, budget_s) and r.get("status") == "ok"
                ]
                if done:
                    continue
                rows.append(run_one(molecule, row, budget_s, args))
                save(args.json, rows)
                print(f"{molecule} {row} {budget_s:g} s: {rows[-1].get('status')}", file=sys.stderr, flush=True)
    print(table(rows))
    if args.plot and any(r.get("status") == "ok" for r in rows):
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    print(f"results in {args.json}")


if __name__ == "__main__":
    main()
