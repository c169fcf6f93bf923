"""TARGET strings: the four forms, and errors that say what went wrong."""

import sys
from pathlib import Path

import pytest

from djhpc import target
from djhpc.errors import UsageError


def test_forms(tmp_path: Path) -> None:
    (tmp_path / "pipe.py").write_text("")
    assert target.parse("pkg.mod.T", cwd=tmp_path) == [target.Target(module="pkg.mod", name="T", paths=(str(tmp_path),))]
    assert target.parse("pkg.mod:T", cwd=tmp_path) == [target.Target(module="pkg.mod", name="T", paths=(str(tmp_path),))]
    assert target.parse("pipe.py:T", cwd=tmp_path) == [target.Target(module="pipe", name="T", paths=(str(tmp_path),))]
    assert [t.module for t in target.parse("T", modules=["a", "b"], cwd=tmp_path)] == ["a", "b"]


def test_bare_name_without_modules() -> None:
    with pytest.raises(UsageError, match="modules:"):
        target.parse("MyTable")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No such file"):
        target.parse("nope.py:T", cwd=tmp_path)


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_mod.py").write_text("x = 1\nraise RuntimeError('no such session')\n")
    (tmp_path / "plain_mod.py").write_text("class NotATable:\n    pass\n")
    yield tmp_path
    for name in ("broken_mod", "plain_mod"):
        sys.modules.pop(name, None)


def test_unknown_module(modules: Path) -> None:
    with pytest.raises(UsageError, match="No module named 'nosuchmod'"):
        target.resolve("nosuchmod.Table", cwd=modules)


def test_import_failure_shows_the_error_and_where(modules: Path) -> None:
    with pytest.raises(UsageError) as error:
        target.resolve("broken_mod.Table", cwd=modules)
    assert "RuntimeError: no such session" in error.value.message
    assert "broken_mod.py:2" in error.value.message


def test_not_auto_populated(modules: Path) -> None:
    with pytest.raises(UsageError, match="not an auto-populated"):
        target.resolve("plain_mod.NotATable", cwd=modules)


def test_typo_suggests_close_names(modules: Path) -> None:
    with pytest.raises(UsageError, match="Did you mean NotATable"):
        target.resolve("plain_mod.NotATabel", cwd=modules)
