"""Tables of the benchmark report, accuracy side: training under a budget, families, peers,
long range, fine-tuning, active learning, uncertainty. Same conventions as :mod:`_tables`."""

from __future__ import annotations

from _tables import Load, Table, num


def accuracy_tables(load: Load) -> list[Table]:
    """accuracy.py: test MAE per molecule, row and budget."""
    data = load("accuracy_budget.json")
    if not data:
        return []
    heads = ["molecule", "model", "budget (min)", "F MAE (meV/Å)", "E MAE (meV/molecule)", "steps", "epochs", "status"]
    rows = [
        [r.get("molecule", "?"), r.get("label", r.get("row", "?")), num((r.get("budget_s") or 0) / 60, "g")]
        + [num(r.get("forces_mae_mev_per_a"), ".1f"), num(r.get("energy_mae_mev"), ".1f"), num(r.get("steps"), "d")]
        + [num(r.get("epochs"), "d"), r.get("status", "?")]
        for r in sorted(
            data.get("rows", []), key=lambda r: (r.get("molecule", ""), r.get("row", ""), r.get("budget_s"))
        )
    ]
    return [Table("`accuracy_budget.json`, tested on the 1 000 rMD17 test frames:", heads, rows)]


def families_tables(load: Load) -> list[Table]:
    """families.py: each family's accuracy after the same budget and its speed on water boxes."""
    data = load("families.json")
    if not data:
        return []
    rows_in = data.get("results", [])
    sizes = list(dict.fromkeys(n for r in rows_in for n in r.get("speed", {})))
    heads = ["family", "parameters", "steps", "E MAE (meV)", "F MAE (meV/Å)"]
    heads += [f"ms @ {n} atoms" for n in sizes] + [f"compile @ {n} (s)" for n in sizes]
    rows = []
    for r in rows_in:
        train, speed = r.get("train") or {}, r.get("speed", {})
        cells = [speed.get(n, {}) for n in sizes]
        rows.append(
            [r.get("family", "?"), num(r.get("params"), "d"), num(train.get("steps"), "d")]
            + [num(train.get("test_energy_mae_mev"), ".1f"), num(train.get("test_forces_mae_mev_per_a"), ".1f")]
            + [num(c.get("step_ms"), ".1f") if c.get("status") == "ok" else c.get("status", "–")[:40] for c in cells]
            + [num(c.get("compile_s"), ".1f") for c in cells]
        )
    budget = (data.get("meta") or {}).get("budget_s")
    return [Table(f"`families.json` ({num(budget, 'g')} s of training per family):", heads, rows)]


def peers_tables(load: Load) -> list[Table]:
    """peers.py: nnpes, apax and mlip trained under the same budget (peers_quickstart.json, peers.json)."""
    tables = []
    for name in ("peers_quickstart.json", "peers.json"):
        data = load(name)
        if not data:
            continue
        heads = ["framework", "training wall (s)", "steps", "epochs", "E MAE (meV/molecule)", "F MAE (meV/Å)", "status"]
        rows = [
            [r.get("framework", "?"), num(r.get("train_wall_s"), ".0f"), num(r.get("steps"), "d")]
            + [
                num(r.get("epochs"), "d"),
                num(r.get("energy_mae_mev"), ".1f"),
                num(r.get("forces_mae_mev_per_a"), ".1f"),
            ]
            + [str(r.get("status", "?"))[:60]]
            for r in data.get("rows", [])
        ]
        budget = (data.get("meta") or {}).get("budget_s")
        tables.append(Table(f"`{name}` ({num(budget, 'g')} s per framework):", heads, rows))
    return tables


def longrange_tables(load: Load) -> list[Table]:
    """longrange.py: local vs electrostatics accuracy, and the cost of Ewald and PME."""
    heads = ["data", "model", "steps", "E MAE (meV/atom)", "F MAE (meV/Å)", "charge R²", "curve beyond r_c (meV)"]
    rows, tables = [], []
    for name in ("longrange_rigid_ions.json", "longrange_water_dimers.json"):
        for r in (load(name) or {}).get("accuracy", []):
            variant = r.get("variant") or ("charges" if r.get("electrostatics") else "local")
            rows.append(
                [r.get("dataset", "?"), variant, num(r.get("steps"), "d")]
                + [num(r.get("energy_mae_meV_per_atom"), ".3f"), num(r.get("forces_mae_meV_per_A"), ".1f")]
                + [num(r.get("charge_r2"), ".3f"), num(r.get("curve_mae_beyond_rc_meV"), ".2f")]
            )
    if rows:
        tables.append(Table("Accuracy (`longrange_rigid_ions.json`, `longrange_water_dimers.json`):", heads, rows))
    timing = (load("longrange_timing.json") or {}).get("timing", [])
    if timing:
        heads = ["atoms", "network (ms)", "Ewald (ms)", "PME (ms)", "PME vs Ewald ΔE/E"]
        rows = [
            [num(r.get("atoms"), "d"), num(r.get("network_ms"), ".1f"), num(r.get("ewald_ms"), ".1f")]
            + [num(r.get("pme_ms"), ".1f"), num(r.get("pme_relative_error"), ".1e")]
            for r in timing
        ]
        tables.append(Table("Cost of energy + forces (`longrange_timing.json`):", heads, rows))
    return tables


