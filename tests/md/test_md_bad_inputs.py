"""Bad ``nnpes md`` options and inputs: each exits with status 2 and one stderr line naming the
option or file, before anything is compiled; the Python entry points (``run_md``, ``simulation``
→ ``run``, ``run_ase``, ``Calculator``) refuse bad structures the way ``nnpes evaluate`` does."""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pytest

import nnpes
import nnpes.cli
from nnpes import compilation
from nnpes.data.io import frame_from_atoms
from nnpes.errors import DataError, ModelError, NnpesError
from nnpes.md import MDConfig, run_ase, run_md, simulation


@pytest.fixture(scope="module")
def files(chno_potential, ethanol, tmp_path_factory):
    """Paths of a model, a good start structure and bad ones (no model is ever compiled here)."""
    root = tmp_path_factory.mktemp("md_bad_inputs")
    chno_potential.save(root / "model")
    (root / "not_a_model").mkdir()
    chno_potential.save(root / "corrupt")
    (root / "corrupt" / "potential.json").write_text("{not json")
    start = ethanol.copy()
    start.calc = None
    ase.io.write(root / "start.xyz", start)
    overlap = start.copy()
    overlap.positions[1] = overlap.positions[0] + [0.01, 0.0, 0.0]
    ase.io.write(root / "overlap.xyz", overlap)
    ase.io.write(root / "last_bad.xyz", [start, start, overlap])  # only the last frame is used
    fast = start.copy()
    fast.set_velocities(np.full((len(fast), 3), np.nan))
    ase.io.write(root / "nan_velocities.xyz", fast)
    ase.io.write(root / "silicon.xyz", ase.Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    small = start.copy()
    small.set_cell([7.0] * 3)
    small.pbc = True
    small.center()
    ase.io.write(root / "small_cell.xyz", small)
    (root / "empty.xyz").write_text("")
    (root / "garbage.xyz").write_bytes(bytes(range(256)) * 2)
    (root / "text.xyz").write_text("this is not a structure\n")
    return root


# (id, arguments after "md", what the one line must name); {d} is the fixture's folder
CASES = [
    ("dt-zero", "{d}/model {d}/start.xyz --dt 0", "--dt"),
    ("dt-negative", "{d}/model {d}/start.xyz --dt -1", "--dt"),
    ("dt-nan", "{d}/model {d}/start.xyz --dt nan", "--dt"),
    ("steps-zero", "{d}/model {d}/start.xyz --steps 0", "--steps"),
    ("steps-not-a-number", "{d}/model {d}/start.xyz --steps ten", "--steps"),
    ("temperature-negative", "{d}/model {d}/start.xyz --temperature -5", "--temperature"),
    ("temperature-inf", "{d}/model {d}/start.xyz --temperature inf", "--temperature"),
    ("every-zero", "{d}/model {d}/start.xyz --every 0", "--every"),
    ("max-temperature-zero", "{d}/model {d}/start.xyz --max-temperature 0", "--max-temperature"),
    ("pressure-with-nve", "{d}/model {d}/start.xyz --ensemble nve --pressure 5", "--pressure"),
    ("tau-p-with-nvt", "{d}/model {d}/start.xyz --tau-p 500", "--tau-p"),
    ("thermostat-with-npt", "{d}/model {d}/small_cell.xyz --ensemble npt --thermostat langevin", "--thermostat"),
    ("tau-t-zero", "{d}/model {d}/start.xyz --tau-t 0", "--tau-t"),
    ("skin-negative", "{d}/model {d}/start.xyz --skin -0.5", "--skin"),
    ("seed-negative", "{d}/model {d}/start.xyz --seed -1", "--seed"),
    ("ensemble-unknown", "{d}/model {d}/start.xyz --ensemble nph", "--ensemble"),
    ("npt-on-a-molecule", "{d}/model {d}/start.xyz --ensemble npt", "start.xyz"),
    ("jax-md-on-a-small-cell", "{d}/model {d}/small_cell.xyz --backend jax-md", "--backend"),
    ("structure-missing", "{d}/model {d}/missing.xyz", "missing.xyz"),
    ("structure-empty", "{d}/model {d}/empty.xyz", "empty.xyz"),
    ("structure-binary", "{d}/model {d}/garbage.xyz", "garbage.xyz"),
    ("structure-text", "{d}/model {d}/text.xyz", "text.xyz"),
    ("structure-is-a-directory", "{d}/model {d}/not_a_model", "not_a_model"),
    ("atoms-overlap", "{d}/model {d}/overlap.xyz", "overlap.xyz: frame 0: atoms 0 and 1 are closer than 0.1 Å"),
    ("last-frame-overlaps", "{d}/model {d}/last_bad.xyz", "last_bad.xyz: frame 2: atoms 0 and 1"),
    ("velocities-nan", "{d}/model {d}/nan_velocities.xyz", "nan_velocities.xyz"),
    ("element-unknown", "{d}/model {d}/silicon.xyz", "silicon.xyz: frame 0: element Si (Z=14) is not known"),
    ("model-missing", "{d}/no_such_model {d}/start.xyz", "no_such_model"),
    ("model-not-a-model", "{d}/not_a_model {d}/start.xyz", "not_a_model"),
    ("model-corrupt-json", "{d}/corrupt {d}/start.xyz", "potential.json"),
    ("out-folder-missing", "{d}/model {d}/start.xyz --out {d}/no/such/folder/traj.xyz", "--out"),
    ("log-is-a-directory", "{d}/model {d}/start.xyz --log {d}", "--log"),
    ("out-not-extxyz", "{d}/model {d}/start.xyz --out {d}/run.traj", "name the file .xyz"),
]


@pytest.mark.parametrize(("args", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_md_input_is_one_stderr_line_naming_it_before_any_compilation(files, capsys, args, names):
    argv = ["md", *args.format(d=files).split(), *([] if "--steps" in args else ["--steps", "5"])]
    compiled = compilation.count()
    try:
        status = nnpes.cli.main(argv)
    except SystemExit as e:  # argparse's own errors (bad number, unknown choice)
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    assert lines[0].startswith("nnpes md: error: ")
    assert names in lines[0]
    assert "Traceback" not in err
    assert compilation.count() == compiled


@pytest.fixture(scope="module")
def overlapping(ethanol):
    atoms = ethanol.copy()
    atoms.calc = None
    atoms.positions[1] = atoms.positions[0] + [0.01, 0.0, 0.0]
    return atoms


def _evaluate_error(atoms) -> str:
    """What nnpes evaluate's validation (frame_from_atoms) says about a structure."""
    with pytest.raises(DataError) as e:
        frame_from_atoms(atoms, source="ase.Atoms")
    return str(e.value)


@pytest.mark.parametrize("entry", ["run_md", "simulation", "run_ase", "calculator"])
def test_python_entry_points_refuse_overlapping_atoms_like_evaluate(chno_potential, overlapping, entry):
    expected = _evaluate_error(overlapping)
    assert expected == "ase.Atoms: atoms 0 and 1 are closer than 0.1 Å"
    options = MDConfig(ensemble="nve", dtype="float64")
    compiled = compilation.count()
    with pytest.raises(DataError) as e:
        if entry == "run_md":
            run_md(chno_potential, overlapping, 10, options)
        elif entry == "simulation":  # the nnpes.md.run path: run(simulation(...), steps)
            simulation(chno_potential, overlapping, options)
        elif entry == "run_ase":
            run_ase(chno_potential, overlapping, 10, options)
        else:
            atoms = overlapping.copy()
            atoms.calc = nnpes.Calculator(chno_potential, dtype="float64")
            atoms.get_potential_energy()
    assert str(e.value) == expected
    assert compilation.count() == compiled


@pytest.mark.parametrize("entry", ["run_md", "simulation", "run_ase", "calculator"])
def test_python_entry_points_refuse_unknown_element_in_one_line(chno_potential, entry):
    silicon = ase.Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]])
    compiled = compilation.count()
    with pytest.raises(ModelError, match=r"element Si \(Z=14\) is not known to this model") as e:
        if entry == "run_md":
            run_md(chno_potential, silicon, 10, MDConfig(dtype="float64"))
        elif entry == "simulation":
            simulation(chno_potential, silicon, MDConfig(dtype="float64"))
        elif entry == "run_ase":
            run_ase(chno_potential, silicon, 10, MDConfig(dtype="float64"))
        else:
            silicon.calc = nnpes.Calculator(chno_potential, dtype="float64")
            silicon.get_potential_energy()
    assert "\n" not in str(e.value)
    assert compilation.count() == compiled


@pytest.mark.parametrize(
    "atoms",
    [
        ase.Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]),
        ase.Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True),
    ],
    ids=["nan-position", "singular-cell"],
)
def test_run_md_refuses_what_frame_from_atoms_refuses(chno_potential, atoms):
    with pytest.raises(DataError) as e:
        run_md(chno_potential, atoms, 10, MDConfig(ensemble="nve", dtype="float64"))
    assert str(e.value) == _evaluate_error(atoms)


@pytest.mark.parametrize("steps", [-1, 2.5, "10"])
def test_run_md_refuses_steps_that_are_not_a_count(chno_potential, ethanol, steps):
    with pytest.raises(NnpesError, match="steps must be a whole number"):
        run_md(chno_potential, ethanol, steps, MDConfig(dtype="float64"))
