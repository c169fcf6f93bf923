"""The clusters behind the profiles: retired systems, shared profile folders,
architectures, and how a profile compares with the live cluster.

The comparison reads the cluster through `slurm.call` (scontrol, sacctmgr) and
compares in pure functions, so it is tested on pasted output.
"""

from __future__ import annotations

import getpass
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from djhpc.errors import UsageError
from djhpc.executors import slurm_tools as slurm

# Profiles of systems that are gone, with what replaced them.
RETIRED = {
    "fram": ("Sigma2 decommissioned Fram (its documentation was removed in December 2025)",
             "Use --profile saga, betzy or olivia (Sigma2), with your project's --account"),
}


def retired(name: str) -> UsageError | None:
    """The error for a retired system's profile; None if `name` is not one."""
    entry = RETIRED.get(name.lower())
    if entry is None:
        return None
    return UsageError(f"Profile {name!r} is retired: {entry[0]}", entry[1])


def site_profile_dirs(environ: dict[str, str] | None = None) -> list[Path]:
    """Folders a site or lab admin fills with profiles for everyone.

    `DJHPC_PROFILE_PATH` (colon-separated, first wins), then `djhpc/profiles` in
    each of XDG_CONFIG_DIRS (default /etc/xdg).
    """
    env = dict(os.environ) if environ is None else environ
    dirs = [Path(p).expanduser() for p in env.get("DJHPC_PROFILE_PATH", "").split(":") if p]
    xdg = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    dirs += [Path(p) / "djhpc" / "profiles" for p in xdg.split(":") if p]
    return dirs


def architecture_warning(architectures: dict[str, str], partition: str | None,
                         machine: str | None = None) -> str | None:
    """A warning when the partition's CPUs are not the submitting Python's kind.

    A virtual environment holds compiled code for one architecture: one built on
    an x86_64 login node does not run on aarch64 nodes (Olivia's GH200 accel).
    """
    if not partition or partition not in architectures:
        return None
    here = _normal_arch(machine or platform.machine())
    there = _normal_arch(architectures[partition])
    if here == there:
        return None
    return (f"partition {partition} runs on {there} nodes, but this Python is {here}: its "
            f"virtual environment will not run there. Build one on a node of {partition} and "
            "set python: (or setup:) to use it")


def _normal_arch(name: str) -> str:
    low = name.strip().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(low, low)


# --- the profile against the live cluster ---------------------------------------------


@dataclass(frozen=True)
class Association:
    """What `sacctmgr show assoc` says about the user: accounts and job limits."""

    accounts: tuple[str, ...] = ()
    max_submit_jobs: int | None = None
    max_jobs: int | None = None


def parse_associations(text: str, user: str) -> Association:
    """`sacctmgr -n -P show assoc where user=U format=Account,User,MaxSubmitJobs,MaxJobs`.

    The smallest limit over the user's associations applies to the whole run.
    """
    accounts: list[str] = []
    submits: list[int] = []
    jobs: list[int] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 4 or fields[1] != user:
            continue
        if fields[0] and fields[0] not in accounts:
            accounts.append(fields[0])
        if fields[2].isdigit():
            submits.append(int(fields[2]))
        if fields[3].isdigit():
            jobs.append(int(fields[3]))
    return Association(tuple(accounts), min(submits, default=None), min(jobs, default=None))


def user_associations(user: str | None = None) -> Association | None:
    """The user's associations; None where Slurm has no accounting to ask."""
    user = user or getpass.getuser()
    try:
        proc = slurm.call(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}",
                          "format=Account,User,MaxSubmitJobs,MaxJobs"], check=False)
    except slurm.SlurmError:
        return None  # no sacctmgr here: no limits to respect that we could read
    if proc.returncode != 0:
        return None
    return parse_associations(proc.stdout, user)


@dataclass
class ClusterFacts:
    """What the live cluster says about the partition, arrays and the user."""

    partition: str | None
    partition_info: slurm.Partition | None
    max_array_size: int | None
    association: Association | None
    notes: list[str] = field(default_factory=list)


def differences(facts: ClusterFacts, max_time_s: float | None, account: str | None,
                max_array_size: int | None, max_parallel: int | None) -> list[str]:
    """What in the profile does not match the cluster, one sentence each."""
    out: list[str] = []
    if facts.partition_info is None:
        where = f"partition {facts.partition!r}" if facts.partition else "a default partition"
        out.append(f"{where} does not exist on this cluster (see `sinfo -s`)")
    else:
        cluster_s = facts.partition_info.max_time_s
        if max_time_s is not None and cluster_s is not None and max_time_s > cluster_s:
            out.append(f"the profile allows {_clock(max_time_s)} per task, partition "
                       f"{facts.partition_info.name} at most {_clock(cluster_s)}")
    if max_array_size and facts.max_array_size and max_array_size > facts.max_array_size:
        out.append(f"max_array_size {max_array_size} is above the cluster's MaxArraySize "
                   f"{facts.max_array_size}")
    assoc = facts.association
    if assoc is not None:
        if account and assoc.accounts and account not in assoc.accounts:
            out.append(f"account {account!r} is not one of yours here "
                       f"({', '.join(assoc.accounts)})")
        if assoc.max_jobs and max_parallel and max_parallel > assoc.max_jobs:
            out.append(f"max_parallel {max_parallel} is above your MaxJobs {assoc.max_jobs}")
    return out


def _clock(seconds: float) -> str:
    from djhpc.resources import format_duration

    return format_duration(seconds)


def cluster_facts(partition: str | None) -> ClusterFacts:
    """Ask the cluster: the partition, MaxArraySize, the user's associations."""
    config = slurm.show_config()
    return ClusterFacts(partition, slurm.partition(partition), slurm.max_array_size(config),
                        user_associations())


def submit_limit_note(assoc: Association | None) -> str | None:
    if assoc is None or assoc.max_submit_jobs is None:
        return None
    return (f"you may have at most {assoc.max_submit_jobs} jobs queued (MaxSubmitJobs); "
            "arrays are split to fit, and a bigger run needs fewer, larger chunks (--tasks)")


def describe(facts: ClusterFacts) -> dict[str, Any]:
    info = facts.partition_info
    max_time = None if info is None else (
        "UNLIMITED" if info.max_time_s is None else _clock(info.max_time_s))
    return {"partition": info.name if info else facts.partition,
            "max_time": max_time, "max_array_size": facts.max_array_size,
            "max_submit_jobs": facts.association.max_submit_jobs if facts.association else None}
