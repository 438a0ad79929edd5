"""Run every benchmark script at a budget, one after another, then write the report.

    .venv/bin/python benchmarks/run_all.py --budget small          # about 25 min on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --budget full           # docs/benchmarks.md's commands, hours
    .venv/bin/python benchmarks/run_all.py --budget small --only md bp_memory
    .venv/bin/python benchmarks/run_all.py --report-only           # rebuild REPORT.md and the plots
    .venv/bin/python benchmarks/run_all.py --budget small --list   # the plan and its expected times

Each job (``benchmarks/_plan.py``: a script and its arguments at that budget) runs as a
subprocess at the repository root under its own timeout; its stdout and stderr go to
``RESULTS/logs/JOB.stdout|stderr``. A failed or timed-out job does not stop the others: the run
log ``RESULTS/run_all.json`` records its status and the end of its stderr, which the report
shows. Jobs that cannot fit the budget, or whose requirements are missing, are recorded as "not
run" / "skipped" with the reason. Then ``benchmarks/_report.py`` writes ``benchmarks/REPORT.md``
and its plots (``RESULTS/*.png``) from the JSON files and the run log. ``--only NAME ...`` runs a
subset (job names, or script names without ``.py``: ``speed`` is both speed.py jobs at the full
budget); ``--results DIR`` and ``--report PATH`` move the results folder (default: ``benchmarks/results``
for the full budget, ``benchmarks/results/small`` for the small one) and the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _plan import BENCHMARKS, BUDGETS, ROOT, Job, fill, missing_needs, plan, shell_command  # noqa: E402
from _report import RUN_LOG, read_log, write_report  # noqa: E402

TAIL_LINES = 20  # lines of a job's stderr kept in the run log


def machine(python: str) -> dict:
    """CPU count, jax version and default device of the interpreter the jobs run with."""
    probe = (
        "import jax; d = jax.devices()[0]; kind = '' if d.device_kind == 'cpu' else f', {d.device_kind}'; "
        "print(jax.__version__); print(f'{jax.device_count()} {d.platform} device(s){kind}')"
    )
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
        jax_version, device = out.stdout.split("\n")[:2]
    except (OSError, subprocess.SubprocessError, ValueError):
        jax_version, device = None, None
    return {"cpu_count": os.cpu_count(), "jax": jax_version, "device": device}


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last non-empty lines of a log file."""
    if not path.is_file():
        return []
    text = path.read_text(errors="replace").replace("\r", "\n")
    return [line.rstrip()[:300] for line in text.splitlines() if line.strip()][-lines:]


