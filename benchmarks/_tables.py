"""Tables of the benchmark report, speed and memory side: each function reads the JSON of one
section (through ``load(file_name) -> dict | None``) and returns :class:`Table` objects.

Every reader uses ``dict.get`` and prints "–" for a missing number, so that a JSON from an older
version of a script, or a small fake one, still gives a table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

Load = Callable[[str], dict | None]


@dataclasses.dataclass
class Table:
    """A markdown table: caption (a line above it), column headers, rows of cell strings."""

    caption: str
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        """The caption, then the table in GitHub markdown (columns of numbers right-aligned)."""
        align = ["---:" if all(_numeric(row[i]) for row in self.rows) else "---" for i in range(len(self.headers))]
        lines = [f"| {' | '.join(self.headers)} |", f"|{'|'.join(align)}|"]
        lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in self.rows]
        return (f"{self.caption}\n\n" if self.caption else "") + "\n".join(lines)


def _numeric(cell: str) -> bool:
    try:
        float(cell.replace(" ", ""))
    except ValueError:
        return cell == "–"
    return True


def num(value: object, spec: str = ".3g") -> str:
    """format(value, spec) for a finite number, "–" for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return format(value, spec)


def fit_exponent(sizes: Sequence[float], values: Sequence[float]) -> float | None:
    """p of values ∝ sizes^p: least squares in log-log (None under two distinct positive sizes)."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(sizes, values) if x and y and x > 0 and y > 0]
    if len({x for x, _ in pairs}) < 2:
        return None
    mean_x, mean_y = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
    sxx = sum((x - mean_x) ** 2 for x, _ in pairs)
    return sum((x - mean_x) * (y - mean_y) for x, y in pairs) / sxx


def fit_line(sizes: Sequence[float], values: Sequence[float]) -> tuple[float, float] | None:
    """(intercept, slope) of a least-squares line (None under two distinct sizes)."""
    if len(set(sizes)) < 2:
        return None
    mean_x, mean_y = sum(sizes) / len(sizes), sum(values) / len(values)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(sizes, values))
    slope /= sum((x - mean_x) ** 2 for x in sizes)
    return mean_y - slope * mean_x, slope


def speed_series(data: dict | None, key: str = "step_ms") -> dict[str, tuple[list[int], list[float]]]:
    """{case: (atoms, values)} of speed.py's ok rows (not "peak"), sorted by atoms."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in sorted((data or {}).get("results", []), key=lambda r: r.get("atoms") or 0):
        if r.get("status") == "ok" and r.get("case") != "peak" and r.get("atoms") and r.get(key) is not None:
            atoms, values = series.setdefault(r["case"], ([], []))
            atoms.append(r["atoms"])
            values.append(r[key])
    return series


def speed_tables(load: Load) -> list[Table]:
    """speed.py's cases per size (speed.json, then scaling.json) and each case's time exponent."""
    tables = []
    for name in ("speed.json", "scaling.json"):
        data = load(name)
        if not data:
            continue
        heads = ["atoms", "case", "edges", "compile (s)", "step (ms)", "ratio vs jax-md", "GFLOP/s", "peak RSS (MB)"]
        rows = [
            [str(r.get("atoms") or "–"), r.get("case", "?"), num(r.get("edges"), "d"), num(r.get("compile_s"), ".1f")]
            + [num(r.get("step_ms"), ".1f"), num(r.get("ratio_vs_jaxmd"), ".2f"), num(r.get("gflop_s"), ".1f")]
            + [num(r.get("peak_rss_mb"), ".0f") if r.get("status") == "ok" else r.get("status", "?")]
            for r in data.get("results", [])
        ]
        tables.append(Table(f"`{name}`:", heads, rows))
        fits = [
            [case, " ".join(map(str, atoms)), num(fit_exponent(atoms, ms), ".3f")]
            for case, (atoms, ms) in speed_series(data).items()
        ]
        tables.append(Table(f"Fitted exponent p of step time ∝ atoms^p (`{name}`):", ["case", "atoms", "p"], fits))
    return tables


