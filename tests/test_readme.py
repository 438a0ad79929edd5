"""Every fenced code block of README.md and docs/*.md works as written, and their links lead somewhere.

The documents are read in the order a reader takes them (``DOCUMENTS``: the README, then the
docs pages it links, in its order; any other page of docs/ after them).

* ```python blocks run in order (over all documents) in one namespace (a reader's session: later blocks use names
  from earlier ones) inside a temporary directory, with ``__name__`` not ``"__main__"``; what a
  block defines is then used (the user model is created, evaluated and trained for a few steps,
  the PhysicsLaws subclass's ``potential`` fixture is called, the jax-md energy is compared with
  the calculator's).
* ```bash blocks are not run (no pip, no venv): every ``nnpes`` command parses with the real
  parser, its config validates, and every input path is in the repository or is written by an
  earlier command of the block. The README's test command is exactly the one ``.ci/run`` runs.
* ```yaml blocks parse (and validate when they look like a config); ```text and plain blocks are
  prose. A block with any other language tag fails: teach this file about it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import math
import os
import re
import shlex
import sys
import traceback
import types
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS_ORDER = ("python_api", "training", "config_reference", "md", "long_range", "trust", "layout", "benchmarks")
DOCUMENTS = [README, *(REPO_ROOT / "docs" / f"{name}.md" for name in DOCS_ORDER)]
DOCUMENTS += sorted(set((REPO_ROOT / "docs").glob("*.md")) - set(DOCUMENTS))
CI_RUN = REPO_ROOT / ".ci" / "run"
ETHANOL_TRAIN = str(resources.files("nnpes.data") / "files" / "ethanol_train.xyz")

PROSE = {"", "text"}  # not code: skipped
LANGUAGES = {"python", "bash", "yaml", "yml"} | PROSE
NNPES = {"nnpes", ".venv/bin/nnpes"}
NOT_RUN = {"python3", ".venv/bin/pip", ".venv/bin/ruff", ".venv/bin/pytest", ".venv/bin/python"}
INPUT_ARGS = ("config", "model", "data", "structure")  # paths a command reads
OUTPUT_ARGS = ("workdir", "json", "plot", "out", "log")  # paths a command writes


@dataclass(frozen=True)
class Block:
    index: int  # 1-based, over all fenced blocks of its document
    lang: str
    line: int  # line number of the opening fence
    text: str
    closed: bool = True
    doc: Path = README

    @property
    def name(self) -> str:
        return str(self.doc.relative_to(REPO_ROOT))

    @property
    def id(self) -> str:
        return f"{self.name}-block-{self.index}-{self.lang or 'plain'}"

    @property
    def first_line(self) -> str:
        return next((s for s in self.text.splitlines() if s.strip()), "")

    def describe(self) -> str:
        return f"{self.id} ({self.name} line {self.line}: {self.first_line!r})"


def readme_blocks(text: str, doc: Path = README) -> list[Block]:
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if lang is None and stripped.startswith("```"):
            lang, start, body = (stripped[3:].split() or [""])[0].lower(), number, []
        elif lang is not None and stripped == "```":
            blocks.append(Block(len(blocks) + 1, lang, start, "\n".join(body) + "\n", doc=doc))
            lang = None
        elif lang is not None:
            body.append(line)
    if lang is not None:
        blocks.append(Block(len(blocks) + 1, lang, start, "\n".join(body) + "\n", closed=False, doc=doc))
    return blocks


BLOCKS = [b for doc in DOCUMENTS for b in readme_blocks(doc.read_text(encoding="utf-8"), doc)]
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python"]


# ----------------------------------------------------------------------------- python blocks


def _new_classes(ns: dict, before: dict, base: type) -> list[type]:
    return [
        v
        for k, v in ns.items()
        if isinstance(v, type) and issubclass(v, base) and v is not base and before.get(k) is not v
    ]


def _check_user_model(block: Block, ns: dict) -> None:
    """The block defines PairModel and trains it under ``if __name__ == "__main__":`` (not run
    here): create a potential from it, evaluate ethanol, and run the block's own ``fit`` call
    (its config, with the step count cut to a few steps) on a few shipped frames."""
    import ase.build

    import nnpes
    from nnpes.data.io import read_frames

    model_cls = ns["PairModel"]
    potential = nnpes.Potential.create(model_cls(), [1, 6, 8], cutoff=4.0)
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.calc = nnpes.Calculator(potential)
    assert math.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (9, 3)

    fit_calls = [
        node
        for node in ast.walk(ast.parse(block.text))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fit"
    ]
    assert len(fit_calls) == 1, "expected one nnpes.train.fit(...) call in the block"
    keywords = {k.arg: k.value for k in fit_calls[0].keywords}
    config = ast.literal_eval(keywords["config"]) if "config" in keywords else {}
    workdir = ast.literal_eval(keywords["workdir"]) if "workdir" in keywords else "runs/pair"
    config.setdefault("training", {}).update(max_steps=5, batch_size=2, progress=False)
    frames = read_frames(ETHANOL_TRAIN, index=":6")
    result = nnpes.train.fit(model_cls(), frames[:4], frames[4:], workdir=workdir, config=config)
    assert result.step == 5
    assert (Path(result.model_dir) / "potential.json").is_file()


def _check_physics_laws(block: Block, ns: dict, before: dict) -> None:
    """The block subclasses PhysicsLaws; its ``potential`` fixture builds a float64 Potential
    (the law suite itself runs in tests/test_testing.py and tests/models/)."""
    import jax

    import nnpes
    from nnpes.testing import PhysicsLaws

    classes = _new_classes(ns, before, PhysicsLaws)
    assert classes, "the block mentions PhysicsLaws but defines no subclass of it"
    for cls in classes:
        fixture = cls.__dict__["potential"]
        function = getattr(fixture, "__wrapped__", fixture)  # pytest's FixtureFunctionDefinition
        potential = function.__get__(cls(), cls)()  # a classmethod, staticmethod or method of cls
        assert isinstance(potential, nnpes.Potential)
        dtypes = {np.dtype(leaf.dtype) for leaf in jax.tree.leaves(potential.params)}
        assert dtypes == {np.dtype("float64")}, f"PhysicsLaws needs a float64 potential, got {dtypes}"


def _check_jax_md(block: Block, ns: dict) -> None:
    """``energy_fn(R, nbrs)`` is the energy nnpes.Calculator gives for ``atoms``."""
    import nnpes

    energy = float(ns["energy_fn"](ns["R"], ns["nbrs"]))
    atoms = ns["atoms"].copy()
    atoms.calc = nnpes.Calculator(ns["potential"])
    np.testing.assert_allclose(energy, atoms.get_potential_energy(), rtol=1e-5, atol=1e-5)


def _run_python_block(block: Block, ns: dict) -> None:
    before = dict(ns)
    if "from pair_model import" in block.text:  # "wherever your model lives": the earlier block's module
        sys.modules["pair_model"] = sys.modules["readme_snippets"]
    code = compile("\n" * block.line + block.text, str(block.doc), "exec")  # tracebacks give the page's lines
    exec(code, ns)
    if re.search(r"^class PairModel\b", block.text, re.M):
        _check_user_model(block, ns)
    if "PhysicsLaws" in block.text:
        _check_physics_laws(block, ns, before)
    if "energy_neighbor_list" in block.text:
        _check_jax_md(block, ns)


@pytest.fixture(scope="module")
def python_block_results(tmp_path_factory) -> dict[int, str | None]:
    """Run the python blocks in order in one namespace inside a temporary directory:
    {block index: None, or the formatted exception}."""
    workdir = tmp_path_factory.mktemp("readme")
    module = types.ModuleType("readme_snippets")  # not "__main__": guarded training is not run
    module.__file__ = str(README)
    sys.modules[module.__name__] = module  # a script's module is in sys.modules (dataclasses, flax need it)
    ns = module.__dict__
    results: dict[int, str | None] = {}
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for block in PYTHON_BLOCKS:
            try:
                _run_python_block(block, ns)
                results[block.index] = None
            except Exception as e:  # recorded; the block's own test reports it
                results[block.index] = "".join(traceback.format_exception(e)[-40:])
    finally:
        os.chdir(cwd)
        del sys.modules[module.__name__]
        sys.modules.pop("pair_model", None)
    return results


# ----------------------------------------------------------------------------- bash blocks


def _commands(block: Block) -> list[list[str]]:
    """The block's commands as argv lists: one per ``&&``-separated part of each line."""
    text = re.sub(r"\\\n", " ", block.text)
    commands = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for part in line.split("&&"):
            argv = shlex.split(part)
            assert argv, f"empty command in {line!r}"
            commands.append(argv)
    return commands


