"""What ``benchmarks/run_all.py`` runs at each budget: one :class:`Job` per command, in order.

``full`` holds the commands docs/benchmarks.md documents for its published numbers (with ``--json`` and
work directories pointed at the results folder, so that ``--results DIR`` moves everything);
``small`` the cheapest arguments that still give a meaningful number, about 25 minutes on 2 CPU
cores in all. A script that cannot fit the small budget is still listed, as a job with a
``skip`` reason, so that the report says "not run at this budget" and gives its full command.
In arguments, ``{results}`` stands for the results folder; other paths are relative to the
repository root, where every job runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
PEER_VENVS = ROOT.parent / "peer-venvs"
BUDGETS = ("small", "full")
NOT_BENCHMARKS = frozenset({"run_all.py"})  # and every module whose name starts with "_"


@dataclasses.dataclass(frozen=True)
class Job:
    """One command of a benchmark script.

    name: unique key (the run log's and the report's); command: the script's file name in
    benchmarks/ and its arguments, as typed ("{results}" stands for the results folder);
    expected_s / timeout_s: its expected and its maximum wall time, s; needs: requirements
    checked before it runs ("tblite", "apax", "mlip"); prepare: (path it creates, command after
    the interpreter) pairs, run first when the path is missing; clean: folders deleted before it
    runs (a stale training run would resume); skip: why it does not run at this budget (None: it
    runs).
    """

    name: str
    command: str
    expected_s: float = 0.0
    timeout_s: float = 600.0
    needs: tuple[str, ...] = ()
    prepare: tuple[tuple[str, str], ...] = ()
    clean: tuple[str, ...] = ()
    skip: str | None = None

    @property
    def script(self) -> str:
        """The script's file name (or path)."""
        return shlex.split(self.command)[0]

    @property
    def outputs(self) -> tuple[str, ...]:
        """The files it writes in the results folder: the values of its --json, --plot and --out."""
        words = shlex.split(self.command)
        values = [b for a, b in zip(words, words[1:]) if a in ("--json", "--plot", "--out")]
        return tuple(v.removeprefix("{results}/") for v in values if v.startswith("{results}/"))

    def argv(self, results: Path, python: str) -> list[str]:
        """The command line, with {results} filled in."""
        script, *args = shlex.split(self.command)
        path = Path(script) if os.path.isabs(script) else BENCHMARKS / script
        return [python, str(path), *(fill(a, results) for a in args)]


def fill(text: str, results: Path) -> str:
    """{results} replaced by the results folder, relative to the repository root when inside it."""
    return text.replace("{results}", display_path(results))


def display_path(path: Path | str) -> str:
    """A path relative to the repository root when it lies inside it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def shell_command(argv: list[str]) -> str:
    """The command as one would type it at the repository root (.venv/bin/python, relative paths)."""
    shown = [".venv/bin/python" if i == 0 else display_path(a) if os.path.isabs(a) else a for i, a in enumerate(argv)]
    return shlex.join(shown)


def missing_needs(job: Job) -> list[str]:
    """The requirements of a job that this machine lacks, as phrases for the report."""
    missing = []
    for need in job.needs:
        if need == "tblite" and importlib.util.find_spec("tblite") is None:
            missing.append("tblite is not installed (pip install 'nnpes[learn]')")
        elif need in ("apax", "mlip") and not (PEER_VENVS / need / "bin" / "python").is_file():
            missing.append(f"the {need} virtualenv {PEER_VENVS / need} is missing (see peers.py)")
    return missing


def benchmark_scripts() -> list[str]:
    """Every benchmark script in benchmarks/ (not run_all.py, not the _modules)."""
    return sorted(
        p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.name not in NOT_BENCHMARKS
    )


def plan(budget: str) -> list[Job]:
    """The jobs of a budget, in the order they run."""
    if budget not in BUDGETS:
        raise ValueError(f"budget {budget!r}: one of {BUDGETS}")
    return list(SMALL if budget == "small" else FULL)


def full_job(name: str) -> Job | None:
    """The full budget's job of that name (the command a report gives for a job not run)."""
    return next((job for job in FULL if job.name == name), None)


