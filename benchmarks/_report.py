"""Render ``benchmarks/REPORT.md`` and its plots from the JSON files in the results folder.

Input: the benchmark scripts' JSON files and ``run_all.json``, the run log that
``benchmarks/run_all.py`` keeps (per job: command, budget, status, date, wall time, machine,
the end of its stderr). A job missing from the log (a JSON file from an earlier run made by
hand) is reported with the date and machine its JSON records, and the full-budget command.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path

import _plots
import _tables as t
import _tables_accuracy as ta
from _plan import BENCHMARKS, display_path, full_job, shell_command

RUN_LOG = "run_all.json"
RUN_ALL = ".venv/bin/python benchmarks/run_all.py"


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the report: its title, the jobs that produce its data, its tables and plots."""

    title: str
    jobs: tuple[str, ...]
    tables: Callable[[t.Load], list[t.Table]]
    plots: Callable[[t.Load, Path], list[str]] = _plots.existing()


SECTIONS: tuple[Section, ...] = (
    Section("Speed vs atoms: energy + forces, nnpes vs jax-md's NequIP", ("speed", "speed_scaling"), t.speed_tables,
            _plots.speed_vs_atoms),
    Section("Memory vs atoms", ("speed", "speed_scaling", "bp_memory"), t.memory_tables, _plots.memory_vs_atoms),
    Section("Accuracy vs training time (rMD17)", ("accuracy",), ta.accuracy_tables, _plots.accuracy_vs_time),
    Section("NVE molecular dynamics: energy conservation and speed", ("md",), t.md_tables, _plots.nve_energy),
    Section("Model families at equal budget", ("families",), ta.families_tables),
    Section("Training throughput", ("train_speed",), t.train_speed_tables),
    Section("The ASE calculator: time per call", ("calculator",), t.calculator_tables),
    Section("Peer frameworks at equal budget", ("peers_quickstart", "peers"), ta.peers_tables),
    Section("Long range: learned charges, Ewald and PME", ("longrange_rigid_ions", "longrange_water_dimers",
                                                          "longrange_timing"), ta.longrange_tables),
    Section("Spatial decomposition", ("distributed",), t.distributed_tables),
    Section("Fine-tuning vs training from scratch", ("finetune", "finetune_methanol", "finetune_ethanol"),
            ta.finetune_tables),
    Section("Active learning with GFN2-xTB labels", ("active_learning",), ta.active_learning_tables),
    Section("Ensemble uncertainty", ("uncertainty_shallow", "uncertainty"), ta.uncertainty_tables,
            _plots.existing("uncertainty_calibration.png", "uncertainty_shallow.png")),
    Section("ZBL pair repulsion", ("zbl_curve",), t.zbl_tables, _plots.existing("zbl_pair_curve.png")),
)  # fmt: skip


def read_log(results: Path) -> dict[str, dict]:
    """The run log's records by job name ({} when there is none)."""
    path = results / RUN_LOG
    return json.loads(path.read_text()).get("jobs", {}) if path.is_file() else {}


def loader(results: Path) -> t.Load:
    """load(file_name): the JSON file in the results folder as a dict, None when missing or unreadable."""
    cache: dict[str, dict | None] = {}

    def load(name: str) -> dict | None:
        if name not in cache:
            try:
                cache[name] = json.loads((results / name).read_text())
            except (OSError, ValueError):
                cache[name] = None
        return cache[name]

    return load


def machine_text(machine: dict | None) -> str:
    """A record's machine as text ("2 CPUs, jax 0.10.2, 1 cpu device(s)"; "machine not recorded" without one)."""
    if not machine:
        return "machine not recorded"
    parts = [f"{machine['cpu_count']} CPUs" if machine.get("cpu_count") else None]
    parts += [f"jax {machine['jax']}" if machine.get("jax") else None, machine.get("device")]
    return ", ".join(p for p in parts if p) or "machine not recorded"


def json_provenance(data: dict, path: Path) -> tuple[str, str]:
    """(date, machine) that a script's JSON records itself, for results not made by run_all.py."""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    date = meta.get("date") or data.get("date")
    if not date:
        date = datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds") + " (file time)"
    host = data.get("host") if isinstance(data.get("host"), dict) else {}
    cpus = meta.get("cpu_count") or data.get("cpus") or host.get("cpus")
    machine = {"cpu_count": cpus, "jax": meta.get("jax"), "device": meta.get("device") or meta.get("backend")}
    text = machine_text(machine)
    if text == "machine not recorded" and isinstance(data.get("machine"), str):
        text = data["machine"]
    return str(date), text


def _earlier_results(name: str, results: Path) -> str | None:
    """The date and machine that the JSON a job writes records, when that JSON exists."""
    job = full_job(name)
    for output in job.outputs if job else ():
        path = results / output
        if output.endswith(".json") and path.is_file():
            try:
                return ", ".join(json_provenance(json.loads(path.read_text()), path))
            except (OSError, ValueError):
                return None
    return None


def _full_command(name: str, results: Path) -> str:
    """The job's full-budget command, writing where a full run writes (benchmarks/results), not ``results``."""
    job = full_job(name)
    return (
        f"`{shell_command(job.argv(results.parent if results.name == 'small' else results, 'python'))}`"
        if job
        else "(no such job)"
    )


