"""Cluster profiles and the resources a task asks for.

A profile is a YAML file of settings for one cluster (partition, walltime
limits, whether `--account` is required, `setup` lines). The package's own
profiles live in `slurm_templates/`; a user's own go in
`~/.config/djhpc/profiles/` or a `profiles/` folder beside `djhpc.yaml`, and
shadow the package's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from djhpc.config import RESOURCE_KEYS, Settings, check_keys, coerce, read_yaml, user_config_path
from djhpc.errors import UsageError
from djhpc.slurm import parse_duration, parse_memory_mb, parse_walltime

# Keys a profile file may hold besides settings: its rules.
RULE_KEYS = ("description", "account_required", "max_time", "partitions")
PROFILE_SETTINGS = (*RESOURCE_KEYS, "max_array_size", "max_parallel", "chunk_size", "signal_delay", "requeue", "python")

# submitit's SlurmExecutor parameters that `slurm:` may set; the resources above
# have their own settings, so they are not accepted twice.
SUBMITIT_EXTRA = (
    "additional_parameters", "comment", "constraint", "cpus_per_gpu", "dependency", "exclude",
    "exclusive", "gres", "gpus_per_task", "mail_type", "mail_user", "mem_per_cpu", "mem_per_gpu",
    "nodelist", "nodes", "ntasks_per_node", "srun_args", "stderr_to_stdout", "teardown",
    "use_srun", "wckey",
)


def template_dirs(project_dir: Path | None = None) -> list[Path]:
    """Where profiles are looked up, most specific first."""
    dirs = []
    if project_dir is not None:
        dirs.append(project_dir / "profiles")
    dirs.append(user_config_path().parent / "profiles")
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
    known = available_profiles(project_dir)
    raise UsageError(
        f"Unknown profile {name!r}",
        f"Choose one of: {', '.join(known) or '(none found)'}, or add {name}.yaml to "
        f"{user_config_path().parent / 'profiles'}",
    )


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Resources:
    """What one task asks Slurm for."""

    partition: str | None
    account: str | None
    qos: str | None
    time_s: float
    mem_mb: float
    cpus: int
    gpus: int
    setup: tuple[str, ...]
    extra: dict[str, Any]

    @property
    def time_min(self) -> int:
        return max(1, math.ceil(self.time_s / 60))

    def describe(self) -> str:
        parts = [f"time {format_duration(self.time_s)}", f"mem {format_mb(self.mem_mb)}",
                 f"cpus {self.cpus}"]
        if self.gpus:
            parts.append(f"gpus {self.gpus}")
        for label, value in (("partition", self.partition), ("account", self.account),
                             ("qos", self.qos)):
            if value:
                parts.append(f"{label} {value}")
        return ", ".join(parts)


def format_duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def format_mb(mb: float) -> str:
    return f"{mb / 1024:g}G" if mb >= 1024 and mb % 1024 == 0 else f"{mb:g}M"


def resources(settings: Settings, table: str | None = None, rules: Rules | None = None) -> Resources:
    """The resources for one table's tasks: settings, then the table's overrides.

    Everything is validated here, before anything is recorded or submitted.
    """
    values: dict[str, Any] = {k: getattr(settings, k) for k in RESOURCE_KEYS}
    override = settings.tables.get(table or "", {}) if table else {}
    if override:
        if not isinstance(override, dict):
            raise UsageError(f"tables: {table} must be a mapping of resources",
                             f"Valid keys: {', '.join(RESOURCE_KEYS)}")
        check_keys(override, f"tables: {table}", allowed=RESOURCE_KEYS)
        values.update({k: coerce(k, v, f"tables: {table}") for k, v in override.items()
                       if k not in settings.pinned})
    time_s = _positive(parse_walltime, values["time"], "time",
                       "Give a walltime like 30, 2:00:00 or 1-12:00:00 (D-HH:MM:SS)")
    mem_mb = _positive(parse_memory_mb, values["mem"], "memory", "Give a size like 4G, 500M or 1.5T")
    extra = dict(values.get("slurm") or {})
    unknown = sorted(set(extra) - set(SUBMITIT_EXTRA))
    if unknown:
        raise UsageError(f"Unknown Slurm option {', '.join(map(repr, unknown))} under slurm:",
                         f"Valid options: {', '.join(SUBMITIT_EXTRA)}")
    res = Resources(
        partition=values["partition"], account=values["account"], qos=values["qos"],
        time_s=time_s, mem_mb=mem_mb, cpus=int(values["cpus"]), gpus=int(values["gpus"]),
        setup=tuple(values.get("setup") or ()), extra=extra,
    )
    if rules is not None:
        check_rules(res, rules, settings.profile)
    return res


def _positive(parse: Callable[[str], float], value: Any, what: str, todo: str) -> float:
    """A parsed amount that must be above zero, or a UsageError naming it."""
    try:
        amount = parse(str(value))
    except ValueError:
        amount = 0.0
    if amount <= 0:
        raise UsageError(f"Invalid {what} {value!r}", todo)
    return amount


def check_rules(res: Resources, rules: Rules, profile: str | None) -> None:
    if rules.account_required and not res.account:
        raise UsageError(f"Profile {profile!r} requires an account",
                         "Pass --account (e.g. --account nn1234k) or set account: in djhpc.yaml")
    if rules.max_time_s is not None and res.time_s > rules.max_time_s:
        raise UsageError(
            f"Time {format_duration(res.time_s)} exceeds profile {profile!r}'s limit of "
            f"{format_duration(rules.max_time_s)}",
            "Ask for less time per task or use smaller chunks",
        )
    if rules.partitions and res.partition and res.partition not in rules.partitions:
        raise UsageError(f"Partition {res.partition!r} is not in profile {profile!r}",
                         f"Choose one of: {', '.join(rules.partitions)}")


def warning_delay(res: Resources, signal_delay_s: int) -> int:
    """Seconds before the time limit at which Slurm warns a task (USR2).

    The warning must leave the task time to hand back its keys, but never take
    more than half of a short task's walltime.
    """
    return int(min(signal_delay_s, max(10, res.time_s // 2)))


def submitit_parameters(res: Resources, signal_delay_s: int) -> dict[str, Any]:
    """The resources as submitit's SlurmExecutor parameters."""
    params: dict[str, Any] = {
        "time": res.time_min,
        "mem": f"{math.ceil(res.mem_mb)}M",
        "cpus_per_task": res.cpus,
        "signal_delay_s": warning_delay(res, signal_delay_s),
        "setup": list(res.setup),
    }
    if res.gpus:
        params["gpus_per_node"] = res.gpus
    for key in ("partition", "account", "qos"):
        value = getattr(res, key)
        if value:
            params[key] = value
    params.update(res.extra)
    return params
