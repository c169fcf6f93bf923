"""When a chunk counts as lost: the executors' evidence first, the ledger's silence last."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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
        assert liveness.lost_reason(chunk(state=state), gone) is None


def test_the_executors_evidence_is_the_reason() -> None:
    view = TaskView(state=TaskState.TIMEOUT, gone="Task 1_0 ended (TIMEOUT)")
    assert liveness.lost_reason(chunk(state=RUNNING), view) == "Task 1_0 ended (TIMEOUT)"


def test_silence_alone_never_makes_a_chunk_lost() -> None:
    # No word for an hour and its connection gone: a long make() looks like this.
    silent = chunk(state=RUNNING, heartbeat=T0, connection_id=5)
    assert liveness.lost_reason(silent, TaskView(state=TaskState.RUNNING)) is None
    assert liveness.lost_reason(silent, None) is None  # the executor was not asked
    alive = TaskView(state=TaskState.RUNNING, alive=True)
    assert liveness.lost_reason(silent, alive) is None


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
    running = chunk(state=RUNNING, job_id="1_0")
    assert _slurm_view(running, {}, 61).gone == "Slurm no longer knows task 1_0"
    never = _slurm_view(chunk(state=QUEUED), {}, 61).gone
    assert never and "never submitted" in never
    assert _slurm_view(chunk(state=QUEUED), {}, 30).gone is None


def test_local_view_follows_processes_on_this_host() -> None:
    here = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = os.getpid()  # pytest's command line holds no "djhpc": another program's pid
    task = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "djhpc"])
    # Until the child has exec'd, its command line is still pytest's.
    deadline = time.monotonic() + 10
    while b"djhpc" not in Path(f"/proc/{task.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    r = run(executor="local", host=here)
    try:
        views = LocalExecutor().observe([
            (r, chunk(0, QUEUED, job_id=f"local-{task.pid}")),
            (r, chunk(1, QUEUED, job_id=f"local-{dead.pid}")),
            (r, chunk(2, RUNNING, job_id=f"local-{task.pid}", pid=task.pid, host=here)),
            (r, chunk(3, RUNNING, job_id=f"local-{me}", pid=dead.pid, host=here)),
            (r, chunk(4, RUNNING, job_id=f"local-{me}", pid=dead.pid, host="elsewhere")),
            (r, chunk(5, RUNNING, job_id=f"local-{me}", pid=me, host=here)),
        ])
    finally:
        task.kill()
    assert views[(7, 0)].alive and views[(7, 2)].alive
    assert views[(7, 1)].gone == "The local runner is gone"
    assert views[(7, 3)].gone == f"Task process {dead.pid} is gone"
    assert views[(7, 4)] == TaskView(state=TaskState.RUNNING)  # another host's: unknown
    assert views[(7, 5)].gone == f"Task process {me} is gone"  # its pid, reused


@pytest.mark.parametrize(("job_id", "owner"), [("123_4", "slurm"), ("123", "slurm"),
                                                ("local-99", "local")])
def test_each_executor_knows_its_own_job_ids(job_id: str, owner: str) -> None:
    from djhpc import executors

    assert executors.owner(run(executor="debug"), chunk(job_id=job_id)).name == owner
    assert executors.owner(run(executor="local"), chunk()).name == "local"


def test_a_chunk_waiting_for_its_array_is_not_lost_while_its_submit_runs() -> None:
    from dataclasses import replace

    from djhpc.executors import never_submitted
    from djhpc.states import RunPhase

    here = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    submitting = run(state=RunPhase.SUBMITTING, host=here, settings={"submitter_pid": os.getpid()})
    waiting = chunk(state=QUEUED)
    assert never_submitted(submitting, waiting, later(3600)) is None  # however long it takes
    gone = replace(submitting, settings={"submitter_pid": dead.pid})
    assert "never submitted" in (never_submitted(gone, waiting, later(1)) or "")
    elsewhere = replace(submitting, host="login2")  # its process cannot be seen from here
    assert never_submitted(elsewhere, waiting, later(600)) is None
    assert never_submitted(elsewhere, waiting, later(7200)) is not None
    assert never_submitted(gone, chunk(job_id="5_0"), later(7200)) is None
