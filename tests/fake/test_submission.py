"""Submitting is a state of the run: a slow controller loses no chunk."""

from __future__ import annotations

import subprocess
import time

from tests.fake.conftest import FakeSlurm
from tests.real.conftest import BIN, POSTGRES, Project, q
from tests.real.test_lifecycle import chunks, wait_for


def submitted(project: Project) -> list[dict[str, object]]:
    """Chunks of run 1 with a job id; none while the ledger is still being created."""
    try:
        return [c for c in chunks(project, 1) if c["job_id"]]
    except Exception:
        return []


def test_a_slow_submission_with_a_status_meanwhile_loses_no_chunk(
        project: Project, fake_slurm: FakeSlurm) -> None:
    project.make_data("--sessions", "1", "--units", "3")  # 12 keys: 12 arrays of one task
    env = fake_slurm.env(FAKE_SBATCH_SLEEP="1", DJHPC_MAX_ARRAY_SIZE="1")
    submit = subprocess.Popen([str(BIN / "djhpc"), "submit", "MyTable", "-e", "slurm",
                               "--chunk-size", "1", "-y", "--json"], cwd=project.workdir,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Job ids are recorded as each array is accepted, not at the end.
        first = wait_for(lambda: submitted(project), 60)[0]
        assert first["job_id"] == "9001"  # an array of one task is a plain job
        # As if this submission had been going on for ten minutes.
        ago = "INTERVAL '10 minutes'" if POSTGRES else "INTERVAL 10 MINUTE"
        project.sql(f"UPDATE {q(project.ledger)}.{q('run')} SET created = created - {ago}")
        meanwhile = project.djhpc_json("status", "1", env=env)
        assert meanwhile["state"] == "submitting"
        assert "lost" not in [c["state"] for c in meanwhile["chunks"]], meanwhile
        _, err = submit.communicate(timeout=120)
    finally:
        submit.kill()
    assert submit.returncode == 0, err
    after = project.djhpc_json("status", "1", env=env)
    assert after["state"] == "queued" and after["tasks"] == {"pending": 12}, after
    assert all(c["job"] == str(9001 + c["chunk"]) for c in after["chunks"])


def test_a_submit_killed_halfway_leaves_its_unsubmitted_chunks_lost(
        project: Project, fake_slurm: FakeSlurm) -> None:
    project.make_data("--sessions", "1", "--units", "3")
    env = fake_slurm.env(FAKE_SBATCH_SLEEP="1", DJHPC_MAX_ARRAY_SIZE="1")
    submit = subprocess.Popen([str(BIN / "djhpc"), "submit", "MyTable", "-e", "slurm",
                               "--chunk-size", "1", "-y"], cwd=project.workdir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(submitted(project)) >= 2, 60)
    submit.kill()  # SIGKILL: no chance to clean up
    submit.wait()
    time.sleep(0.5)
    report = project.djhpc_json("status", "1", env=env)
    states = [c["state"] for c in report["chunks"]]
    with_job = len([c for c in report["chunks"] if c["job"]])
    assert states.count("queued") == with_job and states.count("lost") == 12 - with_job
    assert any("never submitted" in g["message"]
               for g in project.djhpc_json("errors", "1", env=env)["groups"])
