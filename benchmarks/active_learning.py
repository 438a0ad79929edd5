"""Active learning on ethanol with GFN2-xTB labels: does each round lower the test error?

    .venv/bin/python benchmarks/active_learning.py [--config configs/learn_ethanol_gfn2.yaml]
        [--workdir DIR] [--rounds N] [--fresh] [--json FILE]

Runs ``nnpes learn`` on ``configs/learn_ethanol_gfn2.yaml``: 20 rMD17 ethanol training
geometries relabelled with GFN2-xTB (tblite) start it; a 4-member NequIP ensemble explores with
NVT MD at 300/600/1000 K; up to 20 uncertain, diverse frames per round are labelled with
GFN2-xTB and added; later rounds fine-tune the previous round's ensemble. The test set is 200
geometries of rMD17 ethanol's test file relabelled with GFN2-xTB, cached in
``benchmarks/results/active_learning/ethanol_test_gfn2.xyz`` (a rerun does not relabel it).

Acceptance: the test force MAE falls in each of the first three rounds after the first
(round 1 < round 0, 2 < 1, 3 < 2). Later rounds also train longer, so a control run separates
the labels' share from the training's: the same config with a threshold no frame exceeds
(``select.threshold_ev_a=1e9``: the same rounds, MD and fine-tuning steps, no new label).
Prints both tables, writes JSON (default ``benchmarks/results/active_learning.json``). A rerun
with the same work directories resumes (finished rounds are read back); ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
TEST_SOURCE = os.path.join(os.path.dirname(ROOT), "shared", "data", "rmd17", "ethanol_test.xyz")
TEST_CACHE = os.path.join(RESULTS, "active_learning", "ethanol_test_gfn2.xyz")
TEST_FRAMES = 200


def gfn2_test_set(path: str = TEST_CACHE, count: int = TEST_FRAMES) -> str:
    """The GFN2-xTB test file: ``count`` geometries evenly spaced over rMD17 ethanol's test file,
    labelled once with tblite and cached at ``path``."""
    if os.path.isfile(path):
        return path
    from nnpes.data.io import read_frames
    from nnpes.learn import ledger
    from nnpes.learn.label import label, make_calculator

    frames = read_frames(TEST_SOURCE)
    frames = [frames[i] for i in ledger.evenly_spaced(len(frames), count)]
    structures = [ledger.bare(f, rmd17_test_index=f.index) for f in frames]
    start = time.perf_counter()
    labelled = label(structures, make_calculator("tblite"), [f"{TEST_SOURCE} frame {f.index}" for f in frames])
    print(f"labelled {len(labelled)} test frames with GFN2-xTB in {time.perf_counter() - start:.1f} s")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ledger.write_xyz(path, labelled)
    return path


def checks(rows: list[dict], control: list[dict]) -> dict:
    """Acceptance: three successive rounds, each with a lower test force MAE than the one before;
    and the last round's MAE against the control's (no new labels)."""
    mae = [r["test_forces_mae_mev_per_a"] for r in rows]
    falls = [mae[i] < mae[i - 1] for i in range(1, len(mae))]
    return {
        "test_force_mae_falls_per_round": falls,
        "falls_in_rounds_1_to_3": len(falls) >= 3 and all(falls[:3]),
        "force_mae_first_to_last_mev_per_a": [mae[0], mae[-1]] if mae else None,
        "control_force_mae_per_round_mev_per_a": [r["test_forces_mae_mev_per_a"] for r in control],
        "last_round_below_control": bool(control) and mae[-1] < control[-1]["test_forces_mae_mev_per_a"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "learn_ethanol_gfn2.yaml"))
    ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "active_learning"))
    ap.add_argument("--rounds", type=int, help="rounds (default: the config's)")
    ap.add_argument("--fresh", action="store_true", help="delete the work directory first")
    ap.add_argument("--json", default=os.path.join(RESULTS, "active_learning.json"))
    args = ap.parse_args(argv)
    if not os.path.isfile(TEST_SOURCE):
        sys.exit(f"reference data not found: {TEST_SOURCE}")
    from nnpes import compilation
    from nnpes.cli.learn import print_table
    from nnpes.learn import learn, load_learn_config

    compilation.enable_persistent_cache()  # as the nnpes command does: MD runs of later rounds reuse programs
    test = gfn2_test_set()
    overrides = [f"frames.test={test}", "frames.relabel_test=false", "frames.test_count=null"]
    overrides += [f"rounds={args.rounds}"] if args.rounds else []
    cfg = load_learn_config(args.config, overrides, workdir=args.workdir)
    control_cfg = load_learn_config(
        args.config, [*overrides, "select.threshold_ev_a=1e9"], workdir=args.workdir + "_control"
    )
    for c in (cfg, control_cfg):
        if args.fresh and os.path.isdir(c.workdir):
            shutil.rmtree(c.workdir)
    start = time.perf_counter()
    rows = learn(cfg, on_round=print_table)
    wall = time.perf_counter() - start
    print("control: the same rounds and training, no new labels")
    control = learn(control_cfg, on_round=print_table)
    result = checks(rows, control)
    print("checks:", json.dumps(result))
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "config": os.path.relpath(args.config, ROOT),
        "test_set": {"file": os.path.relpath(test, ROOT), "frames": TEST_FRAMES, "source": "rMD17 ethanol test"},
        "wall_s": round(wall, 1),
        "rounds": rows,
        "control_rounds": control,
        "checks": result,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
