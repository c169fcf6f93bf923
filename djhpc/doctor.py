"""`djhpc doctor`: each thing djhpc relies on, checked, with what to do if it fails."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from djhpc import dj, resources
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
    checks.append(_slurm(settings))
    checks.append(_profile(settings, sources.project_file.parent if sources.project_file else None))
    checks.append(_run_dir(settings))
    return checks


def _database(settings: Settings) -> list[Check]:
    dj.quiet()
    try:
        conn = dj.connection()
    except DjhpcError as error:
        return [Check(name="database", ok=False, detail=error.message)]
    d = dj.dialect(conn)
    checks = [Check(name="database", ok=True, detail=f"{d.backend} via DataJoint {dj.major_version()}.x, "
                    f"user {dj.db_user(conn)}")]
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
    except DjhpcError as error:
        return Check(name="profile", ok=False, detail=error.message)
    return Check(name="profile", ok=True, detail=f"{name or '(none: package defaults)'}: {res.describe()}")


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
