"""No behaviour change: the numbers nnpes computes equal values stored before a refactor.

``tests/regression/reference.json`` holds float64 energies and forces of every family (random
weights, seed 0) and of a model trained by ``configs/quickstart.yaml`` (``quickstart_model/``),
on a free-space ethanol frame and a periodic water box. Regenerate them only on purpose, with
``tests/regression/make_reference.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import nnpes

HERE = Path(__file__).resolve().parent / "regression"
sys.path.insert(0, str(HERE))
from make_reference import family_models, predictions, structures  # noqa: E402

REFERENCE = json.loads((HERE / "reference.json").read_text())
SYSTEMS = structures()


def _check(calculator, stored: dict) -> None:
    for name, atoms in SYSTEMS.items():
        got = predictions(calculator, atoms)
        np.testing.assert_allclose(got["energy"], stored[name]["energy"], rtol=1e-12, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(got["forces"], stored[name]["forces"], rtol=1e-9, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("family", sorted(REFERENCE["families"]))
def test_random_weight_family_reproduces_stored_energies_and_forces(family):
    potential = nnpes.Potential.create(
        family_models()[family], [1, 6, 8], cutoff=3.5, seed=0, e0={1: -13.6, 6: -1029.8, 8: -2041.3}, scale=0.7
    )
    _check(nnpes.Calculator(potential, dtype="float64"), REFERENCE["families"][family])


def test_quickstart_trained_model_reproduces_stored_energies_and_forces():
    _check(nnpes.Calculator(nnpes.load(HERE / "quickstart_model"), dtype="float64"), REFERENCE["quickstart"])
