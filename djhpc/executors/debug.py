"""In-process execution, one chunk after another: a breakpoint in make() works."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from djhpc import dj
from djhpc.executors import Launch
from djhpc.ledger import CANCELLED, INTERRUPTED, QUEUED, ChunkRecord, Ledger, RunRecord
from djhpc.worker import run_chunk


class DebugExecutor:
    name = "debug"

    def preview(self, launch: Launch) -> str:
        return f"{len(launch.chunks)} chunks, one after another, in this process"

    def submit(self, launch: Launch) -> dict[int, str]:
        for n, chunk in enumerate(launch.chunks):
            outcome = run_chunk(launch.task(chunk))
            if outcome["state"] == INTERRUPTED:  # Ctrl-C: the rest is not started
                ledger = Ledger(dj.connection(), launch.ledger_schema)
                rest = [c.chunk for c in launch.chunks[n + 1 :]]
                ledger.set_chunk_states(launch.run.run_id, rest, CANCELLED, only_from=(QUEUED,))
                break
        return {}

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        """Nothing runs once `submit` has returned."""

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        folder = Path(run.run_dir)
        return folder / "debug.out", folder / "debug.err"
