"""Settings: what they are, where they come from, and in which order.

Precedence, lowest first: package defaults < cluster profile < project
`djhpc.yaml` (the working directory or a parent) < user
`~/.config/djhpc/config.yaml` < `DJHPC_<NAME>` environment variables < CLI
flags. Every layer is validated the same way: unknown keys fail, listing the
valid ones.

A cluster profile is a YAML file of settings for one cluster plus its rules
(whether `--account` is required, the longest walltime, the partitions). The
package's own profiles live in `slurm_templates/`; a user's own go in
`~/.config/djhpc/profiles/` or a `profiles/` folder beside `djhpc.yaml`, and
shadow the package's.
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
from djhpc.executors.slurm_tools import parse_duration
from djhpc.sites import retired, site_profile_dirs

PROJECT_FILE = "djhpc.yaml"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "djhpc" / "config.yaml"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
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
    quota_warn: float = field(
        default=0.25, metadata=_help("warn when a run may use more than this share of the quota left")
    )
    db_timeout: int = field(
        default=15, metadata=_help("seconds to wait for the database to accept and answer a new "
                                   "connection")
    )
    make_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata=_help("keyword arguments passed to make(), as "
                                             "populate(make_kwargs=) does")
    )

    history: bool = field(
        default=True, metadata=_help("size memory, time and chunks from the table's earlier runs")
    )
    target_task_time: str = field(
        default="1:00:00", metadata=_help("how long a task sized from history should run")
    )
    max_mem: str | None = field(
        default=None, metadata=_help("the most memory an automatic escalation may ask for")
    )
    max_continuations: int = field(
        default=10, metadata=_help("attempts a run may add by itself for keys its tasks handed "
                                   "back (time limits); 0 turns it off")
    )
    max_escalations: int = field(
        default=2, metadata=_help("times a run may double the memory or time of tasks Slurm "
                                  "stopped for it; 0 turns it off")
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
    for kind in ("list", "dict", "int", "float", "bool"):
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
    if kind == "bool":
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in _BOOLS:
            return value if isinstance(value, bool) else _BOOLS[text]
        raise bad
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
    if kind == "float":
        try:
            share = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if isinstance(value, bool) or not share >= 0:  # also NaN
            raise bad
        return share
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


_BOOLS = {"true": True, "yes": True, "on": True, "1": True,
          "false": False, "no": False, "off": False, "0": False}


def _describe(kind: str) -> str:
    return {"int": "a whole number", "list": "a list", "dict": "a mapping",
            "float": "a number", "bool": "true or false"}.get(kind, "a string")


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


# --- cluster profiles: a settings layer with rules of its own ---------------------

# Keys a profile file may hold besides settings: its rules.
RULE_KEYS = ("description", "account_required", "max_time", "partitions", "architectures")
PROFILE_SETTINGS = (*RESOURCE_KEYS, "max_array_size", "max_parallel", "chunk_size", "signal_delay",
                    "requeue", "python")


def template_dirs(project_dir: Path | None = None) -> list[Path]:
    """Where profiles are looked up, most specific first."""
    dirs = []
    if project_dir is not None:
        dirs.append(project_dir / "profiles")
    dirs.append(user_config_path().parent / "profiles")
    dirs += site_profile_dirs()  # DJHPC_PROFILE_PATH, /etc/xdg/djhpc/profiles
    package = Path(__file__).resolve().parent
    dirs.append(package / "slurm_templates")  # inside a wheel
    dirs.append(package.parent / "slurm_templates")  # a checkout or editable install
    return dirs


def available_profiles(project_dir: Path | None = None) -> list[str]:
    names = {p.stem for d in template_dirs(project_dir) if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def find_profile(name: str, project_dir: Path | None = None) -> Path:
    for directory in template_dirs(project_dir):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    gone = retired(name)
    if gone is not None:
        raise gone
    known = available_profiles(project_dir)
    raise UsageError(
        f"Unknown profile {name!r}",
        f"Choose one of: {', '.join(known) or '(none found)'}, or add {name}.yaml to "
        f"{user_config_path().parent / 'profiles'}",
    )


@dataclass(frozen=True, kw_only=True)
class Rules:
    """What a cluster demands of every job."""

    account_required: bool = False
    max_time_s: float | None = None
    partitions: tuple[str, ...] = ()


def load_profile(name: str | None, project_dir: Path | None = None) -> dict[str, Any]:
    """A profile's settings (its rules are read by `load_rules`)."""
    if not name:
        return {}
    path = find_profile(name, project_dir)
    data = read_yaml(path)
    check_keys(data, str(path), allowed=(*PROFILE_SETTINGS, *RULE_KEYS))
    return {k: coerce(k, v, str(path)) for k, v in data.items() if k not in RULE_KEYS}


def load_rules(name: str | None, project_dir: Path | None = None) -> Rules:
    if not name:
        return Rules()
    path = find_profile(name, project_dir)
    data = read_yaml(path)
    max_time = data.get("max_time")
    partitions = data.get("partitions") or ()
    try:
        max_time_s = parse_duration(str(max_time)) if max_time else None
    except ValueError:
        raise UsageError(f"{path}: max_time {max_time!r} is not a walltime",
                         "Write it like 7-00:00:00") from None
    return Rules(
        account_required=bool(data.get("account_required", False)),
        max_time_s=max_time_s,
        partitions=(partitions,) if isinstance(partitions, str) else tuple(partitions),
    )


def load_architectures(name: str | None, project_dir: Path | None = None) -> dict[str, str]:
    """The profile's `architectures:` (partition -> CPU architecture), if it has one."""
    if not name:
        return {}
    data = read_yaml(find_profile(name, project_dir)).get("architectures") or {}
    if not isinstance(data, dict):
        raise UsageError(f"architectures: in profile {name!r} must map partitions to "
                         "architectures", "Write it like {small: x86_64, accel: aarch64}")
    return {str(k): str(v) for k, v in data.items()}


# --- all layers together -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
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
    return settings, Sources(project_file=project_file, user_file=user_file)
