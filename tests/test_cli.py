"""The ``nnpes`` command itself: version, one-line usage errors, the compilation-cache switch."""

from __future__ import annotations

import pytest

from nnpes import compilation
from nnpes.cli import main


def test_nnpes_version_prints_the_package_version(capsys):
    import nnpes

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"nnpes {nnpes.__version__}"


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "config" in err


def test_the_compilation_cache_is_off_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv(compilation.ENV_NO_CACHE, "1")
    assert compilation.enable_persistent_cache(str(tmp_path / "cache")) is None
    assert not (tmp_path / "cache").exists()
