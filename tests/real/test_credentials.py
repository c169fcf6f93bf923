"""The database password never lands in anything djhpc writes."""

from __future__ import annotations

import os
import stat
import uuid

import pytest

from .conftest import POSTGRES, Project, connect, q


@pytest.mark.usefixtures("slurm")
def test_password_appears_nowhere(project: Project) -> None:
    user = f"djhpc_pw_{uuid.uuid4().hex[:6]}"
    password = f"Secret-{uuid.uuid4().hex}"
    conn = connect()
    cur = conn.cursor()
    if POSTGRES:
        cur.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
    else:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'")
    try:
        project.make_data("--sessions", "1", "--units", "5", "--empty-units", "1")
        env = project.env(DJ_USER=user, DJ_PASS=password)
        outputs = []
        for executor in ("slurm", "local"):
            result = project.djhpc("submit", "MyTable", "-e", executor, "--tasks", "3", "--wait",
                                   "--json", env=env)
            assert result.returncode == 1, result.stderr  # the empty unit fails
            outputs += [result.stdout, result.stderr]
            run_id = str(__import__("json").loads(result.stdout)["run_id"])
            for args in (("status", run_id, "--json"), ("errors", run_id, "--json"),
                         ("logs", run_id), ("logs", run_id, "--stderr"), ("status",)):
                shown = project.djhpc(*args, env=env)
                outputs += [shown.stdout, shown.stderr]
        assert not any(password in text for text in outputs)

        files = [p for p in project.run_dir.rglob("*") if p.is_file()]
        kinds = {p.suffix for p in files}
        assert {".sh", ".pkl", ".out", ".err", ".json"} <= kinds, kinds  # scripts, pickles, logs
        for path in files:
            assert password.encode() not in path.read_bytes(), path
        for run_dir in project.run_dir.iterdir():
            assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700, run_dir

        ledger = q(project.ledger)
        cur.execute(f"SELECT * FROM {ledger}.{q('run')}")
        runs = repr(cur.fetchall())
        cur.execute(f"SELECT * FROM {ledger}.{q('chunk')}")
        chunks = repr(cur.fetchall())
        cur.execute(f"SELECT * FROM {ledger}.{q('error')}")
        errors = repr(cur.fetchall())
        assert "MyTable" in runs and password not in runs + chunks + errors
    finally:
        cur.execute(f"DROP ROLE {user}" if POSTGRES else f"DROP USER '{user}'@'%'")
        conn.close()
