"""Where `probation bench realgps` finds the development set by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.realgps import _local_origin, default_data_dir


def test_the_environment_names_the_development_set(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBATION_REALGPS_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_a_clone_of_a_local_repository_looks_beside_that_repository(tmp_path: Path) -> None:
    origin = tmp_path / "work" / "main"
    origin.mkdir(parents=True)
    config = tmp_path / "config"
    config.write_text('[core]\n\tbare = false\n[remote "origin"]\n\turl = '
                      f"{origin}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
                      '[branch "main"]\n\tremote = origin\n')
    assert _local_origin(config) == origin.resolve()
    config.write_text('[remote "origin"]\n\turl = https://example.org/x.git\n')
    assert _local_origin(config) is None
    assert _local_origin(tmp_path / "missing") is None


def test_a_missing_development_set_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from probation.cli import app

    r = CliRunner().invoke(app, ["bench", "realgps", "--data", str(tmp_path / "none"),
                                 "--json", str(tmp_path / "r.json")])
    assert r.exit_code != 0
    assert isinstance(r.exception, SystemExit)
    assert "no development set" in r.output and "PROBATION_REALGPS_DATA" in r.output
    assert "Traceback" not in r.output
