"""Where a run's chunks execute: Slurm array tasks, local processes, or in-process.

Every executor hands each chunk to the same `djhpc.worker.run_chunk`; they only
differ in how a task is started, found again (logs) and stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from djhpc.errors import UsageError
from djhpc.ledger import ChunkRecord, RunRecord
from djhpc.profile import Resources, warning_delay

# By name: the submodule executors.slurm would shadow `djhpc.slurm` here.
from djhpc.slurm import available as slurm_available
from djhpc.worker import ChunkTask

NAMES = ("auto", "slurm", "local", "debug")


@dataclass(frozen=True)
class Launch:
    """Everything an executor needs to start a run's tasks."""

    run: RunRecord
    chunks: Sequence[ChunkRecord]
    ledger_schema: str
    resources: Resources
    max_parallel: int | None = None
    max_array_size: int | None = None
    python: str | None = None
    signal_delay: int = 120
    max_requeues: int = 3

    def task(self, chunk: ChunkRecord) -> ChunkTask:
        return ChunkTask(self.ledger_schema, self.run.run_id, chunk.chunk, self.run.workdir,
                         warning_delay(self.resources, self.signal_delay), self.max_requeues,
                         slurm=self.run.executor == "slurm")


class Executor(Protocol):
    name: str

    def preview(self, launch: Launch) -> str:
        """What would be submitted (a script, a command), for --dry-run."""

    def submit(self, launch: Launch) -> dict[int, str]:
        """Start the tasks; returns each chunk's job id (may be empty)."""

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        """Stop every task of the run that may still run."""

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        """(stdout, stderr) of the chunk's task."""


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
