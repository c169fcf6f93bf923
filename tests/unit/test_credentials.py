"""Where the password comes from, decided from files and the environment alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from djhpc import credentials, dj


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()  # 2.x stops its upward search for datajoint.json here
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DJ_PASS", raising=False)
    return tmp_path


def _write_password(directory: Path, password: str) -> None:
    name = "dj_local_conf.json" if dj.is_legacy() else "datajoint.json"
    (directory / name).write_text(json.dumps({"database.password": password}))


def test_no_password_anywhere(project: Path) -> None:
    assert credentials.password_source() is credentials.PasswordSource.NONE
    assert credentials.environment_warning() is None


def test_password_only_in_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJ_PASS", "s3cret")
    assert credentials.password_source() is credentials.PasswordSource.ENVIRONMENT
    warning = credentials.environment_warning() or ""
    assert "Slurm stores" in warning and "chmod 600" in warning and "s3cret" not in warning
    with credentials.out_of_job_environment() as held_back:
        assert not held_back and os.environ["DJ_PASS"] == "s3cret"


def test_same_password_in_a_file_is_held_back_from_sbatch(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_password(project, "s3cret")
    monkeypatch.setenv("DJ_PASS", "s3cret")
    assert credentials.password_source() is credentials.PasswordSource.FILE
    assert credentials.environment_warning() is None
    with credentials.out_of_job_environment() as held_back:
        assert held_back and "DJ_PASS" not in os.environ
    assert os.environ["DJ_PASS"] == "s3cret"  # back for this process


def test_a_different_password_in_the_environment_wins(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_password(project, "old")
    monkeypatch.setenv("DJ_PASS", "new")
    # The tasks would read "old" from the file without DJ_PASS: keep it, and warn.
    assert credentials.password_source() is credentials.PasswordSource.ENVIRONMENT
    with credentials.out_of_job_environment() as held_back:
        assert not held_back


def test_secrets_directory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "datajoint.json").write_text("{}")
    (project / ".secrets").mkdir()
    (project / ".secrets" / "database.password").write_text("s3cret\n")
    monkeypatch.setenv("DJ_PASS", "s3cret")
    # 2.x reads .secrets/; 0.14 does not, so there the environment is the only source.
    expected = (credentials.PasswordSource.ENVIRONMENT if dj.is_legacy()
                else credentials.PasswordSource.FILE)
    assert credentials.password_source() is expected
