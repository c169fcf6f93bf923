"""Where a run's chunks execute: Slurm array tasks, local processes, or in-process.

Every executor hands each chunk to the same `djhpc.worker.run_chunk`; they
differ in how a task is started, observed, found again (logs) and stopped.
Each executor alone knows its job ids' format (`123_4` for a Slurm array
task, `local-<pid>` for a local runner) and what its tasks' liveness looks
like; the rest of djhpc asks it through `observe`.

This module stays light (no submitit, no worker at import) so that
`executors.slurm_tools` can be imported by the settings code.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from djhpc.errors import UsageError
from djhpc.states import RunPhase, TaskState

if TYPE_CHECKING:
    from djhpc.executors.slurm_tools import TaskInfo
    from djhpc.ledger import ChunkRecord, RunRecord
    from djhpc.resources import Resources
    from djhpc.worker import ChunkTask

NAMES = ("auto", "slurm", "local", "debug")
# How long a run may go without job ids before its submitting command counts
# as gone, and how long Slurm may forget a queued task before it counts as lost.
GRACE = timedelta(seconds=60)
# A submission from another host (whose process we cannot see) that takes longer
# than this has died with its command.
SUBMIT_TIMEOUT = timedelta(hours=1)

# Called with each batch of job ids the scheduler accepted, as it accepts them;
# `last` once every chunk has its task.
Accepted = Callable[[dict[int, str], bool], None]


@dataclass(frozen=True, kw_only=True)
class Launch:
    """Everything an executor needs to start a run's tasks (or to show them, run_id None)."""

    run_id: int | None  # None: a preview for --dry-run, nothing recorded yet
    run_dir: str
    workdir: str
    chunks: Sequence[ChunkRecord]
    ledger_schema: str
    resources: Resources
    max_parallel: int | None = None
    max_array_size: int | None = None
    python: str | None = None
    signal_delay: int = 120
    max_requeues: int = 3
    follow_up: bool = False  # a follow-up job reruns tasks stopped for memory or time

    @property
    def name(self) -> str:
        """The run's job name as the scheduler shows it."""
        return f"djhpc-{self.run_id if self.run_id is not None else 'N'}"

    def task(self, chunk: ChunkRecord, *, slurm: bool) -> ChunkTask:
        from djhpc.resources import warning_delay
        from djhpc.worker import ChunkTask

        return ChunkTask(ledger_schema=self.ledger_schema, run_id=self.run_id or 0,
                         chunk=chunk.chunk, workdir=self.workdir,
                         signal_delay=warning_delay(self.resources, self.signal_delay),
                         max_requeues=self.max_requeues, slurm=slurm)


@dataclass(frozen=True, kw_only=True)
class TaskView:
    """What an executor sees of the task working on one chunk."""

    state: TaskState  # the scheduler's word, else the chunk's state as a task state
    alive: bool = False  # seen alive: trusted over the ledger's silence
    gone: str | None = None  # the executor's evidence that the task ended without its chunk
    accounting: TaskInfo | None = None  # the scheduler's record: elapsed, memory, CPU
    # Under RUN_TASKS only: the record of every task the run's jobs started, whichever
    # chunks they worked on (tasks pull chunks, so a chunk names only its last task).
    tasks: tuple[TaskInfo, ...] = ()


Observed = dict[tuple[int, int], TaskView]  # (run_id, chunk) -> view
FOLLOW_UP = -1  # the chunk number under which a run's follow-up job is observed
RUN_TASKS = -2  # ... and under which every task of the run's jobs is, for what they cost


