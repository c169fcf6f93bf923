"""A planned run's billing estimate and the account's remaining quota, read live.

The arithmetic and parsers are in `djhpc.allocation`; this module asks the
cluster (through `slurm.call`) and puts the answers together for the dry run and
`doctor`. Nothing here is fatal: what cannot be read is "unknown".
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from typing import Any

from djhpc import allocation
from djhpc.allocation import Estimate, Quota
from djhpc.executors import slurm_tools as slurm
from djhpc.resources import Resources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Weights:
    partition: str | None
    weights: dict[str, float]
    max_tres: bool


def partition_weights(partition: str | None) -> Weights | None:
    """The partition's TRESBillingWeights and whether billing takes the largest TRES.

    None if the partition does not exist here or Slurm cannot be asked.
    """
    try:
        info = slurm.partition(partition)
        config = slurm.show_config()
    except slurm.SlurmError as error:
        log.info("billing weights unknown: %s", error)
        return None
    if info is None:
        return None
    flags = config.get("PriorityFlags")
    # priority/basic does not print PriorityFlags, yet applies MAX_TRES to
    # billing; Sigma2 bills the largest TRES, so that is the reading when unsaid.
    max_tres = True if flags is None else allocation.priority_flags_max_tres(flags)
    try:
        weights = allocation.parse_billing_weights(info.billing_weights)
    except ValueError as error:
        log.warning("cannot read partition %s's TRESBillingWeights: %s", partition, error)
        return None
    return Weights(info.name, weights, max_tres)


def estimate(res: Resources, tasks: int, task_seconds: float | None = None) -> Estimate | None:
    w = partition_weights(res.partition)
    if w is None:
        return None
    return allocation.estimate(w.weights, w.max_tres, tasks, res.cpus, res.mem_mb, res.gpus,
                               res.time_s, task_seconds)


def read_quota(account: str) -> Quota | None:
    """The account's quota: Sigma2's `cost` where it exists, else Slurm's GrpTRESMins."""
    try:
        if shutil.which("cost"):
            proc = slurm.call(["cost", "-p", account], check=False, timeout=30)
            if proc.returncode == 0:
                found = allocation.parse_cost(proc.stdout, account)
                if found is not None:
                    return found
        limits = slurm.call(["sacctmgr", "-n", "-P", "show", "assoc", "where",
                            f"account={account}", "format=Account,User,GrpTRESMins"], check=False)
        if limits.returncode != 0:
            return None
        usage = slurm.call(["sshare", "-n", "-P", "-A", account, "-o",
                           "Account,User,GrpTRESRaw"], check=False)
        return allocation.parse_grp_billing_minutes(
            limits.stdout, usage.stdout if usage.returncode == 0 else "", account)
    except slurm.SlurmError as error:
        log.info("quota of %s unknown: %s", account, error)
        return None


@dataclass
class Allocation:
    """The dry run's view of cost and quota."""

    estimate: Estimate | None
    quota: Quota | None
    warnings: list[str] = field(default_factory=list)

    def billing_json(self) -> dict[str, Any] | str:
        return self.estimate.to_json() if self.estimate else "unknown"

    def quota_json(self) -> dict[str, Any] | str:
        return self.quota.to_json() if self.quota else "unknown"


def for_plan(res: Resources, tasks: int, executor: str, quota_warn: float,
             task_seconds: float | None = None) -> Allocation:
    """Estimate and quota for a planned Slurm run; "unknown" for local runs."""
    if executor != "slurm" or tasks == 0:
        return Allocation(None, None)
    est = estimate(res, tasks, task_seconds)
    found = read_quota(res.account) if res.account else None
    warnings = []
    if est is not None and found is not None:
        text = allocation.quota_warning(found, est.at_most, quota_warn)
        if text:
            warnings.append(text)
    return Allocation(est, found, warnings)
