"""When a chunk counts as lost: the executors' evidence first, the ledger's silence last."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from djhpc import liveness
from djhpc.executors import TaskView
from djhpc.executors.local import LocalExecutor
from djhpc.executors.slurm import SlurmExecutor
from djhpc.executors.slurm_tools import TaskInfo
from djhpc.states import ChunkState, TaskState
from tests.unit.records import T0, chunk, later, run

RUNNING = ChunkState.RUNNING
QUEUED = ChunkState.QUEUED


def test_finished_chunks_are_never_lost() -> None:
    gone = TaskView(state=TaskState.FAILED, gone="Task 1_0 ended (FAILED)")
    for state in (ChunkState.DONE, ChunkState.FAILED, ChunkState.INTERRUPTED,
                  ChunkState.LOST, ChunkState.CANCELLED):
        assert liveness.lost_reason(chunk(state=state), gone, set(), later(999)) is None


def test_the_executors_evidence_is_the_reason() -> None:
    view = TaskView(state=TaskState.TIMEOUT, gone="Task 1_0 ended (TIMEOUT)")
    assert liveness.lost_reason(chunk(state=RUNNING), view, None, later(1)) == (
        "Task 1_0 ended (TIMEOUT)")


def test_a_task_seen_alive_is_not_lost_however_silent() -> None:
    silent = chunk(state=RUNNING, heartbeat=T0, connection_id=5)
    alive = TaskView(state=TaskState.RUNNING, alive=True)
    assert liveness.lost_reason(silent, alive, {1, 2}, later(3600)) is None


def test_silence_and_a_vanished_connection_make_a_running_chunk_lost() -> None:
    c = chunk(state=RUNNING, heartbeat=T0, connection_id=5)
    unknown = TaskView(state=TaskState.RUNNING)
    reason = "The task's database connection is gone and it stopped reporting"
    assert liveness.lost_reason(c, unknown, {1, 2}, later(61)) == reason
    # Either alone is not enough: a live connection, a recent report, or no process list.
    assert liveness.lost_reason(c, unknown, {5}, later(61)) is None
    assert liveness.lost_reason(c, unknown, {1, 2}, later(30)) is None
    assert liveness.lost_reason(c, unknown, None, later(61)) is None
    # A queued chunk has no connection to lose.
    assert liveness.lost_reason(chunk(state=QUEUED), unknown, {1}, later(999)) is None


def _slurm_view(c: object, tasks: dict[str, TaskInfo] | None, seconds: float) -> TaskView:
    return SlurmExecutor._view(run(), c, tasks, later(seconds))  # type: ignore[arg-type]


def test_slurm_view_of_listed_tasks() -> None:
    running = TaskInfo(job_id="1_0", state=TaskState.RUNNING, raw_state="RUNNING")
    ended = TaskInfo(job_id="1_0", state=TaskState.CANCELLED, raw_state="CANCELLED by 0")
    c = chunk(state=RUNNING, job_id="1_0")
    assert _slurm_view(c, {"1_0": running}, 5).alive
    view = _slurm_view(c, {"1_0": ended}, 5)
    assert (view.gone, view.accounting) == ("Task 1_0 ended (CANCELLED by 0)", ended)
    # Pending again after a requeue: the queued chunk waits for it.
    pending = TaskInfo(job_id="1_0", state=TaskState.PENDING, raw_state="PENDING")
    assert _slurm_view(chunk(state=QUEUED, job_id="1_0"), {"1_0": pending}, 500).alive


def test_slurm_view_of_unlisted_tasks() -> None:
    queued = chunk(state=QUEUED, job_id="1_0")
    assert _slurm_view(queued, {}, 30).gone is None  # accounting may lag a fresh submit
    assert _slurm_view(queued, {}, 61).gone == "Slurm no longer knows task 1_0"
    assert _slurm_view(queued, None, 999).gone is None  # Slurm not asked: no evidence
    never = _slurm_view(chunk(state=QUEUED), {}, 61).gone
    assert never and "never submitted" in never
    assert _slurm_view(chunk(state=QUEUED), {}, 30).gone is None


def test_local_view_follows_processes_on_this_host() -> None:
    here = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = os.getpid()
    r = run(executor="local", host=here)
    views = LocalExecutor().observe([
        (r, chunk(0, QUEUED, job_id=f"local-{me}")),
        (r, chunk(1, QUEUED, job_id=f"local-{dead.pid}")),
        (r, chunk(2, RUNNING, job_id=f"local-{me}", pid=me, host=here)),
        (r, chunk(3, RUNNING, job_id=f"local-{me}", pid=dead.pid, host=here)),
        (r, chunk(4, RUNNING, job_id=f"local-{me}", pid=dead.pid, host="elsewhere")),
    ])
    assert views[(7, 0)].alive and views[(7, 2)].alive
    assert views[(7, 1)].gone == "The local runner is gone"
    assert views[(7, 3)].gone == f"Task process {dead.pid} is gone"
    assert views[(7, 4)] == TaskView(state=TaskState.RUNNING)  # another host's: unknown


@pytest.mark.parametrize(("job_id", "owner"), [("123_4", "slurm"), ("123", "slurm"),
                                                ("local-99", "local")])
def test_each_executor_knows_its_own_job_ids(job_id: str, owner: str) -> None:
    from djhpc import executors

    assert executors.owner(run(executor="debug"), chunk(job_id=job_id)).name == owner
    assert executors.owner(run(executor="local"), chunk()).name == "local"
