"""What a run costs in the site's billing units, and how much of the quota is left.

Pure arithmetic and parsers only: the text comes from `scontrol show partition`
(TRESBillingWeights), sacct (AllocTRES), Sigma2's `cost` command and Slurm's
association limits (`sacctmgr`, `sshare`); the callers that run those commands
live in `djhpc.quota`.

Billing as Slurm computes it (slurm.conf(5), TRESBillingWeights; Sigma2's
jobs/projects_accounting.md): every TRES of the job is multiplied by the
partition's weight for it; with PriorityFlags=MAX_TRES (Sigma2's choice) the
job is billed the largest of those products, otherwise their sum. A partition
without weights bills the allocated CPUs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

# Units of a memory weight's suffix, in MiB: "Mem=0.2577031G" is per GiB.
_MIB_PER_UNIT = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}
_WEIGHT = re.compile(r"(?P<value>\d+(?:\.\d*)?|\.\d+)(?P<unit>[KMGTP]?)", re.IGNORECASE)


def parse_billing_weights(text: str | None) -> dict[str, float]:
    """TRESBillingWeights ("CPU=1.0,Mem=0.2577031G,GRES/gpu=6") as weights per unit.

    Keys are lowercase TRES names ("cpu", "mem", "gres/gpu", "node"); the memory
    weight is per MiB whatever suffix it was written with. Empty or missing text
    (Slurm prints "(null)" or nothing) gives no weights.
    """
    weights: dict[str, float] = {}
    if not text or text.strip() in ("(null)", "N/A", "None"):
        return weights
    for item in text.strip().strip('"').split(","):
        name, eq, value = item.strip().partition("=")
        if not eq or not name:
            raise ValueError(f"not a TRESBillingWeights entry: {item!r}")
        m = _WEIGHT.fullmatch(value.strip())
        if m is None:
            raise ValueError(f"not a TRES billing weight: {item!r}")
        number = float(m["value"])
        unit = m["unit"].upper()
        key = name.strip().lower()
        if unit:
            # A suffix scales the weight to "per that unit"; only sizes have one.
            number /= _MIB_PER_UNIT[unit] if key == "mem" else 1.0
        weights[key] = number
    return weights


def _gpu_weight(weights: dict[str, float]) -> float:
    if "gres/gpu" in weights:
        return weights["gres/gpu"]
    typed = [w for k, w in weights.items() if k.startswith("gres/gpu:")]
    return max(typed, default=0.0)


def billing_rate(weights: dict[str, float], cpus: int, mem_mb: float, gpus: int = 0,
                 nodes: int = 1, max_tres: bool = True) -> float:
    """Billing units of one task asking for `cpus`, `mem_mb` MiB and `gpus`."""
    if not weights:
        return float(cpus)  # Slurm's default: billing = allocated CPUs
    parts = [cpus * weights.get("cpu", 0.0), mem_mb * weights.get("mem", 0.0),
             gpus * _gpu_weight(weights), nodes * weights.get("node", 0.0)]
    return max(parts) if max_tres else sum(parts)


def slurm_billing(rate: float) -> int:
    """The billing Slurm records for a weighted `rate`.

    Slurm keeps TRES counts as whole numbers and drops the fraction (seen on
    Slurm 22.05: CPU=1 and 6 GiB at 0.2577031 per GiB, 1.55 units, is billed 1).
    """
    return math.floor(rate + 1e-9)


def parse_tres(text: str | None) -> dict[str, str]:
    """A TRES list ("billing=3,cpu=3,mem=256M,node=1") as a name → value mapping."""
    tres: dict[str, str] = {}
    for item in (text or "").split(","):
        name, eq, value = item.strip().partition("=")
        if eq and name:
            tres[name.lower()] = value
    return tres


def billing_units(alloc_tres: str | None) -> float | None:
    """The `billing=` of sacct's AllocTRES; None when the row has none (steps, pending)."""
    value = parse_tres(alloc_tres).get("billing")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def priority_flags_max_tres(flags: str | None) -> bool:
    """True if `scontrol show config`'s PriorityFlags includes MAX_TRES."""
    return "MAX_TRES" in (flags or "").upper().replace(" ", "").split(",")


@dataclass(frozen=True)
class Estimate:
    """What the planned run may cost, in billing hours.

    `at_most` is what the quota must hold: every task billed for its full
    requested walltime (Sigma2 reserves that much when a task starts).
    `expected` uses measured task durations when they are known.
    """

    rate: float  # billing units per task
    tasks: int
    at_most: float
    expected: float | None
    source: str  # "partition" (TRESBillingWeights) or "cpus" (no weights)

    def to_json(self) -> dict[str, float | int | str | None]:
        return {"units_per_task": round(self.rate, 4), "tasks": self.tasks,
                "billing_hours_at_most": round(self.at_most, 4),
                "billing_hours_expected": None if self.expected is None
                else round(self.expected, 4), "source": self.source}


