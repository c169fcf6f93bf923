"""`djhpc doctor`: each thing djhpc relies on, checked, with what to do if it fails."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from djhpc import dj, quota, resources, sites
from djhpc.config import Settings, load, load_rules
from djhpc.errors import DjhpcError
from djhpc.executors import slurm_tools as slurm
from djhpc.ledger import Ledger, default_schema


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_checks() -> list[Check]:
    checks: list[Check] = []
    try:
        settings, sources = load()
    except DjhpcError as error:
        return [Check(name="settings", ok=False, detail=error.message)]
    where = str(sources.project_file) if sources.project_file else "no djhpc.yaml (defaults)"
    checks.append(Check(name="settings", ok=True, detail=where))
    checks += _database(settings)
    checks += _credentials(checks[-1])
    checks.append(_slurm(settings))
    checks.append(_profile(settings, sources.project_file.parent if sources.project_file else None))
    checks += _cluster_and_quota(settings,
                                 sources.project_file.parent if sources.project_file else None)
    checks.append(_run_dir(settings))
    return checks


def _database(settings: Settings) -> list[Check]:
    dj.quiet()
    dj.set_timeout(settings.db_timeout)
    try:
        conn = dj.connection()
    except DjhpcError as error:
        return [Check(name="database", ok=False, detail=error.message)]
    d = dj.dialect(conn)
    checks = [Check(name="database", ok=True, detail=f"{d.backend} via DataJoint {dj.major_version()}.x, "
                    f"user {dj.db_user(conn)}")]
    slow = dj.version_warning()
    if slow:
        checks.append(Check(name="datajoint", ok=False, detail=slow))
    schema = settings.ledger_schema or default_schema(dj.db_user(conn))
    ledger = Ledger(conn, schema)
    try:
        existed = ledger.exists()
        ledger.create()
        checks.append(Check(name="ledger", ok=True, detail=f"schema {schema} " + ("in use" if existed else "created")))
    except DjhpcError as error:
        checks.append(Check(name="ledger", ok=False, detail=error.message))
    return checks


def _slurm(settings: Settings) -> Check:
    if settings.executor in ("local", "debug"):
        return Check(name="slurm", ok=True, detail=f"not needed (executor {settings.executor})")
    if not slurm.available():
        if settings.executor == "slurm":
            return Check(name="slurm", ok=False, detail="sbatch is not on PATH. Run on a login node or load "
                         "Slurm's module, or set executor: local")
        return Check(name="slurm", ok=True, detail="not found: runs use the local executor")
    try:
        config = slurm.show_config()
    except slurm.SlurmError as error:
        return Check(name="slurm", ok=False, detail=f"{error}")
    size = settings.max_array_size or slurm.max_array_size(config)
    return Check(name="slurm", ok=True, detail=f"cluster {config.get('ClusterName', '?')}, "
                 f"Slurm {config.get('SLURM_VERSION', '?')}, arrays of up to {size} tasks")


def _profile(settings: Settings, project_dir: Path | None) -> Check:
    name = settings.profile
    try:
        rules = load_rules(name, project_dir)
        res = resources.resources(settings, None, rules)
        for table in settings.tables:  # each table's overrides must hold up too
            resources.resources(settings, table, rules)
    except DjhpcError as error:
        return Check(name="profile", ok=False, detail=error.message)
    return Check(name="profile", ok=True, detail=f"{name or '(none: package defaults)'}: {res.describe()}")


def _cluster_and_quota(settings: Settings, project_dir: Path | None) -> list[Check]:
    """The profile against the live cluster, and the account's quota (Slurm runs only)."""
    if settings.executor in ("local", "debug") or not slurm.available():
        return []
    try:
        rules = load_rules(settings.profile, project_dir)
        res = resources.resources(settings, None, rules)
    except DjhpcError:
        return []  # the profile check already says what is wrong
    try:
        facts = sites.cluster_facts(res.partition)
    except slurm.SlurmError as error:
        return [Check(name="cluster", ok=False, detail=str(error))]
    found = sites.differences(facts, rules.max_time_s, res.account,
                              settings.max_array_size, settings.max_parallel)
    info = sites.describe(facts)
    name = settings.profile or "(no profile)"
    if found:
        cluster = Check(name="cluster", ok=False, detail=f"profile {name} differs from this cluster: "
                        + "; ".join(found) + ". Choose another --partition/--account or "
                        "fix the profile")
    else:
        limit = info["max_submit_jobs"]
        cluster = Check(name="cluster", ok=True, detail=f"profile {name} matches: partition "
                        f"{info['partition']} (MaxTime {info['max_time']}), arrays of up to "
                        f"{info['max_array_size']}"
                        + (f", at most {limit} queued jobs" if limit else ""))
    checks = [cluster]
    if res.account:
        found_quota = quota.read_quota(res.account)
        left = found_quota.remaining if found_quota else None
        total = found_quota.total if found_quota else None
        if left is None or total is None:
            checks.append(Check(name="quota", ok=True, detail=f"{res.account}: no quota to read here (no "
                                "`cost` command, no GrpTRESMins billing limit)"))
        else:
            low = left < settings.quota_warn * total
            checks.append(Check(name="quota", ok=True, detail=f"{res.account}: {left:.1f} of {total:.1f} "
                                "billing hours left" + (" (running low)" if low else "")))
    return checks


def _run_dir(settings: Settings) -> Check:
    directory = Path(settings.run_dir).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as error:
        return Check(name="run_dir", ok=False, detail=f"{directory}: {error.strerror}. Set run_dir: to a "
                     "writable directory on a filesystem the compute nodes share")
    shared = "" if str(directory).startswith(str(Path.home())) or os.environ.get("CI") else (
        " (make sure compute nodes see it)")
    return Check(name="run_dir", ok=True, detail=f"{directory}{shared}")


def _credentials(last: Check) -> list[Check]:
    """Where the password comes from: a DJ_PASS alone is copied into Slurm's job records."""
    from djhpc import credentials

    if not last.ok and last.name == "database":
        return []
    try:
        warning = credentials.environment_warning()
    except Exception as error:  # a config file DataJoint itself could not read
        return [Check(name="credentials", ok=False, detail=f"{type(error).__name__}: {error}")]
    if warning:
        return [Check(name="credentials", ok=True, detail=f"warning: {warning}")]
    source = credentials.password_source().value
    return [Check(name="credentials", ok=True, detail={"file": "password from a DataJoint config file",
                                        "none": "no password set"}.get(source, source))]
