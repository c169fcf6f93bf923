"""`djhpc doctor`: each thing djhpc relies on, checked, with what to do if it fails."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from djhpc import dj, profile, slurm
from djhpc.config import Settings, load
from djhpc.errors import DjhpcError
from djhpc.ledger import Ledger, default_schema


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_checks() -> list[Check]:
    checks: list[Check] = []
    try:
        settings, sources = load()
    except DjhpcError as error:
        return [Check("settings", False, error.message)]
    where = str(sources.project_file) if sources.project_file else "no djhpc.yaml (defaults)"
    checks.append(Check("settings", True, where))
    checks += _database(settings)
    checks += _credentials(checks[-1])
    checks.append(_slurm(settings))
    checks.append(_profile(settings, sources.project_file.parent if sources.project_file else None))
    checks.append(_run_dir(settings))
    return checks


def _database(settings: Settings) -> list[Check]:
    dj.quiet()
    dj.set_timeout(settings.db_timeout)
    try:
        conn = dj.connection()
    except DjhpcError as error:
        return [Check("database", False, error.message)]
    d = dj.dialect(conn)
    checks = [Check("database", True, f"{d.backend} via DataJoint {dj.major_version()}.x, "
                    f"user {dj.db_user(conn)}")]
    slow = dj.version_warning()
    if slow:
        checks.append(Check("datajoint", False, slow))
    schema = settings.ledger_schema or default_schema(dj.db_user(conn))
    ledger = Ledger(conn, schema)
    try:
        existed = ledger.exists()
        ledger.create()
        checks.append(Check("ledger", True, f"schema {schema} " + ("in use" if existed else "created")))
    except DjhpcError as error:
        checks.append(Check("ledger", False, error.message))
    return checks


def _slurm(settings: Settings) -> Check:
    if settings.executor in ("local", "debug"):
        return Check("slurm", True, f"not needed (executor {settings.executor})")
    if not slurm.available():
        if settings.executor == "slurm":
            return Check("slurm", False, "sbatch is not on PATH. Run on a login node or load "
                         "Slurm's module, or set executor: local")
        return Check("slurm", True, "not found: runs use the local executor")
    try:
        config = slurm.show_config()
    except slurm.SlurmError as error:
        return Check("slurm", False, f"{error}")
    size = settings.max_array_size or slurm.max_array_size(config)
    return Check("slurm", True, f"cluster {config.get('ClusterName', '?')}, "
                 f"Slurm {config.get('SLURM_VERSION', '?')}, arrays of up to {size} tasks")


def _profile(settings: Settings, project_dir: Path | None) -> Check:
    name = settings.profile
    try:
        rules = profile.load_rules(name, project_dir)
        res = profile.resources(settings, None, rules)
        for table in settings.tables:  # each table's overrides must hold up too
            profile.resources(settings, table, rules)
    except DjhpcError as error:
        return Check("profile", False, error.message)
    return Check("profile", True, f"{name or '(none: package defaults)'}: {res.describe()}")


def _run_dir(settings: Settings) -> Check:
    directory = Path(settings.run_dir).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as error:
        return Check("run_dir", False, f"{directory}: {error.strerror}. Set run_dir: to a "
                     "writable directory on a filesystem the compute nodes share")
    shared = "" if str(directory).startswith(str(Path.home())) or os.environ.get("CI") else (
        " (make sure compute nodes see it)")
    return Check("run_dir", True, f"{directory}{shared}")


def _credentials(last: Check) -> list[Check]:
    """Where the password comes from: a DJ_PASS alone is copied into Slurm's job records."""
    from djhpc import credentials

    if not last.ok and last.name == "database":
        return []
    try:
        warning = credentials.environment_warning()
    except Exception as error:  # a config file DataJoint itself could not read
        return [Check("credentials", False, f"{type(error).__name__}: {error}")]
    if warning:
        return [Check("credentials", True, f"warning: {warning}")]
    source = credentials.password_source().value
    return [Check("credentials", True, {"file": "password from a DataJoint config file",
                                        "none": "no password set"}.get(source, source))]
