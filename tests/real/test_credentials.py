"""The database password never lands in anything djhpc writes."""

from __future__ import annotations

import json
import os
import stat
import uuid

import pytest

from .conftest import Project, database_user, q


@pytest.mark.usefixtures("slurm")
def test_password_appears_nowhere(project: Project) -> None:
    password = f"Secret-{uuid.uuid4().hex}"
    with database_user(password, everything=True) as user:
        project.make_data("--sessions", "1", "--units", "5", "--empty-units", "1")
        env = project.env(DJ_USER=user, DJ_PASS=password)
        outputs = []
        for executor in ("slurm", "local"):
            result = project.djhpc("submit", "MyTable", "-e", executor, "--tasks", "3", "--wait",
                                   "--json", env=env)
            assert result.returncode == 1, result.stderr  # the empty unit fails
            outputs += [result.stdout, result.stderr]
            run_id = str(json.loads(result.stdout)["run_id"])
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

    rows = {table: repr(project.sql(f"SELECT * FROM {q(project.ledger)}.{q(table)}"))
            for table in ("run", "chunk", "error")}
    assert "MyTable" in rows["run"] and not any(password in text for text in rows.values())
