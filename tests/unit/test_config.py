"""Settings: precedence, validation, and errors that say what to do."""

from pathlib import Path

import pytest

from djhpc import config
from djhpc.errors import UsageError


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in list(__import__("os").environ):
        if name.startswith("DJHPC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults() -> None:
    settings, sources = config.load()
    assert settings.executor == "auto" and settings.time == "1:00:00"
    assert sources.project_file is None


def test_precedence_profile_project_user_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "djhpc.yaml").write_text("profile: saga\nmem: 2G\ncpus: 2\nqos: devel\n")
    user = tmp_path / "xdg" / "djhpc"
    user.mkdir(parents=True)
    (user / "config.yaml").write_text("cpus: 3\naccount: nn0001k\n")
    monkeypatch.setenv("DJHPC_ACCOUNT", "nn0002k")
    settings, _ = config.load({"qos": "normal", "time": None})
    assert settings.partition == "normal"  # from the saga profile
    assert settings.mem == "2G"  # project beats profile
    assert settings.cpus == 3  # user beats project
    assert settings.account == "nn0002k"  # env beats user
    assert settings.qos == "normal"  # CLI beats all
    assert settings.time == "4:00:00"  # an unset CLI flag changes nothing


def test_project_file_found_in_a_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "djhpc.yaml").write_text("chunk_size: 12\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    settings, sources = config.load()
    assert settings.chunk_size == 12 and sources.project_file == tmp_path / "djhpc.yaml"


def test_unknown_key_lists_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "djhpc.yaml").write_text("chunksize: 12\n")
    with pytest.raises(UsageError) as error:
        config.load()
    assert "'chunksize'" in error.value.message and "chunk_size" in error.value.message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "djhpc.yaml").write_text("profile: local\nmem: [4G\n")
    with pytest.raises(UsageError) as error:
        config.load()
    assert "djhpc.yaml line" in error.value.message


def test_env_values_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJHPC_MAX_ARRAY_SIZE", "17")
    monkeypatch.setenv("DJHPC_MODULES", "a.b, c")
    settings, _ = config.load()
    assert settings.max_array_size == 17 and settings.modules == ["a.b", "c"]


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJHPC_CHUNK_SIZE", "many")
    with pytest.raises(UsageError, match="DJHPC_CHUNK_SIZE"):
        config.load()


def test_every_setting_has_help() -> None:
    assert all(f.metadata.get("help") for f in config.FIELDS.values())


def test_flags_and_env_beat_per_table_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from djhpc import resources

    (tmp_path / "djhpc.yaml").write_text("tables:\n  T: {mem: 1G, time: '2:00:00', cpus: 4}\n")
    monkeypatch.setenv("DJHPC_CPUS", "2")
    settings, _ = config.load({"mem": "3G"})
    res = resources.resources(settings, "T")
    assert (res.mem_mb, res.time_s, res.cpus) == (3072, 7200, 2)


def test_tasks_on_the_command_line_beats_chunk_size_in_the_file(tmp_path: Path) -> None:
    (tmp_path / "djhpc.yaml").write_text("chunk_size: 50\n")
    settings, _ = config.load({"tasks": 2})
    assert (settings.tasks, settings.chunk_size) == (2, None)
