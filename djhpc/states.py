"""Every state djhpc speaks of, in one place: runs, chunks and tasks.

- `RunPhase`: the run row's own phase in the ledger (recording → active, or
  cancelled). It says nothing about progress.
- `RunState`: what a run is doing, derived from its chunks (status, --json).
- `ChunkState`: a chunk's place in its life, written by tasks and by status.
- `TaskState`: what the executor says of the task working on a chunk; Slurm's
  own codes map onto it in `executors/slurm_tools.py`.

The values are lowercase strings, so they serialise to JSON and to the ledger
as they are and compare equal to the strings stored there.
"""

from __future__ import annotations

from enum import Enum


class _Text(str, Enum):
    def __str__(self) -> str:  # f-strings and format() print the value, on every Python
        return str(self.value)

    def __hash__(self) -> int:  # as the plain string: "pending" finds TaskState.PENDING in a set
        return str.__hash__(self)


class RunPhase(_Text):
    RECORDING = "recording"  # keys and chunks being written; invisible to status
    SUBMITTING = "submitting"  # recorded; its arrays are being handed to the scheduler
    ACTIVE = "active"  # every task submitted
    CANCELLED = "cancelled"


class RunState(_Text):
    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_RUN_STATES


FINAL_RUN_STATES = frozenset(
    {RunState.DONE, RunState.FAILED, RunState.INCOMPLETE, RunState.CANCELLED})


class ChunkState(_Text):
    QUEUED = "queued"  # waiting for its task (also after a requeue)
    RUNNING = "running"  # claimed by a task
    DONE = "done"
    FAILED = "failed"  # ended with at least one failed key
    INTERRUPTED = "interrupted"  # stopped by a signal, its rest left for `retry`
    LOST = "lost"  # its task is gone without finishing it
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in ACTIVE_CHUNK_STATES


ACTIVE_CHUNK_STATES = (ChunkState.QUEUED, ChunkState.RUNNING)
# States a task's last report leaves behind, with the count of its keys that
# were in the table then, read from the database (see worker).
COUNTED_CHUNK_STATES = (ChunkState.DONE, ChunkState.FAILED, ChunkState.INTERRUPTED)


class TaskState(_Text):
    """What an executor knows of a task; for Slurm, its job state normalised."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    REQUEUED = "requeued"
    SUSPENDED = "suspended"
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        """True once Slurm will not change the state again (UNKNOWN may still change)."""
        return self in FINAL_TASK_STATES


FINAL_TASK_STATES = frozenset({
    TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMEOUT,
    TaskState.OUT_OF_MEMORY, TaskState.NODE_FAIL, TaskState.PREEMPTED,
})
# A task in one of these may still make keys: `retry` waits for it.
STOPPING_TASK_STATES = frozenset({
    TaskState.PENDING, TaskState.RUNNING, TaskState.REQUEUED, TaskState.SUSPENDED})

# A chunk's state as a task state, where no scheduler knows better (local and
# debug runs, and Slurm tasks the scheduler no longer lists).
TASK_STATE_OF_CHUNK = {
    ChunkState.QUEUED: TaskState.PENDING, ChunkState.RUNNING: TaskState.RUNNING,
    ChunkState.DONE: TaskState.COMPLETED, ChunkState.FAILED: TaskState.COMPLETED,
    ChunkState.INTERRUPTED: TaskState.CANCELLED, ChunkState.LOST: TaskState.FAILED,
    ChunkState.CANCELLED: TaskState.CANCELLED,
}