def memory_series(load: Load) -> dict[str, tuple[list[int], list[float]]]:
    """{label: (atoms, peak RSS MB)}: speed.py's cases (speed.json, scaling.json) and bp_memory.py's rows."""
    series = {}
    for name in ("speed.json", "scaling.json"):
        for case, points in speed_series(load(name), "peak_rss_mb").items():
            series[f"{case} ({name})"] = points
    bp_rows = sorted((load("bp_memory.json") or {}).get("rows", []), key=lambda r: r.get("n_atoms", 0))
    if bp_rows:
        series["Behler–Parrinello (bp_memory.json)"] = (
            [r["n_atoms"] for r in bp_rows],
            [r["peak_rss_mb"] for r in bp_rows],
        )
    return series


def memory_tables(load: Load) -> list[Table]:
    """Peak RSS per atom count, a line fit per series, and bp_memory.py's time per call."""
    rows = []
    for label, (atoms, rss) in memory_series(load).items():
        line = fit_line(atoms, rss)
        rows.append(
            [label, " ".join(map(str, atoms)), " ".join(num(v, ".0f") for v in rss)]
            + ([num(line[0], ".0f"), num(1024 * line[1], ".1f")] if line else ["–", "–"])
        )
    heads = ["series", "atoms", "peak RSS (MB)", "intercept (MB)", "slope (KB/atom)"]
    tables = [Table("Peak resident memory of the process, compilation included:", heads, rows)] if rows else []
    bp = load("bp_memory.json")
    if bp:
        heads = ["atoms", "edges", "s / call (min)", "µs / atom", "peak RSS (MB)"]
        rows = [
            [str(r.get("n_atoms")), num(r.get("n_edges"), "d"), num(r.get("min_s"), ".4f")]
            + [num(1e6 * r["min_s"] / r["n_atoms"] if r.get("min_s") and r.get("n_atoms") else None, ".1f")]
            + [num(r.get("peak_rss_mb"), ".0f")]
            for r in bp.get("rows", [])
        ]
        caption = (
            f"`bp_memory.json` (cutoff {num(bp.get('cutoff_a'), 'g')} Å): "
            f"time ∝ N^{num(bp.get('time_exponent'), '.3f')}"
            f", peak {num(bp.get('peak_rss_gb'), '.2f')} GB, acceptance {'passed' if bp.get('passed') else 'failed'}:"
        )
        tables.append(Table(caption, heads, rows))
    return tables


def md_tables(load: Load) -> list[Table]:
    """md.py: drift and speed per system, next to jax-md's NequIP."""
    data = load("md.json")
    if not data:
        return []
    heads = ["system", "atoms", "model", "dtype", "dt (fs)", "steps", "drift (meV/atom/ps)", "nnpes (steps/s)"]
    heads += ["ns/day", "jax-md NequIP (steps/s)", "reallocations", "compilations in the timed run"]
    rows = [
        [r.get("system", "?"), str(r.get("atoms")), r.get("model", "?"), r.get("dtype", "?"), num(r.get("dt_fs"), "g")]
        + [num(r.get("steps"), "d"), num(r.get("drift_mev_per_atom_per_ps"), ".3g"), num(r.get("steps_per_s"), ".1f")]
        + [num(r.get("ns_per_day"), ".3f"), num(r.get("jax_md_nequip_steps_per_s"), ".1f")]
        + [num(r.get("neighbor_reallocations"), "d"), num(r.get("compilations_in_timed_run"), "d")]
        for r in data.get("results", [])
    ]
    return [Table("`md.json`:", heads, rows)]


