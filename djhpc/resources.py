"""What one task asks the scheduler for, checked before anything is recorded.

`resources()` turns settings (and a table's own overrides) into `Resources`;
`check_rules()` holds them against the cluster profile's rules. How they are
spelled for sbatch is the Slurm executor's business.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from djhpc.config import RESOURCE_KEYS, Rules, Settings, check_keys, coerce
from djhpc.errors import UsageError
from djhpc.executors.slurm_tools import parse_memory_mb, parse_walltime

# submitit's SlurmExecutor parameters that `slurm:` may set; the resources above
# have their own settings, so they are not accepted twice.
SLURM_OPTIONS = (
    "additional_parameters", "comment", "constraint", "cpus_per_gpu", "dependency", "exclude",
    "exclusive", "gres", "gpus_per_task", "mail_type", "mail_user", "mem_per_cpu", "mem_per_gpu",
    "nodelist", "nodes", "ntasks_per_node", "srun_args", "stderr_to_stdout", "teardown",
    "use_srun", "wckey",
)


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one task asks Slurm for."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_s: float
    mem_mb: float
    cpus: int = 1
    gpus: int = 0
    setup: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

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

    def to_json(self) -> dict[str, Any]:
        """As kept with the run in the ledger (see `from_json`)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Resources:
        return cls(**{**data, "setup": tuple(data.get("setup") or ())})


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
    res = from_values(values)
    if rules is not None:
        check_rules(res, rules, settings.profile)
    return res


def from_values(values: Mapping[str, Any]) -> Resources:
    """Resources from setting values as a user writes them ("2:00:00", "4G")."""
    return Resources(**dict(_field(key, values.get(key)) for key in RESOURCE_KEYS))


def with_changes(res: Resources, settings: Settings) -> Resources:
    """`res` with the resource settings the user gave now (flags, environment) over it."""
    changed = [key for key in RESOURCE_KEYS if key in settings.pinned]
    return replace(res, **dict(_field(key, getattr(settings, key)) for key in changed))


def _field(key: str, value: Any) -> tuple[str, Any]:
    """One resource setting, checked, as the `Resources` field it sets."""
    if key == "time":
        return "time_s", positive_amount(parse_walltime, value, "time",
                                   "Give a walltime like 30, 2:00:00 or 1-12:00:00 (D-HH:MM:SS)")
    if key == "mem":
        return "mem_mb", positive_amount(parse_memory_mb, value, "memory",
                                   "Give a size like 4G, 500M or 1.5T")
    if key == "slurm":
        extra = dict(value or {})
        unknown = sorted(set(extra) - set(SLURM_OPTIONS))
        if unknown:
            raise UsageError(f"Unknown Slurm option {', '.join(map(repr, unknown))} under slurm:",
                             f"Valid options: {', '.join(SLURM_OPTIONS)}")
        return "extra", extra
    if key == "setup":
        return "setup", tuple(value or ())
    if key in ("cpus", "gpus"):
        return key, int(value)
    return key, value


def positive_amount(parse: Callable[[str], float], value: Any, what: str, todo: str) -> float:
    """A parsed amount (a walltime, a size) that must be above zero, or a UsageError naming it."""
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