_R = "{results}"
_QUICKSTART = ("runs/quickstart/model", "-m nnpes train configs/quickstart.yaml --workdir runs/quickstart")
_WATER = ("runs/water/model", "-m nnpes train configs/water.yaml --workdir runs/water training.time_budget_s=420")
_NNPES_ROWS = (
    "--nnpes 'rmd17;configs/rmd17_ethanol.yaml'"
    " --nnpes 'fast;configs/rmd17_ethanol.yaml;model.channels=16;model.num_layers=2'"
    " --nnpes 'fast-rc4;configs/rmd17_ethanol.yaml;model.channels=16;model.num_layers=2;model.cutoff=4.0'"
)

FULL: tuple[Job, ...] = (
    Job("zbl_curve", f"zbl_curve.py --out {_R}/zbl_pair_curve.png --json {_R}/zbl_curve.json", 20, 300),
    Job("bp_memory", f"bp_memory.py --json {_R}/bp_memory.json", 240, 1800),
    Job("train_speed", f"train_speed.py --steps 20 --json {_R}/train_speed.json", 120, 3600),
    Job(
        "speed",
        f"speed.py --sizes 256 2048 --rounds 2 --repeats 5 --memory-gb 20 --markdown --json {_R}/speed.json",
        1200,
        5400,
    ),
    Job(
        "speed_scaling",
        "speed.py --cases peak nnpes-default --sizes 2048 8788 32000 108000 --memory-gb 16 --repeats 3 --markdown"
        f" --json {_R}/scaling.json",
        900,
        5400,
    ),
    Job(
        "md",
        "md.py --system-model ethanol=runs/quickstart/model --system-model water192=runs/water/model"
        f" --dtype float64 --dt 0.5 --json {_R}/md.json",
        1200,
        3600,
        prepare=(_QUICKSTART, _WATER),
    ),
    Job("families", f"families.py --budget-s 120 --json {_R}/families.json", 720, 3600),
    Job(
        "longrange_rigid_ions",
        f"longrange.py --datasets rigid_ions --budget-s 300 --sizes --json {_R}/longrange_rigid_ions.json",
        660,
        2400,
    ),
    Job(
        "longrange_water_dimers",
        f"longrange.py --datasets water_dimers --budget-s 150 --sizes --json {_R}/longrange_water_dimers.json",
        500,
        2400,
    ),
    Job("longrange_timing", f"longrange.py --skip-training --json {_R}/longrange_timing.json", 600, 3600),
    Job("finetune", f"finetune.py --workdir {_R}/finetune --json {_R}/finetune.json", 420, 3600),
    Job(
        "finetune_methanol",
        f"finetune.py --molecule methanol --reuse-base --workdir {_R}/finetune --json {_R}/finetune_methanol.json",
        360,
        3600,
    ),
    Job(
        "finetune_ethanol",
        f"finetune.py --molecule ethanol --reuse-base --workdir {_R}/finetune --json {_R}/finetune_ethanol.json",
        360,
        3600,
    ),
    Job("active_learning", f"active_learning.py --fresh --json {_R}/active_learning.json", 400, 3600, ("tblite",)),
    Job(
        "uncertainty_shallow",
        "uncertainty.py --config configs/rmd17_ethanol_shallow.yaml --workdir runs/uncertainty_shallow"
        f" --json {_R}/uncertainty_shallow.json --plot {_R}/uncertainty_shallow.png",
        240,
        3600,
        clean=("runs/uncertainty_shallow",),
    ),
    Job(
        "uncertainty",
        f"uncertainty.py --compare {_R}/uncertainty_shallow.json --json {_R}/uncertainty.json"
        f" --plot {_R}/uncertainty_calibration.png",
        300,
        3600,
        clean=("runs/uncertainty",),
    ),
    Job(
        "peers_quickstart",
        f"peers.py --budget-s 180 --workdir {_R}/peers_quickstart --json {_R}/peers_quickstart.json",
        1200,
        5400,
    ),
    Job(
        "peers",
        f"peers.py --data rmd17 --budget-s 600 {_NNPES_ROWS} --workdir {_R}/peers --json {_R}/peers.json",
        3600,
        9000,
    ),
    Job(
        "calculator",
        f"calculator.py --peers-dir {_R}/peers --random --calls 200 --json {_R}/calculator.json",
        600,
        3600,
    ),
    Job(
        "accuracy",
        f"accuracy.py --workdir {_R}/accuracy --json {_R}/accuracy_budget.json --plot {_R}/accuracy_budget.png",
        14400,
        21600,
    ),
    Job("distributed", f"distributed.py --json {_R}/distributed.json", 1800, 7200),
)

