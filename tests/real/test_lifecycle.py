"""Runs through their life and their faults: status, errors, logs, cancel, retry.

Each fault (a task killed, a job cancelled under it, its database connection
killed, a time limit expiring) ends, after `djhpc retry RUN --wait`, with every
key of the key_source in the table exactly once, no key reserved, and the error
history telling what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import POSTGRES, Project, q


def wait_for(check: Callable[[], Any], timeout: float = 120, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {check}")


def chunks(project: Project, run_id: int) -> list[dict[str, Any]]:
    cols = ("chunk", "attempt", "state", "job_id", "pid", "connection_id", "n_done")
    rows = project.sql(f"SELECT {', '.join(cols)} FROM {q(project.ledger)}.{q('chunk')} "
                       f"WHERE run_id = {int(run_id)} ORDER BY chunk")
    return [dict(zip(cols, row, strict=True)) for row in rows]


def running_chunk(project: Project, run_id: int) -> dict[str, Any]:
    return wait_for(lambda: next((c for c in chunks(project, run_id)
                                  if c["state"] == "running" and c["n_done"] >= 1), None))


def status(project: Project, run_id: int) -> dict[str, Any]:
    return project.djhpc_json("status", str(run_id))


def settled(project: Project, run_id: int) -> dict[str, Any]:
    """The run's status once it has ended and no task of it runs any more."""
    def check() -> dict[str, Any] | None:
        report = status(project, run_id)
        busy = {"pending", "running", "requeued"} & set(report["tasks"])
        return report if report["state"] not in ("queued", "running") and not busy else None
    return wait_for(check, timeout=240, every=2)


def assert_complete_after_retry(project: Project, run_id: int, total: int) -> dict[str, Any]:
    result = project.djhpc("retry", str(run_id), "--wait", "--json",
                           env=project.env(EXAMPLE_MAKE_SECONDS="0"))
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)["status"]
    assert report["state"] == "done" and report["attempts"] >= 2
    assert report["keys"]["done"] == report["keys"]["total"] == total
    assert report["keys"]["reserved"] == 0
    assert project.table_rows() == total  # each key once: the table's primary key says so
    assert not [c for c in chunks(project, run_id) if c["state"] in ("running", "queued")]
    return report


def history(project: Project, run_id: int) -> list[str]:
    return [g["message"] for g in project.djhpc_json("errors", str(run_id))["groups"]]


@pytest.fixture
def slow(project: Project) -> Project:
    project.make_data("--sessions", "1", "--units", "6")  # 24 keys
    # Chunks of 8+ keys at 1 s each outlast a task's first progress report (5 s).
    project.extra_env["EXAMPLE_MAKE_SECONDS"] = "1"
    return project


@pytest.mark.usefixtures("slurm")
def test_a_queued_run_and_its_cancellation(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")
    blocker = subprocess.run(["sbatch", "--parsable", "--wrap", "sleep 60", "-o", "/dev/null"],
                             capture_output=True, text=True, check=True).stdout.strip()
    try:
        env = project.env(DJHPC_SLURM=f"{{dependency: 'afterany:{blocker}'}}")
        run_id = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "2",
                                    env=env)["run_id"]
        report = status(project, run_id)
        assert report["state"] == "queued" and report["tasks"] == {"pending": 2}, json.dumps(report)
        assert project.djhpc_json("cancel", str(run_id))["state"] == "cancelled"
        report = settled(project, run_id)
        assert report["keys"] == {"total": 8, "done": 0, "error": 0, "reserved": 0,
                                  "remaining": 8}
        assert {c["state"] for c in report["chunks"]} == {"cancelled"}
    finally:
        subprocess.run(["scancel", blocker], check=False)


def test_status_views_errors_and_logs(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "5", "--empty-units", "2")
    run = project.djhpc_json("submit", "MyTable", "-e", "local", "--tasks", "2", "--wait",
                             expect=1)
    run_id = str(run["run_id"])
    report = status(project, int(run_id))
    assert report["state"] == "failed" and report["keys"]["error"] == 2
    assert {"run_id", "target", "state", "keys", "tasks", "chunks", "core_hours", "started",
            "finished"} <= set(report)
    assert {"chunk", "state", "keys", "done", "error", "job", "host"} <= set(report["chunks"][0])

    text = project.djhpc("status", run_id).stdout
    assert "CHUNK" in text and "Top errors" in text and "empty spike train" in text
    listing = project.djhpc("status").stdout
    assert "MyTable" in listing and "failed" in listing
    table = project.djhpc("status", "MyTable")
    assert table.returncode == 0 and "18/20 in the table" in table.stdout
    assert project.djhpc_json("status", "MyTable")["progress"] == {"remaining": 2, "total": 20}
    errors = project.djhpc("errors", run_id).stdout
    assert "2x ValueError: Unit {…} has an empty spike train" in errors
    assert "Traceback" in errors and "key animal_name=" in errors
    log = project.djhpc("logs", run_id, "--stderr")
    assert log.returncode == 0 and "task-" in log.stderr  # the header names the log file
    watched = project.djhpc("status", run_id, "--watch", "--interval", "1", timeout=60)
    assert watched.returncode == 0 and "failed" in watched.stdout  # a finished run: one frame