def train_speed_tables(load: Load) -> list[Table]:
    """train_speed.py: one optimizer step, nnpes vs a plain optax loop around jax-md's NequIP."""
    data = load("train_speed.json")
    if not data:
        return []
    heads = ["case", "step (ms)", "frames/s", "ratio vs jax-md", "compile (s)", "peak RSS (MB)", "status"]
    rows = [
        [r.get("case", "?"), num(r.get("step_ms"), ".1f"), num(r.get("frames_per_s"), ".1f")]
        + [num(r.get("ratio_vs_jaxmd"), ".2f"), num(r.get("compile_s"), ".1f"), num(r.get("peak_rss_mb"), ".0f")]
        + [r.get("status", "?")]
        for r in data.get("results", [])
    ]
    batch = (data.get("meta") or {}).get("batch_size")
    return [Table(f"`train_speed.json` (batch {batch}):", heads, rows)]


def calculator_tables(load: Load) -> list[Table]:
    """calculator.py: ms per ASE get_forces() call per model and system, and the test force MAE."""
    data = load("calculator.json")
    if not data:
        return []
    systems = list(dict.fromkeys(s for r in data.get("rows", []) for s in r.get("systems", {})))
    heads = ["model", "F MAE (meV/Å)"] + [f"{s}: call (ms)" for s in systems] + [f"{s}: host (ms)" for s in systems]
    rows = []
    for r in data.get("rows", []):
        cells = [r.get("systems", {}).get(s, {}) for s in systems]
        calls = [num(c.get("call_ms"), ".3g") if c.get("status", "ok") == "ok" else c.get("status", "?") for c in cells]
        rows.append(
            [r.get("name", "?"), num(r.get("forces_mae_mev_per_a"), ".1f")]
            + calls
            + [num(c.get("host_ms"), ".3g") for c in cells]
        )
    return [Table("`calculator.json`:", heads, rows)]


def distributed_tables(load: Load) -> list[Table]:
    """distributed.py: ghosts, bytes and times per decomposition, and the NVE drift run."""
    data = load("distributed.json")
    if not data:
        return []
    heads = ["atoms", "devices", "ghost fraction", "ghost fraction, r_c halo", "payload (B/device)", "wire (B/device)"]
    heads += ["step (ms)", "exchange (ms)", "status"]
    rows = [
        [num(r.get("atoms"), "d"), num(r.get("devices"), "d"), num(r.get("ghost_fraction"), ".2f")]
        + [num(r.get("ghost_fraction_per_layer_halo"), ".2f"), num(r.get("payload_bytes_per_device"), "d")]
        + [num(r.get("wire_bytes_per_device"), "d"), num(r.get("step_ms"), ".0f"), num(r.get("exchange_ms"), ".1f")]
        + [r.get("status", "?")]
        for r in data.get("scaling", [])
    ]
    tables = [Table("`distributed.json`, per force evaluation:", heads, rows)]
    d = data.get("drift") or {}
    if d:
        heads = ["atoms", "devices", "steps", "drift (meV/atom/ps)", "one device (meV/atom/ps)", "steps/s", "status"]
        row = [num(d.get("atoms"), "d"), num(d.get("devices"), "d"), num(d.get("steps"), "d")]
        row += [
            num(d.get("drift_mev_per_atom_per_ps"), ".3g"),
            num(d.get("drift_one_device_mev_per_atom_per_ps"), ".3g"),
        ]
        tables.append(Table("NVE run:", heads, [row + [num(d.get("steps_per_s"), ".2f"), d.get("status", "?")]]))
    return tables


def zbl_tables(load: Load) -> list[Table]:
    """zbl_curve.py: the pair energies (eV) at a few distances, bare and switched."""
    data = load("zbl_curve.json")
    if not data:
        return []
    pairs = data.get("pairs", {})
    heads = ["r (Å)"] + [f"{name} {kind} (eV)" for name in pairs for kind in ("bare", "switched")]
    rows = [
        [num(r, "g")] + [num(p[key][i], ".4g") for p in pairs.values() for key in ("bare_ev", "switched_ev")]
        for i, r in enumerate(data.get("r_a", []))
    ]
    caption = f"`zbl_curve.json` (switch from {data.get('r_on_a')} to {data.get('r_off_a')} Å):"
    return [Table(caption, heads, rows)]