class Executor(Protocol):
    name: str

    @staticmethod
    def owns(job_id: str) -> bool:
        """Whether a recorded job id is one of this executor's."""

    def preview(self, launch: Launch) -> str:
        """What would be submitted (a script, a command), for --dry-run."""

    def submit(self, launch: Launch, on_accepted: Accepted) -> dict[int, str]:
        """Start the tasks, telling `on_accepted` as the scheduler takes them; returns
        each chunk's job id (may be empty). Stopped halfway (an error, Ctrl-C), it
        cancels what was accepted before it raises."""

    def observe(self, chunks: Sequence[tuple[RunRecord, ChunkRecord]], *,
                ask_scheduler: bool = True) -> Observed:
        """Each chunk's task as the executor sees it now, in one batch for all.

        `ask_scheduler=False`: only what costs the scheduler nothing (a cheap
        refresh between the real ones)."""

    def follow_up(self, launch: Launch, jobs: dict[int, str]) -> str | None:
        """Start the job that looks at these tasks once they have all ended (see
        `escalation`); its job id, or None where there is none."""

    def job_ids(self, jobs: dict[int, str]) -> list[str]:
        """The scheduler's job ids among chunks' job ids, for the user (may be empty)."""

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        """Stop every task of the run that may still run."""

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        """(stdout, stderr) of the chunk's task."""


def slurm_available() -> bool:
    from djhpc.executors.slurm_tools import available

    return available()


def choose(name: str) -> str:
    """The executor `name` stands for; `auto` is slurm where sbatch is on PATH."""
    if name not in NAMES:
        raise UsageError(f"Unknown executor {name!r}", f"Choose one of: {', '.join(NAMES)}")
    if name == "auto":
        return "slurm" if slurm_available() else "local"
    if name == "slurm" and not slurm_available():
        raise UsageError("--executor slurm, but sbatch is not on PATH",
                         "Run on a cluster login node, load Slurm's module, or use --executor local")
    return name


def get(name: str) -> Executor:
    """The executor for a new submission (checked: `slurm` needs sbatch)."""
    return of(choose(name))


def of(name: str) -> Executor:
    """The executor a run was recorded with, for its logs, status and cancel."""
    if name == "slurm":
        from djhpc.executors.slurm import SlurmExecutor

        return SlurmExecutor()
    if name == "local":
        from djhpc.executors.local import LocalExecutor

        return LocalExecutor()
    from djhpc.executors.debug import DebugExecutor

    return DebugExecutor()


def owner(run: RunRecord, chunk: ChunkRecord) -> Executor:
    """The executor that ran (or runs) the chunk's task.

    Usually the run's own; a retry may have moved a run elsewhere, so a
    recorded job id says which executor's it is.
    """
    if chunk.job_id:
        for name in ("slurm", "local"):
            executor = of(name)
            if executor.owns(chunk.job_id):
                return executor
    return of(run.executor)


def observe(chunks: Sequence[tuple[RunRecord, ChunkRecord]], *,
            ask_scheduler: bool = True) -> Observed:
    """Every chunk's task, each asked of its own executor (one batch per executor)."""
    groups: dict[str, tuple[Executor, list[tuple[RunRecord, ChunkRecord]]]] = {}
    for run, chunk in chunks:
        executor = owner(run, chunk)
        groups.setdefault(executor.name, (executor, []))[1].append((run, chunk))
    views: Observed = {}
    for executor, pairs in groups.values():
        views.update(executor.observe(pairs, ask_scheduler=ask_scheduler))
    return views


def never_submitted(run: RunRecord, chunk: ChunkRecord, stamp: datetime) -> str | None:
    """Why a chunk without a job id will never get a task: its submission is over, or
    the command submitting it is gone. None while it may still get one."""
    if chunk.job_id:
        return None
    if run.state == RunPhase.SUBMITTING:
        pid = run.settings.get("submitter_pid")
        if run.host == socket.gethostname() and isinstance(pid, int):
            from djhpc.executors.local import alive

            if alive(pid):
                return None
        elif stamp - run.created <= SUBMIT_TIMEOUT:
            return None
    elif stamp - run.created <= GRACE:
        return None
    return "The task was never submitted (the submitting command was stopped)"


def default_parallel() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_run_dir(path: str | Path) -> Path:
    """The run's directory, private to the user (0700): it holds scripts and logs."""
    directory = Path(path).expanduser()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    return directory