def _parse_nnpes(argv: list[str]) -> argparse.Namespace:
    """Parse like ``nnpes.cli.main``: unknown arguments only as key=value overrides."""
    from nnpes.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args, extra = build_parser().parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"`nnpes {shlex.join(argv)}` does not parse: {stderr.getvalue().strip()}", pytrace=False)
    overrides = [x for x in extra if "=" in x and not x.startswith("-")] if hasattr(args, "overrides") else []
    unknown = [x for x in extra if x not in overrides]
    assert not unknown, f"`nnpes {shlex.join(argv)}`: unrecognised arguments {unknown}"
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *overrides]
    return args


def _check_nnpes_command(argv: list[str], written: list[Path]) -> None:
    from nnpes.errors import ConfigError
    from nnpes.train.config import load_config

    args = _parse_nnpes(argv)
    command = f"`nnpes {shlex.join(argv)}`"
    for name in INPUT_ARGS:
        value = getattr(args, name, None)
        for path in [value] if isinstance(value, str) else value or []:
            p = Path(path)
            made = any(p == w or w in p.parents for w in written)
            assert made or (REPO_ROOT / p).exists(), (
                f"{command}: {name} {path!r} is neither in the repository nor written by an earlier command"
            )
    if args.command in ("train", "config") and args.config is not None:
        try:
            config = load_config(args.config, args.overrides, workdir=getattr(args, "workdir", None))
        except ConfigError as e:
            if not ("file not found" in str(e) and "shared/data" in str(e)):
                raise
            config = _config_without_data(args)  # reference data absent on this machine: the rest still checked
        if args.command == "train":
            workdir = Path(config.workdir)  # resolved: absolute
            written.append(Path(os.path.relpath(workdir, REPO_ROOT)) if workdir.is_absolute() else workdir)
    for name in OUTPUT_ARGS:
        if getattr(args, name, None):
            written.append(Path(getattr(args, name)))