def run_command(argv: list[str], timeout_s: float, log: Path) -> tuple[int | None, float]:
    """Run a command at the repository root, output to LOG.stdout / LOG.stderr; (exit status or None
    when it timed out, wall seconds). On timeout its whole process group is stopped (TERM, then KILL)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(f"{log}.stdout", "w") as out, open(f"{log}.stderr", "w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s), time.perf_counter() - start
        except subprocess.TimeoutExpired:
            for sig, grace_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=grace_s)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            return None, time.perf_counter() - start


def run_job(job: Job, budget: str, results: Path, python: str, host: dict) -> dict:
    """Run one job (its preparation first); its run-log record."""
    argv = job.argv(results, python)
    record = {"script": Path(job.script).name, "budget": budget, "command": shell_command(argv)}
    if job.skip:
        return record | {"status": "not run", "detail": job.skip}
    missing = missing_needs(job)
    if missing:
        return record | {"status": "skipped", "detail": "; ".join(missing)}
    record |= {"expected_s": job.expected_s, "timeout_s": job.timeout_s, "machine": host}
    record["started"] = datetime.datetime.now().isoformat(timespec="seconds")
    record["load_average"] = [round(os.getloadavg()[0], 2)]
    for folder in job.clean:
        shutil.rmtree(ROOT / fill(folder, results), ignore_errors=True)
    logs, start, wall_s = results / "logs", time.time(), 0.0
    for i, (creates, command) in enumerate(job.prepare):
        if not (ROOT / creates).exists():
            prepare_log = logs / f"{job.name}.prepare{i}"
            code, seconds = run_command([python, *shlex.split(command)], job.timeout_s - wall_s, prepare_log)
            wall_s += seconds
            if code != 0:
                tail = log_tail(Path(f"{prepare_log}.stderr"))
                record |= {"wall_s": wall_s, "returncode": code}
                return record | {"status": "failed", "detail": f"preparing {creates}", "stderr_tail": tail}
    code, seconds = run_command(argv, max(job.timeout_s - wall_s, 1.0), logs / job.name)
    record |= {"wall_s": wall_s + seconds, "returncode": code, "stderr_tail": log_tail(logs / f"{job.name}.stderr")}
    record["stdout_tail"] = log_tail(logs / f"{job.name}.stdout", 5)
    record["load_average"].append(round(os.getloadavg()[0], 2))
    stale = [name for name in job.outputs if not (results / name).is_file() or (results / name).stat().st_mtime < start]
    record["wrote_results"] = bool(job.outputs) and not stale
    if code is None:
        return record | {"status": "timeout", "detail": f"stopped after {job.timeout_s:.0f} s"}
    if code != 0:
        written = "; it wrote its results, which the report shows" if record["wrote_results"] else ""
        return record | {"status": "failed", "detail": f"exit status {code}{written}"}
    if stale:
        return record | {"status": "failed", "detail": f"did not write {', '.join(stale)}"}
    return record | {"status": "ok"}


def save_record(results: Path, name: str, record: dict) -> None:
    """Put a job's record into the run log. A "not run"/"skipped" record keeps the job's last real run
    (as "previous"), whose numbers are still those in the results folder."""
    log = read_log(results)
    old = log.get(name)
    if record["status"] in ("not run", "skipped") and old:
        previous = old if old["status"] not in ("not run", "skipped") else old.get("previous")
        if previous:
            record["previous"] = {k: v for k, v in previous.items() if k != "previous"}
    log[name] = record
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / f"{RUN_LOG}.tmp"
    tmp.write_text(json.dumps({"jobs": log}, indent=1))
    os.replace(tmp, results / RUN_LOG)


def select(jobs: list[Job], only: list[str] | None) -> list[Job]:
    """The jobs named (by job name or script name without .py), all without --only."""
    if not only:
        return jobs
    unknown = set(only) - {job.name for job in jobs} - {Path(job.script).stem for job in jobs}
    if unknown:
        raise SystemExit(f"--only: no job or script named {', '.join(sorted(unknown))}")
    return [job for job in jobs if job.name in only or Path(job.script).stem in only]


def print_plan(jobs: list[Job], budget: str, results: Path) -> None:
    """The plan: each job's command, expected and maximum time, or why it does not run."""
    for job in jobs:
        what = f"not run: {job.skip}" if job.skip else f"~{job.expected_s:.0f} s (timeout {job.timeout_s:.0f} s)"
        print(f"{job.name:24s} {what}\n    {shell_command(job.argv(results, 'python'))}")
    total = sum(job.expected_s for job in jobs if not job.skip)
    print(f"\n{budget} budget: {len(jobs)} jobs, expected {total / 60:.0f} min in all")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=BUDGETS, default="small")
    p.add_argument("--only", nargs="+", metavar="NAME", help="job or script names (e.g. speed md bp_memory)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the JSON files present")
    p.add_argument("--list", action="store_true", help="print the plan and stop")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results folder (default: benchmarks/results for the full budget, benchmarks/results/small for the "
        "small one, so a small run never overwrites the full-budget numbers docs/benchmarks.md quotes)",
    )
    p.add_argument("--report", type=Path, default=BENCHMARKS / "REPORT.md", help="the report to write")
    p.add_argument("--python", default=sys.executable, help="interpreter the jobs run with")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every job's timeout (a busy machine)")
    args = p.parse_args(argv)
    results = args.results or BENCHMARKS / "results" / ("small" if args.budget == "small" else "")
    results, report = results.resolve(), args.report.resolve()
    command = shell_command([args.python, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)])
    jobs = [dataclasses.replace(job, timeout_s=job.timeout_s * args.timeout_scale) for job in plan(args.budget)]
    jobs = select(jobs, args.only)
    if args.list:
        print_plan(jobs, args.budget, results)
        return 0
    failed = []
    if not args.report_only:
        host = machine(args.python)
        for job in jobs:
            print(f"[{datetime.datetime.now():%H:%M:%S}] {job.name} ...", file=sys.stderr, flush=True)
            record = run_job(job, args.budget, results, args.python, host)
            save_record(results, job.name, record)
            wall = f" in {record['wall_s']:.0f} s" if "wall_s" in record else ""
            print(f"    {record['status']}{wall} {record.get('detail', '')}", file=sys.stderr, flush=True)
            failed += [job.name] if record["status"] in ("failed", "timeout") else []
    pngs = write_report(results, report, command)
    print(f"wrote {report} ({len(pngs)} plots)" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
