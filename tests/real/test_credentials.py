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


def _stored_job_environment(job_id: str) -> dict[str, str]:
    """The environment Slurm keeps with a job: its controller's state files (slurmctld).

    On Slurm 22.05 neither `scontrol show job -dd` nor `sacct` (without
    AccountingStoreFlags=job_env) shows it; the controller's StateSaveLocation
    holds it as NUL-separated `NAME=value` entries in hash.<id % 10>/job.<id>/environment.
    """
    import subprocess
    from pathlib import Path

    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                            check=True).stdout
    state = next(line.split("=", 1)[1].strip() for line in config.splitlines()
                 if line.startswith("StateSaveLocation"))
    path = Path(state) / f"hash.{int(job_id) % 10}" / f"job.{job_id}" / "environment"
    entries = path.read_bytes().split(b"\0")
    pairs = (e.decode(errors="replace").partition("=") for e in entries if b"=" in e)
    return {name.rsplit("\n", 1)[-1]: value for name, _, value in pairs}


def _wait_until_final(project: Project, run_id: int, env: dict[str, str]) -> dict[str, object]:
    import time

    deadline = time.monotonic() + 300
    while True:
        report = project.djhpc_json("status", str(run_id), env=env)
        if report["state"] not in ("queued", "running", "submitting") or time.monotonic() > deadline:
            return report  # type: ignore[no-any-return]
        time.sleep(2)


@pytest.mark.usefixtures("slurm")
def test_password_from_a_config_file_stays_out_of_slurms_job_record(project: Project) -> None:
    password = f"Secret-{uuid.uuid4().hex}"
    with database_user(password, everything=True) as user:
        project.make_data("--sessions", "1", "--units", "3")
        # Both lines' files: 0.14 reads dj_local_conf.json, 2.x datajoint.json.
        for name in ("dj_local_conf.json", "datajoint.json"):
            path = project.workdir / name
            settings = json.loads(path.read_text()) if path.exists() else {}
            path.write_text(json.dumps({**settings, "database.password": password}))
            path.chmod(0o600)
        env = project.env(DJ_USER=user, DJ_PASS=password)
        result = project.djhpc("submit", "MyTable", "-e", "slurm", "--tasks", "2", "--json",
                               env=env)
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr  # the file holds it: nothing to warn about
        submitted = json.loads(result.stdout)
        stored = _stored_job_environment(submitted["jobs"][0])
        assert "DJ_PASS" not in stored and password not in repr(stored)
        assert stored["DJ_USER"] == user and stored["DJ_HOST"] == env["DJ_HOST"]
        assert "PATH" in stored
        # The tasks found the password in the file: every key is made.
        assert _wait_until_final(project, submitted["run_id"], env)["state"] == "done"


@pytest.mark.usefixtures("slurm")
def test_password_only_in_the_environment_is_warned_about(project: Project) -> None:
    password = f"Secret-{uuid.uuid4().hex}"
    with database_user(password, everything=True) as user:
        project.make_data("--sessions", "1", "--units", "2")
        env = project.env(DJ_USER=user, DJ_PASS=password)
        doctor = project.djhpc_json("doctor", env=env)
        detail = next(c["detail"] for c in doctor["checks"] if c["name"] == "credentials")
        assert "Slurm stores" in detail and "chmod 600" in detail
        first = project.djhpc("submit", "MyTable", "-e", "slurm", "--json", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stderr.startswith("Warning: the database password comes from DJ_PASS")
        json.loads(first.stdout)  # the warning is on stderr, stdout stays JSON
        # Slurm did copy it (the documented risk the warning is about).
        job = json.loads(first.stdout)["jobs"][0]
        assert _stored_job_environment(job).get("DJ_PASS") == password
        _wait_until_final(project, json.loads(first.stdout)["run_id"], env)
        second = project.djhpc("submit", "MyTable", "-e", "slurm", "--json", env=env)
        assert "Warning" not in second.stderr  # said once, on the first submit
