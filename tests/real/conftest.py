"""The real tier: a real MariaDB or PostgreSQL, the real local Slurm, the real CLI.

Every test gets its own schemas (a unique prefix) and drops them afterwards.
The database comes from DJ_HOST/DJ_USER/DJ_PASS/DJ_PORT/DJ_BACKEND, with the
development machines' defaults.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BACKEND = os.environ.get("DJ_BACKEND", "mysql")
POSTGRES = BACKEND == "postgresql"
BIN = Path(sys.executable).parent


def db_env() -> dict[str, str]:
    return {
        "DJ_HOST": os.environ.get("DJ_HOST", "127.0.0.1"),
        "DJ_USER": os.environ.get("DJ_USER", "postgres" if POSTGRES else "root"),
        "DJ_PASS": os.environ.get("DJ_PASS", ""),
        "DJ_PORT": os.environ.get("DJ_PORT", "5432" if POSTGRES else "3306"),
        "DJ_BACKEND": BACKEND,
        "DJ_USE_TLS": "false",
    }


def connect(env: dict[str, str] | None = None) -> Any:
    """A plain driver connection for the tests' own checks (not DataJoint's)."""
    env = env or db_env()
    if POSTGRES:
        import psycopg2

        conn = psycopg2.connect(host=env["DJ_HOST"], port=int(env["DJ_PORT"]),
                                user=env["DJ_USER"], password=env["DJ_PASS"] or None,
                                dbname=os.environ.get("DJ_DATABASE_NAME", "postgres"))
        conn.autocommit = True
        return conn
    import pymysql

    return pymysql.connect(host=env["DJ_HOST"], port=int(env["DJ_PORT"]), user=env["DJ_USER"],
                           password=env["DJ_PASS"], autocommit=True)


def q(name: str) -> str:
    return f'"{name}"' if POSTGRES else f"`{name}`"


def drop_schema(name: str) -> None:
    """Drop a schema a test made for itself, with everything in it."""
    conn = connect()
    try:
        conn.cursor().execute(f"DROP SCHEMA IF EXISTS {q(name)} CASCADE" if POSTGRES
                              else f"DROP DATABASE IF EXISTS {q(name)}")
    finally:
        conn.close()


@dataclass
class Project:
    """A disposable copy of the example pipeline's schemas, and the CLI to drive it."""

    prefix: str
    tmp: Path
    workdir: Path = EXAMPLES
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A private copy of the example, configured the way its DataJoint line
        # expects: 0.14 users keep settings in dj_local_conf.json (2.x ignores it).
        self.workdir = self.tmp / "examples"
        shutil.copytree(EXAMPLES, self.workdir, ignore=shutil.ignore_patterns("__pycache__"))
        (self.workdir / "dj_local_conf.json").write_text(json.dumps({"database.use_tls": False}))

    @property
    def ledger(self) -> str:
        return f"{self.prefix}_ledger"

    @property
    def run_dir(self) -> Path:
        return self.tmp / "runs"

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJHPC_", "DJ_"))}
        env.update(db_env())
        env.update({
            "EXAMPLE_PREFIX": self.prefix,
            "DJHPC_LEDGER_SCHEMA": self.ledger,
            "DJHPC_RUN_DIR": str(self.run_dir),
            "XDG_CONFIG_HOME": str(self.tmp / "xdg"),
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        env.update(self.extra_env)
        env.update(more)
        return env

    def djhpc(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "djhpc"), *args], cwd=cwd or self.workdir,
                              env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def djhpc_json(self, *args: str, expect: int = 0, **kw: Any) -> Any:
        result = self.djhpc(*args, "--json", **kw)
        assert result.returncode == expect, result.stderr + result.stdout
        return json.loads(result.stdout)

    def python(self, code: str, timeout: float = 300) -> Any:
        """Run `code` in the example folder; it prints one JSON value, which is returned."""
        result = subprocess.run([sys.executable, "-c", code], cwd=self.workdir, env=self.env(),
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def make_data(self, *args: str) -> None:
        result = subprocess.run([sys.executable, "make_data.py", *args], cwd=self.workdir,
                                env=self.env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr

    def table_rows(self) -> int:
        return int(self.python("import json, my_analysis as m; print(len(m.MyTable()))"))

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = connect()
        try:
            cur = conn.cursor()
            cur.execute(statement, args)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def ledger_runs(self) -> int:
        try:
            return int(self.sql(f"SELECT COUNT(*) FROM {q(self.ledger)}.{q('run')}")[0][0])
        except Exception:
            return 0  # no ledger at all: nothing recorded

    def drop(self) -> None:
        subprocess.run([sys.executable, "make_data.py", "--drop"], cwd=self.workdir, env=self.env(),
                       capture_output=True, text=True, timeout=300)
        drop_schema(self.ledger)


@contextmanager
def database_user(password: str, *, everything: bool = False,
                  schemas: str | None = None) -> Iterator[str]:
    """A throwaway database user: all rights, or only on schemas matching `schemas`."""
    user = f"djhpc_u{uuid.uuid4().hex[:8]}"
    conn = connect()
    cur = conn.cursor()
    if POSTGRES:
        cur.execute(f"CREATE ROLE {user} LOGIN {'SUPERUSER' if everything else ''} "
                    f"PASSWORD '{password}'")
    else:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        where = "*" if everything else f"`{schemas}`"
        cur.execute(f"GRANT ALL PRIVILEGES ON {where}.* TO '{user}'@'%'")
    try:
        yield user
    finally:
        if POSTGRES:  # a role that created schemas owns them: hand them over first
            cur.execute(f"REASSIGN OWNED BY {user} TO CURRENT_USER")
            cur.execute(f"DROP OWNED BY {user}")
        cur.execute(f"DROP ROLE {user}" if POSTGRES else f"DROP USER '{user}'@'%'")
        conn.close()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    project = Project(prefix=f"djhpc_t{uuid.uuid4().hex[:8]}", tmp=tmp_path)
    yield project
    project.drop()
    shutil.rmtree(project.run_dir, ignore_errors=True)


def slurm_up() -> bool:
    return shutil.which("sbatch") is not None and subprocess.run(
        ["sinfo"], capture_output=True).returncode == 0


@pytest.fixture
def slurm() -> None:
    """The local Slurm must run; the test command starts it (scripts/local-slurm.sh)."""
    if not slurm_up():
        pytest.fail("Slurm is not running: start it with `bash scripts/local-slurm.sh start`")