@pytest.mark.usefixtures("slurm")
def test_cancel_leaves_nothing_reserved_and_retry_finishes(slow: Project) -> None:
    run_id = slow.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "3",
                             "--max-parallel", "2")["run_id"]
    running_chunk(slow, run_id)
    cancelled = slow.djhpc_json("cancel", str(run_id))
    assert cancelled["state"] == "cancelled" and cancelled["keys"]["reserved"] == 0
    report = settled(slow, run_id)
    assert report["state"] == "cancelled" and report["keys"]["reserved"] == 0
    assert 0 < report["keys"]["done"] < 24
    assert_complete_after_retry(slow, run_id, 24)


def test_kill_9_of_a_local_task(slow: Project) -> None:
    run_id = slow.djhpc_json("submit", "MyTable", "-e", "local", "--tasks", "2")["run_id"]
    victim = running_chunk(slow, run_id)
    os.kill(int(victim["pid"]), signal.SIGKILL)
    report = settled(slow, run_id)
    assert report["state"] == "incomplete"
    assert "lost" in [c["state"] for c in report["chunks"]]
    assert_complete_after_retry(slow, run_id, 24)
    assert any("is gone before finishing its chunk" in m for m in history(slow, run_id))


@pytest.mark.usefixtures("slurm")
def test_kill_9_of_a_slurm_task(slow: Project) -> None:
    run_id = slow.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "2")["run_id"]
    victim = running_chunk(slow, run_id)
    os.kill(int(victim["pid"]), signal.SIGKILL)  # the node is this machine
    settled(slow, run_id)
    assert_complete_after_retry(slow, run_id, 24)
    assert any("before finishing its chunk" in m for m in history(slow, run_id))


@pytest.mark.usefixtures("slurm")
def test_scancel_under_a_run(slow: Project) -> None:
    out = slow.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "3")
    victim = running_chunk(slow, out["run_id"])
    subprocess.run(["scancel", victim["job_id"]], check=True)
    report = settled(slow, out["run_id"])
    assert report["state"] in ("incomplete", "done") and report["keys"]["reserved"] == 0
    if report["state"] == "done":  # a task still running pulled the chunk handed back
        assert slow.table_rows() == 24
    else:
        assert_complete_after_retry(slow, out["run_id"], 24)
    messages = history(slow, out["run_id"])
    assert any("Interrupted by SIGTERM" in m for m in messages), messages


def test_database_connection_killed_mid_run(slow: Project) -> None:
    run_id = slow.djhpc_json("submit", "MyTable", "-e", "local", "--tasks", "1")["run_id"]
    victim = running_chunk(slow, run_id)
    kill = ("SELECT pg_terminate_backend({})" if POSTGRES else "KILL {}")
    slow.sql(kill.format(int(victim["connection_id"])))
    report = settled(slow, run_id)
    # The task reconnected and carried on: nothing lost, nothing to retry.
    assert report["state"] == "done" and report["keys"]["done"] == 24, (
        report, slow.djhpc("errors", str(run_id)).stdout,
        slow.djhpc("logs", str(run_id), "--stderr").stdout[-3000:])
    (after,) = chunks(slow, run_id)
    assert after["connection_id"] != victim["connection_id"]
    assert slow.table_rows() == 24


@pytest.mark.once  # three minutes of Slurm's clock; nothing in it depends on DataJoint
@pytest.mark.usefixtures("slurm")
def test_a_run_whose_time_limit_is_too_short_completes_by_continuation(
        project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "12")  # 48 keys of 1.5 s: > 1 minute
    log = project.tmp / "makes.log"
    env = project.env(EXAMPLE_MAKE_SECONDS="1.5", DJHPC_REQUEUE="1", EXAMPLE_MAKE_LOG=str(log))
    out = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "1", "--time", "1",
                             "--wait", env=env)
    report = out["status"]
    assert report["state"] == "done" and report["keys"]["done"] == 48, report
    assert project.table_rows() == 48
    made = log.read_text().splitlines()
    assert len(made) == 48  # no make() cut short and started again: each key once
    assert report["attempts"] >= 2 and report["escalations"][0]["reason"] == "continued"
    messages = history(project, out["run_id"])
    # Stopped before a key that would not end in time, or by Slurm's warning (USR2 comes
    # up to 30 s earlier than asked for), then continued.
    assert any(m.startswith(("Interrupted by the time limit", "Interrupted by SIGUSR2"))
               for m in messages), messages
