"""Settings: what they are, where they come from, and in which order.

Precedence, lowest first: package defaults < cluster profile < project
`djhpc.yaml` (the working directory or a parent) < user
`~/.config/djhpc/config.yaml` < `DJHPC_<NAME>` environment variables < CLI
flags. Every layer is validated the same way: unknown keys fail, listing the
valid ones.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from djhpc.errors import UsageError

PROJECT_FILE = "djhpc.yaml"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "djhpc" / "config.yaml"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class Settings:
    """Every setting djhpc reads; each also has a `DJHPC_<NAME>` variable."""

    executor: str = field(default="auto", metadata=_help("auto | slurm | local | debug"))
    profile: str | None = field(default=None, metadata=_help("cluster profile name"))
    partition: str | None = field(default=None, metadata=_help("Slurm partition"))
    account: str | None = field(default=None, metadata=_help("Slurm account (project)"))
    qos: str | None = field(default=None, metadata=_help("Slurm QOS"))
    time: str = field(default="1:00:00", metadata=_help("walltime per task, D-HH:MM:SS"))
    mem: str = field(default="4G", metadata=_help("memory per task, e.g. 4G"))
    cpus: int = field(default=1, metadata=_help("CPUs per task"))
    gpus: int = field(default=0, metadata=_help("GPUs per task"))
    chunk_size: int | None = field(default=None, metadata=_help("keys per chunk (task)"))
    tasks: int | None = field(default=None, metadata=_help("number of chunks (tasks)"))
    max_parallel: int | None = field(default=None, metadata=_help("tasks of a run at once"))
    ledger_schema: str | None = field(
        default=None, metadata=_help("djhpc's bookkeeping schema; default user_<dbuser>_djhpc")
    )
    run_dir: str = field(
        default="~/.djhpc/runs", metadata=_help("scripts and logs; on a shared filesystem")
    )
    max_array_size: int | None = field(
        default=None, metadata=_help("tasks per Slurm array; default read from the cluster")
    )
    modules: list[str] = field(
        default_factory=list, metadata=_help("modules where a bare Table name is looked up")
    )
    tables: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=_help("per-table resource overrides")
    )
    setup: list[str] = field(
        default_factory=list, metadata=_help("shell lines run before each task (module load...)")
    )
    python: str | None = field(
        default=None, metadata=_help("Python on the compute nodes; default this one")
    )
    requeue: int = field(default=3, metadata=_help("automatic requeues of an interrupted task"))
    signal_delay: int = field(
        default=120, metadata=_help("seconds before the time limit to stop gracefully")
    )
    slurm: dict[str, Any] = field(
        default_factory=dict, metadata=_help("extra sbatch options, e.g. {constraint: skylake}")
    )
    db_timeout: int = field(
        default=15, metadata=_help("seconds to wait for the database to accept and answer a new "
                                   "connection")
    )
    make_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata=_help("keyword arguments passed to make(), as "
                                             "populate(make_kwargs=) does")
    )

    # Settings given by the environment or the command line: these beat the
    # per-table overrides of a config file, as the precedence promises.
    pinned: tuple[str, ...] = field(default=(), metadata={"internal": True})

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


FIELDS: dict[str, dataclasses.Field[Any]] = {
    f.name: f for f in dataclasses.fields(Settings) if not f.metadata.get("internal")}
# Resource keys may also be set per table under `tables:`.
RESOURCE_KEYS = ("partition", "account", "qos", "time", "mem", "cpus", "gpus", "slurm", "setup")


def _kind(name: str) -> str:
    """The shape of a field's value, read from its annotation."""
    annotation = str(FIELDS[name].type)
    for kind in ("list", "dict", "int"):
        if annotation.startswith(kind):
            return kind
    return "str"


def check_keys(values: Mapping[str, Any], where: str, allowed: tuple[str, ...] = ()) -> None:
    valid = allowed or tuple(FIELDS)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise UsageError(
            f"Unknown setting {', '.join(map(repr, unknown))} in {where}",
            f"Valid settings: {', '.join(valid)}",
        )


def coerce(name: str, value: Any, where: str) -> Any:
    """Check one setting's value and bring it to the field's type."""
    if value is None:
        return None
    kind = _kind(name)
    bad = UsageError(f"Setting {name!r} in {where} must be {_describe(kind)}, not {value!r}",
                     f"Fix it in {where}")
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise bad from None
        if number < 0 or (number == 0 and name in ("chunk_size", "tasks", "max_parallel", "cpus")):
            raise bad
        return number
    if kind == "list":
        if isinstance(value, str):
            return [part.strip() for part in value.replace(",", "\n").splitlines() if part.strip()]
        if not isinstance(value, list):
            raise bad
        return [str(item) for item in value]
    if kind == "dict":
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError:
                raise bad from None
        if not isinstance(value, dict):
            raise bad
        return value
    if isinstance(value, (dict, list)):
        raise bad
    return str(value)


def _describe(kind: str) -> str:
    return {"int": "a whole number", "list": "a list", "dict": "a mapping"}.get(kind, "a string")


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`; errors name the file and the line."""
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"Cannot read {path}: {error.strerror}", "Check the file's permissions") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not valid UTF-8 text (byte {error.start})",
                         "Save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UsageError(f"{path}{line}: {problem}", "Fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of settings", "See README: djhpc.yaml")
    return data


def find_project_file(start: Path | None = None) -> Path | None:
    directory = (start or Path.cwd()).resolve()
    for candidate in (directory, *directory.parents):
        path = candidate / PROJECT_FILE
        if path.is_file():
            return path
    return None


def _layer(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    check_keys(values, where)
    return {name: coerce(name, value, where) for name, value in values.items()}


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {
        name: environ[f"DJHPC_{name.upper()}"]
        for name in FIELDS
        if f"DJHPC_{name.upper()}" in environ
    }
    return {name: coerce(name, value, f"DJHPC_{name.upper()}") for name, value in values.items()}


@dataclass(frozen=True)
class Sources:
    """Where the settings came from, for `doctor` and error messages."""

    project_file: Path | None
    user_file: Path | None


def load(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[Settings, Sources]:
    """Merge every layer into one `Settings`; CLI values of None mean "not given"."""
    from djhpc.profile import load_profile  # profiles are a layer of their own

    environ = os.environ if environ is None else environ
    project_file = find_project_file(cwd)
    user_file = user_config_path()
    layers: list[dict[str, Any]] = []
    if project_file:
        layers.append(_layer(read_yaml(project_file), str(project_file)))
    if user_file.is_file():
        layers.append(_layer(read_yaml(user_file), str(user_file)))
    else:
        user_file = None  # type: ignore[assignment]
    env = env_layer(environ)
    given = {k: v for k, v in (cli or {}).items() if v is not None and v != () and v != []}
    layers += [env, _layer(given, "the command line")]

    profile_name = next((layer["profile"] for layer in reversed(layers) if "profile" in layer), None)
    layers.insert(0, load_profile(profile_name, project_dir=project_file.parent if project_file else None))
    merged: dict[str, Any] = {}
    for layer in layers:
        # chunk_size and tasks say the same thing two ways: the later layer's wins.
        for one, other in (("chunk_size", "tasks"), ("tasks", "chunk_size")):
            if layer.get(one) is not None:
                merged.pop(other, None)
        merged.update(layer)
    settings = Settings(**merged, pinned=tuple(sorted({*env, *given})))
    return settings, Sources(project_file, user_file)
