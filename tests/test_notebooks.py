"""Every notebook in notebooks/ runs top to bottom in a fresh Jupyter kernel, shortened.

A notebook's first code cell is tagged ``parameters`` and sets ``QUICK = False``; its later
cells pick their sizes from it (``TRAIN_STEPS = 30 if QUICK else 2000``). Under test a cell
``QUICK = True`` is inserted after it: fewer steps, the same code path. Each notebook must draw
at least one figure, must not read anything outside the package (no ``../shared``), and is
committed without outputs (small diffs; running it makes them).
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
QUICK_CELL = "QUICK = True  # inserted by tests/test_notebooks.py: fewer steps, same code path"
CELL_TIMEOUT_S = 900  # a hung kernel fails the test instead of the CI run


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def quick_copy(nb):
    """``nb`` with ``QUICK = True`` set right after its parameters cell."""
    nb = nbformat.from_dict(nb)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(QUICK_CELL)
    cell["id"] = "injected-quick"
    nb.cells.insert(index + 1, cell)
    return nb


def execute(nb, cwd: Path):
    """Run ``nb`` in a fresh python3 kernel with ``cwd`` as its working directory; the executed notebook."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(cwd)}}
    )
    return client.execute()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, f"{path.name}: cells {with_outputs} carry outputs; commit it stripped"
    first = _code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: first code cell is not tagged parameters"
    assert "QUICK = False" in first.source, f"{path.name}: the parameters cell does not set QUICK = False"
    source = "\n".join(c.source for c in nb.cells)
    assert "shared/data" not in source and "../shared" not in source, f"{path.name} reads data outside the package"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), f"{path.name}: no title"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_quick(path, tmp_path):
    nb = quick_copy(nbformat.read(path, as_version=4))
    start = time.perf_counter()
    executed = execute(nb, tmp_path)
    seconds = time.perf_counter() - start
    figures = [o for c in _code_cells(executed) for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures, f"{path.name} drew no figure"
    print(f"{path.name}: {seconds:.1f} s quick, {len(figures)} figures")
