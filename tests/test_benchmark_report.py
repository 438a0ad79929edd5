"""benchmarks/run_all.py and its report, without running a benchmark: the report is rendered from
small fake JSON files in a temporary folder; a failing and a hanging job are tiny Python scripts."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _plan  # noqa: E402
import _report  # noqa: E402
import run_all  # noqa: E402

SPEED = {
    "meta": {"date": "2026-01-01T00:00:00", "cpu_count": 2, "jax": "0.0"},
    "results": [{"case": "peak", "atoms": 0, "status": "ok", "step_ms": 600.0}]
    + [
        {"case": case, "atoms": n, "status": "ok", "edges": 40 * n, "step_ms": k * n, "peak_rss_mb": 700 + n / 10}
        for case, k in (("nnpes-peer", 0.2), ("jaxmd-peer", 0.5))
        for n in (108, 256, 500)
    ],
    "fits": {},
}
FAKE = {
    "speed.json": SPEED,
    "bp_memory.json": {
        "rows": [
            {"n_atoms": n, "n_edges": 180 * n, "min_s": 2e-4 * n, "peak_rss_mb": 700 + n / 20} for n in (256, 500)
        ],
        "time_exponent": 1.0,
        "peak_rss_gb": 0.7,
        "passed": True,
    },
    "accuracy_budget.json": {
        "rows": [
            {
                "molecule": "ethanol",
                "row": "nequip",
                "label": "nnpes NequIP",
                "budget_s": b,
                "status": "ok",
                "forces_mae_mev_per_a": 60 / b**0.5,
                "energy_mae_mev": 5.0,
            }
            for b in (30.0, 60.0)
        ]
    },
    "md.json": {
        "results": [
            {
                "system": "ethanol",
                "atoms": 9,
                "model": "random",
                "dtype": "float64",
                "steps": 4,
                "drift_mev_per_atom_per_ps": 0.01,
                "steps_per_s": 900.0,
                "jax_md_nequip_steps_per_s": 800.0,
                "thermo": {
                    "time_fs": [0, 1, 2],
                    "etot_ev": [-1.0, -1.0, -0.99999],
                    "epot_ev": [-2.0, -1.5, -2.0],
                    "ekin_ev": [1.0, 0.5, 1.0],
                },
            }
        ]
    },
    "families.json": {
        "meta": {"budget_s": 30},
        "results": [
            {
                "family": "nequip",
                "params": 8512,
                "train": {"status": "ok", "steps": 100, "test_forces_mae_mev_per_a": 90.0},
                "speed": {"256": {"status": "ok", "step_ms": 70.0, "compile_s": 5.0}},
            },
            {"family": "jaxmd_bp_sparse", "speed": {"256": {"status": "oom"}}},
        ],
    },
}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    for name, data in FAKE.items():
        (folder / name).write_text(json.dumps(data))
    return folder


def test_report_only_renders_every_section_and_the_plots(results: Path, tmp_path: Path):
    report = tmp_path / "REPORT.md"
    assert run_all.main(["--report-only", "--results", str(results), "--report", str(report)]) == 0
    text = report.read_text()
    for section in _report.SECTIONS:
        assert f"## {section.title}" in text
    for png in ("speed_vs_atoms.png", "memory_vs_atoms.png", "accuracy_budget.png", "md_nve_energy.png"):
        assert (results / png).stat().st_size > 1000
        assert f"results/{png})" in text
    assert "| nequip | 8512 | 100 |" in text  # the families table
    assert "| jaxmd-peer | 108 256 500 | 1.000 |" in text  # the fitted exponent of step time ∝ atoms
    assert "no results. Full-budget command: `.venv/bin/python benchmarks/distributed.py" in text


def test_failed_and_timed_out_jobs_are_reported_and_do_not_stop_the_others(results: Path, tmp_path: Path):
    scripts = {
        "fails.py": "import sys\nprint('working', file=sys.stderr)\nsys.exit('Traceback: it broke')\n",
        "hangs.py": "import time\ntime.sleep(60)\n",
        "works.py": "import pathlib, sys\npathlib.Path(sys.argv[2]).write_text('{}')\n",
    }
    for name, code in scripts.items():
        (tmp_path / name).write_text(code)
    jobs = [
        _plan.Job("fails", f"{tmp_path / 'fails.py'}", 1, 30),
        _plan.Job("hangs", f"{tmp_path / 'hangs.py'}", 1, 1),
        _plan.Job("works", f"{tmp_path / 'works.py'} --json {{results}}/works.json", 1, 30),
        _plan.Job("peers", "peers.py", skip="too long"),
    ]
    for job in jobs:
        record = run_all.run_job(job, "small", results, sys.executable, {"cpu_count": 2})
        run_all.save_record(results, job.name, record)
    log = _report.read_log(results)
    assert log["fails"]["status"] == "failed" and log["fails"]["stderr_tail"][-1] == "Traceback: it broke"
    assert log["hangs"]["status"] == "timeout" and log["hangs"]["wall_s"] < 30
    assert log["works"]["status"] == "ok" and (results / "works.json").is_file()
    assert log["peers"]["status"] == "not run"
    report = tmp_path / "REPORT.md"
    _report.write_report(results, report, "test")
    text = report.read_text()
    assert "| fails | fails.py | failed |" in text and "| hangs | hangs.py | timeout |" in text
    peers = next(line for line in text.splitlines() if line.startswith("- **peers**"))
    assert "not run at this budget (small: too long)" in peers and "benchmarks/peers.py --data rmd17" in peers


def test_every_benchmark_script_is_in_every_plan():
    scripts = _plan.benchmark_scripts()
    assert "speed.py" in scripts and "run_all.py" not in scripts
    for budget in _plan.BUDGETS:
        jobs = _plan.plan(budget)
        assert sorted({job.script for job in jobs}) == scripts, budget
        assert len({job.name for job in jobs}) == len(jobs)
    small = [job for job in _plan.plan("small") if not job.skip]
    assert sum(job.expected_s for job in small) < 30 * 60
    reported = {name for section in _report.SECTIONS for name in section.jobs}
    assert reported == {job.name for job in _plan.FULL}  # every job's numbers appear in some section


@pytest.mark.parametrize("name", ["run_all.py", "_plan.py", "_report.py", "_plots.py", "_tables.py",
                                  "_tables_accuracy.py"])  # fmt: skip
def test_house_rules(name: str):
    source = (BENCHMARKS / name).read_text()
    assert len(source.splitlines()) <= 400
    long = [f.name for f in ast.walk(ast.parse(source)) if isinstance(f, ast.FunctionDef) and
            f.end_lineno - f.lineno + 1 > 80]  # fmt: skip
    assert not long


def test_only_selects_jobs_by_job_or_script_name():
    full = _plan.plan("full")
    assert [job.name for job in run_all.select(full, ["speed"])] == ["speed", "speed_scaling"]
    assert [job.name for job in run_all.select(full, ["finetune_ethanol", "md"])] == ["md", "finetune_ethanol"]
    with pytest.raises(SystemExit):
        run_all.select(full, ["no_such_benchmark"])