def finetune_tables(load: Load) -> list[Table]:
    """finetune.py: scratch vs fine-tuned, per target molecule."""
    heads = ["molecule", "run", "steps", "final validation F MAE (meV/Å)", "test F MAE (meV/Å)"]
    heads += ["test E MAE (meV/atom)", "steps to scratch's final MAE"]
    rows = []
    for name in ("finetune.json", "finetune_methanol.json", "finetune_ethanol.json"):
        data = load(name)
        for run, r in ((data or {}).get("runs") or {}).items():
            curve, test = r.get("curve") or [{}], r.get("test") or {}
            reached = (data.get("summary") or {}).get(run, {}).get("steps_to_scratch_final", "–")
            rows.append(
                [data.get("molecule", "?"), run, num(data.get("steps"), "d"), num(curve[-1].get("forces_mae"), ".1f")]
                + [num(test.get("forces_mae_mev_per_a"), ".1f"), num(test.get("energy_mae_mev_per_atom"), ".2f")]
                + ["–" if run == "scratch" else "never" if reached is None else str(reached)]
            )
    return [Table("`finetune*.json`:", heads, rows)] if rows else []


def active_learning_tables(load: Load) -> list[Table]:
    """active_learning.py: test error per round, next to the control without new labels."""
    data = load("active_learning.json")
    if not data:
        return []
    control = {r.get("round"): r for r in data.get("control_rounds", [])}
    heads = ["round", "labels", "test F MAE (meV/Å)", "test E MAE (meV)", "mean σ_F over MD (eV/Å)"]
    heads += ["threshold (eV/Å)", "above / MD frames", "labelled", "control: test F MAE (meV/Å)"]
    rows = [
        [num(r.get("round"), "d"), num(r.get("labelled_frames"), "d"), num(r.get("test_forces_mae_mev_per_a"), ".1f")]
        + [num(r.get("test_energy_mae_mev"), ".1f"), num(r.get("mean_force_std_ev_a"), ".3f")]
        + [num(r.get("threshold_ev_a"), ".3f"), f"{r.get('above_threshold', '–')} / {r.get('md_frames', '–')}"]
        + [
            num(r.get("labelled_new"), "d"),
            num(control.get(r.get("round"), {}).get("test_forces_mae_mev_per_a"), ".1f"),
        ]
        for r in data.get("rounds", [])
    ]
    return [Table(f"`active_learning.json` ({num(data.get('wall_s'), '.0f')} s for the rounds):", heads, rows)]


def uncertainty_tables(load: Load) -> list[Table]:
    """uncertainty.py: mean predicted σ in and out of distribution, per ensemble."""
    tables = []
    for name in ("uncertainty_shallow.json", "uncertainty.json"):
        data = load(name)
        if not data:
            continue
        heads = ["set", "frames", "mean σ_E (meV)", "mean σ_F (meV/Å)", "F MAE (meV/Å)", "Spearman"]
        rows = [
            [r.get("set", "?"), num(r.get("frames"), "d"), num(r.get("energy_std_mean_mev"), ".1f")]
            + [num(r.get("forces_std_mean_mev_per_a"), ".1f"), num(r.get("forces_mae_mev_per_a"), ".1f")]
            + [num(r.get("forces_spearman", r.get("scan_spearman")), ".3f")]
            for r in data.get("rows", [])
        ]
        training = data.get("training") or {}
        caption = (
            f"`{name}`: {data.get('label', '?')}, {num(training.get('steps'), 'd')} steps in "
            f"{num(training.get('elapsed_s'), '.0f')} s:"
        )
        tables.append(Table(caption, heads, rows))
    return tables