def _config_without_data(args: argparse.Namespace):
    """The config of a ``nnpes train`` command validated without its ``data`` section (whose
    files are in ../shared/data), the work directory resolved as load_config resolves it."""
    from nnpes.train.config import load_config

    raw = yaml.safe_load(Path(args.config).read_text())
    raw.pop("data", None)
    base = Path(args.config).resolve().parent
    workdir = getattr(args, "workdir", None) or str(base / raw.pop("workdir", "runs/default"))
    return load_config(raw=raw, workdir=workdir)


def _check_bash_block(block: Block, monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # paths in commands are relative to the repository root
    written: list[Path] = []
    for argv in _commands(block):
        if argv[0] in NNPES:
            _check_nnpes_command(argv[1:], written)
        elif argv[0] == ".venv/bin/python" and len(argv) > 1 and argv[1].endswith(".py"):
            assert (REPO_ROOT / argv[1]).is_file(), f"{shlex.join(argv)}: {argv[1]} not in the repository"
        else:
            assert argv[0] in NOT_RUN, f"unknown command {argv[0]!r} in {block.describe()}: teach tests/test_readme.py"


# ----------------------------------------------------------------------------- the tests


def test_readme_has_python_blocks():
    assert [b for b in PYTHON_BLOCKS if b.doc == README], (
        "README.md has no ```python block (or the fence parser is broken)"
    )


def test_readme_first_example_is_short():
    """The README's first Python example (model, training, calculator, NVE) stays about 15 lines."""
    first = next(b for b in PYTHON_BLOCKS if b.doc == README)
    lines = [line for line in first.text.splitlines() if line.strip()]
    assert len(lines) <= 16, f"{first.describe()}: {len(lines)} lines"
    for name in ("nnpes.train.fit", "nnpes.Calculator", "nnpes.md.run_md"):
        assert name in first.text, f"{first.describe()} does not show {name}"


def test_every_docs_page_is_linked_from_the_readme():
    readme = README.read_text(encoding="utf-8")
    missing = [p.name for p in DOCUMENTS[1:] if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md links no docs page of {missing}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_lead_to_files(doc):
    """Every relative link or image of the page names a file or folder of the repository (plots
    written by a benchmark run included: they are committed)."""
    in_code, broken = False, []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip().startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"line {number}: {target}")
    assert not broken, f"{doc.relative_to(REPO_ROOT)}: broken links {broken}"


def test_readme_test_command_is_the_ci_command():
    runs_pytest = [
        b for b in BLOCKS if b.doc == README and b.lang == "bash" and any(a[0].endswith("pytest") for a in _commands(b))
    ]
    assert len(runs_pytest) == 1, f"expected one bash block that runs pytest, found {[b.id for b in runs_pytest]}"
    ci_last_line = [line for line in CI_RUN.read_text().splitlines() if line.strip()][-1]
    assert runs_pytest[0].text.strip() == ci_last_line.strip()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, request, monkeypatch):
    assert block.closed, f"{block.describe()}: the fence is never closed"
    if block.lang not in LANGUAGES:
        pytest.fail(f"{block.describe()}: unknown language {block.lang!r}: teach tests/test_readme.py", pytrace=False)
    if block.lang in PROSE:
        pytest.skip("not code")
    if block.lang == "python":
        error = request.getfixturevalue("python_block_results")[block.index]
        if error is not None:
            pytest.fail(f"{block.describe()} raised:\n{error}", pytrace=False)
    elif block.lang == "bash":
        _check_bash_block(block, monkeypatch)
    else:  # yaml
        from nnpes.train.config import load_config

        data = yaml.safe_load(block.text)
        if isinstance(data, dict) and {"data", "model", "training"} & set(data):
            monkeypatch.chdir(REPO_ROOT)
            load_config(raw=data)
