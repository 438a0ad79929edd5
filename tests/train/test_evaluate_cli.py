"""``nnpes evaluate``: metrics per file as JSON (null for labels a file lacks) and a parity plot."""

from __future__ import annotations

import json

from nnpes.cli import main as cli_main


def test_evaluate_cli_writes_json_with_nulls_for_absent_labels(tmp_path, ethanol_test_path):
    import ase.io

    import nnpes

    pot = nnpes.Potential.create(
        nnpes.models.NequIP(channels=4, l_max=1, num_layers=1, radial_features=(8,)), [1, 6, 8], 4.0
    )
    pot.save(tmp_path / "model")
    energies_only = tmp_path / "energies_only.xyz"
    frames = ase.io.read(ethanol_test_path, index=":5")
    for a in frames:
        e = a.get_potential_energy()
        a.calc = None
        a.info["energy"] = e
    ase.io.write(energies_only, frames)
    out = tmp_path / "out.json"
    plot = tmp_path / "parity.png"
    rc = cli_main(
        [
            "evaluate",
            str(tmp_path / "model"),
            ethanol_test_path,
            str(energies_only),
            "--json",
            str(out),
            "--plot",
            str(plot),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    full, partial = result["files"]
    assert full["frames"] == 100 and full["atoms"] == 900
    assert full["forces_mae_mev_per_a"] > 0 and full["stress_mae_mev_per_a3"] is None
    assert partial["energy_mae_mev"] > 0 and partial["forces_mae_mev_per_a"] is None
    assert plot.stat().st_size > 1000
