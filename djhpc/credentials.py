"""Where the database password comes from, and keeping it out of Slurm's job records.

sbatch copies the submitting shell's environment into the job (its default
`--export=ALL`), and Slurm keeps that copy with the job: in the controller's
state files and, on sites that store job environments, in the accounting
database. A `DJ_PASS` in the environment would land there. When a DataJoint
config or secrets file holds the same password, tasks read it from there and
the variable is left out of what sbatch sees; when only the environment has
it, djhpc says so and how to move it into a private file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

PASSWORD_VARIABLE = "DJ_PASS"


class PasswordSource(str, Enum):
    NONE = "none"  # no password set anywhere (or an empty one)
    FILE = "file"  # a DataJoint config or secrets file holds the password in use
    ENVIRONMENT = "environment"  # only DJ_PASS holds it


def _json_password(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("database.password")
    nested = data.get("database")
    if value is None and isinstance(nested, dict):
        value = nested.get("password")
    return None if value is None else str(value)


def password_files(cwd: Path | None = None) -> list[Path]:
    """The files the installed DataJoint line reads a password from, most important first."""
    from djhpc import dj

    cwd = (cwd or Path.cwd()).resolve()
    if dj.is_legacy():
        # 0.14 reads the first of these that exists (datajoint/settings.py).
        local, home = cwd / "dj_local_conf.json", Path.home() / ".datajoint_config.json"
        return [local] if local.exists() else [home]
    from datajoint.settings import find_config_file, find_secrets_dir

    config = find_config_file(cwd)
    secrets = find_secrets_dir(config)
    files = [config] if config else []
    if secrets is not None:
        files.append(secrets / "database.password")
    return files


def file_password(cwd: Path | None = None) -> tuple[Path, str] | None:
    """The password a DataJoint file gives, and the file; None if none does."""
    for path in password_files(cwd):
        if path.name == "database.password":
            try:
                return path, path.read_text().strip()
            except OSError:
                continue
        value = _json_password(path)
        if value is not None:
            return path, value
    return None


def password_source(cwd: Path | None = None) -> PasswordSource:
    from_env = os.environ.get(PASSWORD_VARIABLE)
    found = file_password(cwd)
    if not from_env:
        return PasswordSource.FILE if found and found[1] else PasswordSource.NONE
    if found is not None and found[1] == from_env:
        return PasswordSource.FILE
    return PasswordSource.ENVIRONMENT


def environment_warning(cwd: Path | None = None) -> str | None:
    """What to tell a user whose password only the environment holds; None otherwise."""
    if password_source(cwd) is not PasswordSource.ENVIRONMENT:
        return None
    from djhpc import dj

    where = ("dj_local_conf.json (in the pipeline's directory) or ~/.datajoint_config.json as "
             '"database.password"' if dj.is_legacy() else
             ".secrets/database.password beside your datajoint.json")
    return (f"the database password comes from {PASSWORD_VARIABLE}, and Slurm stores each job's "
            "environment in its job record (the controller's state, on some sites the "
            f"accounting database). Put it in {where}, chmod 600 the file, and unset "
            f"{PASSWORD_VARIABLE}")


@contextmanager
def out_of_job_environment(cwd: Path | None = None) -> Iterator[bool]:
    """While sbatch runs: DJ_PASS out of the environment it copies, if a file supplies it.

    Yields True when the variable was held back. Everything else (PATH, DJ_HOST,
    DJ_USER, ...) still reaches the tasks.
    """
    value = os.environ.get(PASSWORD_VARIABLE)
    if not value or password_source(cwd) is not PasswordSource.FILE:
        yield False
        return
    del os.environ[PASSWORD_VARIABLE]
    try:
        yield True
    finally:
        os.environ[PASSWORD_VARIABLE] = value