def _ran(name: str, record: dict, earlier: str | None) -> list[str]:
    """Lines for a job run_all.py ran: status, budget, date, wall time, machine, command; if it failed, the
    end of its output, and where the numbers shown come from when it wrote none."""
    wall = f"{record['wall_s']:.0f} s" if isinstance(record.get("wall_s"), int | float) else "? s"
    status = record["status"] + (f" ({record['detail']})" if record.get("detail") else "")
    head = f"- **{name}**: {status} · budget {record.get('budget', '?')} · {record.get('started', '?')} · {wall}"
    load = record.get("load_average") or []
    load_text = f" · load average {' → '.join(f'{x:.1f}' for x in load)}" if load else ""
    lines = [head + f" · {machine_text(record.get('machine'))}{load_text}", f"  `{record.get('command', '?')}`"]
    if record["status"] != "ok" and not record.get("wrote_results", True) and earlier:
        lines.append(f"  It wrote no results: the numbers below are from an earlier run ({earlier}).")
    for stream in ("stderr", "stdout") if record["status"] != "ok" else ():
        if record.get(f"{stream}_tail"):
            lines += ["", f"  Last lines of its {stream}:", "", "  ```text"]
            lines += [f"  {line}" for line in record[f"{stream}_tail"]] + ["  ```"]
    return lines


def job_lines(name: str, record: dict | None, results: Path) -> list[str]:
    """The report's lines about one job: what ran, how it went, the command that regenerates it."""
    earlier = _earlier_results(name, results)
    if record is None:
        if earlier:
            return [f"- **{name}**: results of an earlier run not made by run_all.py ({earlier}; budget not "
                    f"recorded). Full-budget command: {_full_command(name, results)}"]  # fmt: skip
        return [f"- **{name}**: no results. Full-budget command: {_full_command(name, results)}"]
    if record["status"] in ("not run", "skipped"):
        what = "not run at this budget" if record["status"] == "not run" else "skipped"
        line = f"- **{name}**: {what} ({record.get('budget', '?')}: {record.get('detail', '')}). "
        line += f"Full-budget command: {_full_command(name, results)}"
        previous = record.get("previous")
        if previous:
            line += f". The numbers below are from its {previous.get('budget', '?')}-budget run"
            line += f" of {previous.get('started', '?')} ({machine_text(previous.get('machine'))})"
        elif earlier:
            line += f". The numbers below are from an earlier run ({earlier})"
        return [line + "."]
    return _ran(name, record, earlier)


def render_section(section: Section, log: dict[str, dict], results: Path, report_dir: Path) -> list[str]:
    """A section's markdown: jobs, tables, plots (a table or plot that fails says so)."""
    lines = [f"## {section.title}", ""]
    for name in section.jobs:
        lines += job_lines(name, log.get(name), results)
    lines.append("")
    load = loader(results)
    try:
        tables = section.tables(load)
    except Exception as error:  # noqa: BLE001 - a JSON of another layout must not stop the report
        lines += [f"Could not read the numbers: `{type(error).__name__}: {error}`", ""]
        tables = []
    for table in tables:
        lines += [table.markdown(), ""]
    if not tables:
        lines += ["No results in the results folder.", ""]
    try:
        pngs = section.plots(load, results)
    except Exception as error:  # noqa: BLE001 - nor a plot that cannot be drawn
        lines += [f"Could not draw the plot: `{type(error).__name__}: {error}`", ""]
        pngs = []
    for png in pngs:
        lines += [f"![{section.title}]({os.path.relpath(results / png, report_dir)})", ""]
    return lines


def overview(log: dict[str, dict]) -> list[str]:
    """A table of every job in the log: status, budget, date, wall and expected time, and the machine's
    load average (1 min) before and after it."""
    if not log:
        return ["No job has been run by run_all.py yet (no run log in the results folder).", ""]
    lines = ["| job | script | status | budget | started | wall (s) | expected (s) | load average |"]
    lines.append("|---|---|---|---|---|---:|---:|---|")
    for name, r in log.items():
        wall = f"{r['wall_s']:.0f}" if isinstance(r.get("wall_s"), int | float) else "–"
        expected = f"{r['expected_s']:.0f}" if r.get("expected_s") else "–"
        load = " → ".join(f"{x:.1f}" for x in r.get("load_average") or []) or "–"
        cells = [name, r.get("script", "?"), r["status"], r.get("budget", "?"), r.get("started", "–"), wall, expected]
        lines.append(f"| {' | '.join(cells)} | {load} |")
    total = sum(r["wall_s"] for r in log.values() if isinstance(r.get("wall_s"), int | float))
    return lines + ["", f"Total wall time of the jobs in the log: {total / 60:.1f} min.", ""]


def write_report(results: Path, report: Path, command: str) -> list[Path]:
    """Write the report (and its plots into the results folder); returns the PNG files it links."""
    results.mkdir(parents=True, exist_ok=True)
    log = read_log(results)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    options = "" if results == BENCHMARKS / "results" else f" --results {display_path(results)}"
    options += "" if report == BENCHMARKS / "REPORT.md" else f" --report {display_path(report)}"
    lines = [
        "# nnpes benchmark report",
        "",
        f"Generated {now} by `{command}`, from the JSON files in `{display_path(results)}/`.",
        f"Rebuild it from those files without rerunning anything: `{RUN_ALL} --report-only{options}`;",
        f"rerun the benchmarks: `{RUN_ALL} --budget small|full [--only NAME ...]{options}`.",
        "Each section lists the jobs behind its numbers: command, budget, date, wall time and machine of each run.",
        "",
    ]
    lines += ["## Jobs", ""] + overview(log)
    for section in SECTIONS:
        lines += render_section(section, log, results, report.parent)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines).rstrip() + "\n")
    text = report.read_text()
    return [results / name for name in os.listdir(results) if name.endswith(".png") and f"/{name})" in text]
