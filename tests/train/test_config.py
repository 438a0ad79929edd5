"""Training configs: one-line errors naming the key or file, overrides, shipped configs, the docs."""

from __future__ import annotations

import os

import jax
import pytest

from nnpes.cli import main as cli_main
from nnpes.errors import ConfigError, DataError
from nnpes.train import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "section, patch, expected",
    [
        ("training", {"batchsize": 4}, "unknown key 'training.batchsize'"),
        ("optimizer", {"learning_rate": "fast"}, "optimizer.learning_rate"),
        ("optimizer", {"name": "sgdd"}, "'adam', 'adamw' or 'amsgrad'"),
        ("training", {"batch_size": 0}, "training.batch_size"),
        ("model", {"chanels": 8}, "unknown key 'model.chanels'"),
        ("data", {"trian": "x.xyz"}, "unknown key 'data.trian'; allowed: "),
    ],
)
def test_config_error_names_the_key(tiny_config, write, section, patch, expected):
    cfg = tiny_config(**{section: patch})
    with pytest.raises(ConfigError) as err:
        load_config(write(cfg))
    msg = str(err.value)
    assert expected in msg and "\n" not in msg


def test_config_missing_data_file_names_the_file(tmp_path, tiny_config, write):
    cfg = tiny_config(data={"train": str(tmp_path / "nope.xyz")})
    with pytest.raises(ConfigError, match=r"data\.train: file not found: .*nope\.xyz"):
        load_config(write(cfg))


def test_config_label_missing_from_data_names_file_frame_and_label(tiny_config):
    from nnpes.train.setup import load_datasets

    cfg = load_config(raw=tiny_config(loss={"stress_weight": 1.0}))
    with pytest.raises(DataError, match=r"ethanol10\.xyz: frame 0: label 'stress'"):
        load_datasets(cfg)


def test_cli_prints_config_error_as_one_line(tiny_config, write, capsys):
    cfg = tiny_config(training={"bogus": 1})
    assert cli_main(["train", write(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "training.bogus" in err


def test_cli_reports_a_missing_data_section_as_one_line_naming_the_key(tiny_config, write, capsys):
    cfg = tiny_config()
    del cfg["data"]
    assert cli_main(["train", write(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing required key 'data.train'" in err


def test_float64_without_64_bit_jax_is_a_one_line_config_error(tiny_config):
    from nnpes.train import train

    cfg = load_config(raw=tiny_config(dtype="float64"))
    with jax.enable_x64(False):
        assert not jax.config.jax_enable_x64
        with pytest.raises(ConfigError, match="jax_enable_x64") as err:
            train(cfg)
    assert "\n" not in str(err.value)


def test_overrides_and_workdir_win(tmp_path, tiny_config, write):
    cfg = load_config(
        write(tiny_config()), ["training.batch_size=3", "optimizer.name=adamw"], workdir=str(tmp_path / "elsewhere")
    )
    assert cfg.training.batch_size == 3 and cfg.optimizer.name == "adamw"
    assert cfg.workdir == str(tmp_path / "elsewhere")


def test_every_shipped_config_validates():
    configs = sorted(p for p in os.listdir(os.path.join(ROOT, "configs")) if p.endswith(".yaml"))
    assert "quickstart.yaml" in configs
    for name in configs:
        if name.startswith("learn_"):  # nnpes learn configs: tests/learn validates them
            continue
        try:
            cfg = load_config(os.path.join(ROOT, "configs", name))
        except ConfigError as e:
            if "file not found" in str(e) and "shared/data" in str(e):
                continue  # reference data absent on this machine
            raise
        assert cfg.build_model() is not None


def test_docs_config_reference_is_generated_from_the_config_classes():
    from nnpes.train.config_reference import reference_markdown

    with open(os.path.join(ROOT, "docs", "config_reference.md")) as f:
        page = f.read()
    assert reference_markdown() in page, (
        "docs/config_reference.md is stale: regenerate it with `nnpes config` (the block between its markers)"
    )


def test_labels_the_loss_ignores_are_warned_about_in_one_line(tiny_config, write, shared_data):
    from nnpes.data.io import read_frames
    from nnpes.errors import LabelWarning
    from nnpes.train.setup import warn_untrained_labels

    frames = read_frames(shared_data / "ci" / "si_small.xyz", index=":4")  # energies, forces and stresses
    with pytest.warns(LabelWarning) as caught:
        warn_untrained_labels(load_config(write(tiny_config())), frames)  # stress_weight: 0 (the default)
    assert [str(w.message) for w in caught] == [
        "4 of 4 training frames carry stress, but loss.stress_weight is 0: stress is not trained "
        "(set loss.stress_weight, e.g. 100)"
    ]
    assert warn_untrained_labels(load_config(write(tiny_config(loss={"stress_weight": 10.0}))), frames) == []