_FULL = {job.name: job for job in FULL}


def _small(name: str, command: str, expected_s: float, timeout_s: float, **changes) -> Job:
    """The full job of that name with the small budget's command and times."""
    return dataclasses.replace(_FULL[name], command=command, expected_s=expected_s, timeout_s=timeout_s, **changes)


def _not_run(name: str, reason: str) -> Job:
    """The full job of that name, marked as not run at the small budget."""
    return dataclasses.replace(_FULL[name], skip=reason, expected_s=0.0)


SMALL: tuple[Job, ...] = (
    _small("zbl_curve", _FULL["zbl_curve"].command, 15, 120),
    _small("bp_memory", f"bp_memory.py --sizes 1000 2000 4000 --json {_R}/bp_memory.json", 30, 300),
    _small("train_speed", f"train_speed.py --steps 5 --warmup 1 --json {_R}/train_speed.json", 45, 300),
    _small(
        "speed",
        "speed.py --cases peak nnpes-default nnpes-peer jaxmd-peer --sizes 108 256 500 --repeats 3 --memory-gb 8"
        f" --json {_R}/speed.json",
        150,
        600,
    ),
    _small("md", f"md.py --steps 200 --every 10 --json {_R}/md.json", 180, 500, prepare=()),
    _small("calculator", f"calculator.py --random --calls 20 --json {_R}/calculator.json", 90, 400),
    _small("families", f"families.py --budget-s 30 --atoms 256 --repeats 2 --json {_R}/families.json", 200, 600),
    _small(
        "accuracy",
        "accuracy.py --molecules ethanol --rows nequip --budgets 30 60 --slack-s 120"
        f" --workdir {_R}/accuracy --json {_R}/accuracy_budget.json --plot {_R}/accuracy_budget.png",
        170,
        600,
    ),
    _small(
        "longrange_rigid_ions",
        f"longrange.py --datasets rigid_ions --budget-s 45 --sizes --json {_R}/longrange_rigid_ions.json",
        130,
        400,
    ),
    _small(
        "longrange_timing",
        f"longrange.py --skip-training --sizes 192 1536 --repeats 2 --json {_R}/longrange_timing.json",
        40,
        300,
    ),
    _small(
        "finetune",
        "finetune.py --steps 200 --train-frames 50 --factors 1 --reuse-base"
        f" --workdir {_R}/finetune --json {_R}/finetune.json",
        150,
        600,
    ),
    _small(
        "active_learning",
        f"active_learning.py --rounds 2 --fresh --workdir {_R}/active_learning/run --json {_R}/active_learning.json",
        180,
        600,
    ),
    _small(
        "uncertainty",
        f"uncertainty.py --budget 45 --workdir {_R}/uncertainty_run --json {_R}/uncertainty.json"
        f" --plot {_R}/uncertainty_calibration.png",
        120,
        500,
        clean=(f"{_R}/uncertainty_run",),
    ),
    _not_run("longrange_water_dimers", "three trainings of 150 s; the rigid-ion pair shows the learned charges"),
    _not_run("finetune_methanol", "one fine-tuning target at this budget (malonaldehyde)"),
    _not_run("finetune_ethanol", "one fine-tuning target at this budget (malonaldehyde)"),
    _not_run("uncertainty_shallow", "the deep ensemble only at this budget"),
    _not_run(
        "speed_scaling", "8 788 to 108 000 atoms take 10 s to 2 min per call; speed.py's small sizes fit the exponent"
    ),
    _not_run("peers", "apax's and mlip's trainings, start-up and test predictions take over 10 minutes"),
    _not_run("peers_quickstart", "apax's and mlip's trainings, start-up and test predictions take over 10 minutes"),
    _not_run(
        "distributed",
        "forced host devices share the 2 cores: the decomposed boxes and the NVE run take over 10 minutes",
    ),
)
