"""In-process execution, one chunk after another: a breakpoint in make() works."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from djhpc import dj
from djhpc.errors import UsageError
from djhpc.executors import Accepted, Launch, Observed, TaskView
from djhpc.executors.local import alive
from djhpc.ledger import ChunkRecord, Ledger, RunRecord
from djhpc.states import TASK_STATE_OF_CHUNK, ChunkState
from djhpc.worker import run_chunk

log = logging.getLogger(__name__)


class DebugExecutor:
    name = "debug"

    @staticmethod
    def owns(job_id: str) -> bool:
        return False  # debug chunks never get a job id

    def preview(self, launch: Launch) -> str:
        return f"{len(launch.chunks)} chunks, one after another, in this process"

    def submit(self, launch: Launch, on_accepted: Accepted) -> dict[int, str]:
        on_accepted({}, True)  # nothing to wait for: the chunks run here, now
        # The run is recorded and started by now: whatever happens in a chunk
        # is that chunk's outcome (the worker records it), not a failed submit.
        for n, chunk in enumerate(launch.chunks):
            try:
                stopped = run_chunk(launch.task(chunk, slurm=False))["state"] == ChunkState.INTERRUPTED
            except KeyboardInterrupt:
                stopped = True
            except Exception:
                log.exception("Chunk %s failed; going on with the next", chunk.chunk)
                stopped = False
            if stopped:  # Ctrl-C: the rest is not started
                ledger = Ledger(dj.connection(), launch.ledger_schema)
                rest = [c.chunk for c in launch.chunks[n + 1 :]]
                ledger.set_chunk_states(launch.run_id or 0, rest, ChunkState.CANCELLED,
                                        only_from=(ChunkState.QUEUED,))
                break
        return {}

    def follow_up(self, launch: Launch, jobs: dict[int, str]) -> str | None:
        return None  # no limits here for a task to run out of

    def job_ids(self, jobs: dict[int, str]) -> list[str]:
        return []

    def observe(self, chunks: Sequence[tuple[RunRecord, ChunkRecord]], *,
                ask_scheduler: bool = True) -> Observed:
        """A chunk runs in the process that submitted it: alive while that process is."""
        here = socket.gethostname()
        views: Observed = {}
        for run, c in chunks:
            view = TaskView(state=TASK_STATE_OF_CHUNK[c.state])
            if c.state == ChunkState.RUNNING and c.pid and (c.host or run.host) == here:
                view = (replace(view, alive=True) if alive(c.pid) else
                        replace(view, gone=f"The process {c.pid} that ran it is gone"))
            views[(run.run_id, c.chunk)] = view
        return views

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        """Nothing runs once `submit` has returned."""

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        raise UsageError(f"Run {run.run_id} ran in-process (debug): its output went to the "
                         "terminal", "Errors and tracebacks are in: djhpc errors " + str(run.run_id))