def estimate(weights: dict[str, float], max_tres: bool, tasks: int, cpus: int, mem_mb: float,
             gpus: int, time_s: float, task_seconds: float | None = None) -> Estimate:
    rate = billing_rate(weights, cpus, mem_mb, gpus, max_tres=max_tres)
    if weights:
        rate = float(slurm_billing(rate)) or rate
    at_most = tasks * rate * time_s / 3600
    expected = None if task_seconds is None else tasks * rate * min(task_seconds, time_s) / 3600
    return Estimate(rate, tasks, at_most, expected, "partition" if weights else "cpus")


# --- quota ---------------------------------------------------------------------------


class QuotaSource(str, Enum):
    COST = "cost"  # Sigma2's `cost` command
    SLURM = "slurm"  # GrpTRESMins billing limit of the account's association


@dataclass(frozen=True)
class Quota:
    """An account's allocation in billing hours for the current period."""

    account: str
    total: float | None
    used: float
    reserved: float  # held for running jobs' requested walltime
    source: QuotaSource

    @property
    def remaining(self) -> float | None:
        return None if self.total is None else max(0.0, self.total - self.used - self.reserved)

    def share(self, hours: float) -> float | None:
        """The share of what is left that `hours` would take; None if unknown."""
        left = self.remaining
        if left is None:
            return None
        return math.inf if left <= 0 else hours / left

    def to_json(self) -> dict[str, float | str | None]:
        return {"account": self.account, "total": self.total, "used": round(self.used, 2),
                "reserved": round(self.reserved, 2),
                "remaining": None if self.remaining is None else round(self.remaining, 2),
                "source": self.source.value}


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


_COST_ROW = re.compile(r"^\s*(?P<account>\S+)\s+(?P<label>[a-z][a-z ()]*?)\s+(?P<value>\S+)\s*$")


def parse_cost(text: str, account: str) -> Quota | None:
    """One account's quota in the output of Sigma2's `cost -p ACCOUNT`.

    The report lists `ACCOUNT avail|usage|reserved|quota (pri)|quota (unpri)
    NUMBER` rows (hours); "NA" is no number. None if the account is not in it.
    """
    values: dict[str, float | None] = {}
    for line in text.splitlines():
        m = _COST_ROW.match(line)
        if m is None or m["account"] != account:
            continue
        values[m["label"].strip()] = _number(m["value"])
    if not values:
        return None
    quota = values.get("quota (pri)", values.get("quota"))
    used = values.get("usage") or 0.0
    reserved = values.get("reserved") or 0.0
    if quota is None and values.get("avail") is not None:
        quota = (values["avail"] or 0.0) + used + reserved
    return Quota(account, quota, used, reserved, QuotaSource.COST)


def parse_grp_billing_minutes(limits: str, usage: str, account: str) -> Quota | None:
    """The billing quota of an account from Slurm's association data.

    `limits` is `sacctmgr -n -P show assoc where account=A format=Account,User,GrpTRESMins`
    (the account's own row has an empty User); `usage` is `sshare -n -P -A A
    -o Account,User,GrpTRESRaw`, whose GrpTRESRaw holds the TRES-minutes used.
    None if the account has no billing limit.
    """
    limit = None
    for line in limits.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 3 and fields[0] == account and not fields[1]:
            minutes = parse_tres(fields[2]).get("billing")
            limit = _number(minutes) if minutes else None
    if limit is None:
        return None
    used = 0.0
    for line in usage.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 3 and fields[0] == account and not fields[1]:
            used = _number(parse_tres(fields[2]).get("billing", "0")) or 0.0
    return Quota(account, limit / 60, used / 60, 0.0, QuotaSource.SLURM)


def quota_warning(quota: Quota, hours: float, threshold: float) -> str | None:
    """A warning when the run would take more than `threshold` of what is left."""
    share = quota.share(hours)
    if share is None or share <= threshold:
        return None
    left = quota.remaining or 0.0
    if left <= 0:
        return (f"account {quota.account} has no billing hours left this period: tasks will "
                "pend (AssocGrpBillingMinutes) until the quota is raised")
    return (f"this run may use {hours:.1f} billing hours, {share:.0%} of the {left:.1f} left "
            f"on account {quota.account} (quota_warn is {threshold:.0%})")


# Pending reasons that mean "the allocation is spent", with what to do.
QUOTA_REASONS = {
    "AssocGrpBillingMinutes": "the account's billing-hour quota is spent",
    "AssocGrpCPUMinutesLimit": "the account's CPU-hour quota is spent",
    "AssocGrpBillingRunMinutes": "the account's running jobs already hold all of its "
                                 "remaining billing hours",
}


def explain_reason(reason: str | None, account: str | None = None) -> str | None:
    """Pending reasons about the allocation, in words with what to do."""
    if not reason:
        return None
    code = reason.strip().strip("()")
    what = QUOTA_REASONS.get(code)
    if what is None:
        return None
    project = account or "the project"
    return (f"Tasks wait ({code}): {what}. Check it with `cost -p {project}` (Sigma2) or "
            f"`sshare -A {project}`; ask the project leader for more quota, or cancel and "
            "resubmit with another --account")
