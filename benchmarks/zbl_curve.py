"""Plot the ZBL pair energy (nnpes/zbl.py) of a few element pairs, with and without the switch.

    .venv/bin/python benchmarks/zbl_curve.py [--out benchmarks/results/zbl_pair_curve.png]
        [--json benchmarks/results/zbl_curve.json]

E_pair(r) for H–H, O–H and Si–Si from 0.1 to 2.5 Å on a log energy axis, bare (dashed) and
multiplied by the C² switch of the ZBL term (solid; r_on = 1.0 Å, r_off = 2.0 Å, the term's
defaults), with r_on and r_off marked. Prints a table of the values at a few distances (eV) and
writes it as JSON (--json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # before any array exists: the curve spans 6 decades

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnpes.zbl import smooth_switch, zbl_pair_energy  # noqa: E402

PAIRS = {"H–H": (1, 1), "O–H": (8, 1), "Si–Si": (14, 14)}
R_ON, R_OFF = 1.0, 2.0  # Å
TABLE_R = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5)  # Å
DEFAULT_OUT = Path(__file__).parent / "results" / "zbl_pair_curve.png"
DEFAULT_JSON = Path(__file__).parent / "results" / "zbl_curve.json"


def curves(r: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{pair: (bare E_pair, switched E_pair)} in eV at the distances r (Å)."""
    switch = np.asarray(smooth_switch(r, R_ON, R_OFF))
    out = {}
    for name, (z_i, z_j) in PAIRS.items():
        bare = np.asarray(zbl_pair_energy(r, z_i, z_j))
        out[name] = (bare, bare * switch)
    return out


def plot(out_path: Path) -> None:
    r = np.linspace(0.1, 2.5, 400)
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for (name, (bare, switched)), color in zip(curves(r).items(), ("C0", "C1", "C2")):
        ax.plot(r, bare, "--", color=color, lw=1.0, label=f"{name} bare")
        ax.plot(r, np.where(switched > 0, switched, np.nan), "-", color=color, lw=1.8, label=f"{name} switched")
    for x, label in ((R_ON, "r_on"), (R_OFF, "r_off")):
        ax.axvline(x, color="grey", lw=0.8, ls=":")
        ax.text(x, 2e-3, f" {label} = {x} Å", color="grey", fontsize=8, rotation=90, va="bottom")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 3e4)
    ax.set_xlim(0.0, 2.5)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("E_pair (eV)")
    ax.set_title("ZBL screened nuclear repulsion (Ziegler, Biersack, Littmark 1985)", fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax.grid(alpha=0.3, which="both", lw=0.4)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)


def print_table() -> None:
    r = np.asarray(TABLE_R)
    values = curves(r)
    header = f"{'r (Å)':>6} " + " ".join(f"{name + ' bare':>12} {name + ' sw':>12}" for name in PAIRS)
    print(header)
    for k, x in enumerate(r):
        cells = " ".join(f"{bare[k]:12.5g} {sw[k]:12.5g}" for bare, sw in values.values())
        print(f"{x:6.2f} {cells}")


def write_json(path: Path) -> None:
    """The table's values (eV at TABLE_R, Å), with the date and the machine."""
    values = curves(np.asarray(TABLE_R))
    pairs = {name: {"bare_ev": bare.tolist(), "switched_ev": sw.tolist()} for name, (bare, sw) in values.items()}
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu_count": os.cpu_count()}
    meta.update(jax=jax.__version__, device=str(jax.devices()[0]))
    result = {"meta": meta, "r_on_a": R_ON, "r_off_a": R_OFF, "r_a": list(TABLE_R), "pairs": pairs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    plot(args.out)
    print_table()
    write_json(args.json)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB) and {args.json}")


if __name__ == "__main__":
    main()
