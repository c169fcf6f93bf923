"""In-process execution, one chunk after another: a breakpoint in make() works."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from djhpc.executors import Launch
from djhpc.ledger import ChunkRecord, RunRecord
from djhpc.worker import run_chunk


class DebugExecutor:
    name = "debug"

    def preview(self, launch: Launch) -> str:
        return f"{len(launch.chunks)} chunks, one after another, in this process"

    def submit(self, launch: Launch) -> dict[int, str]:
        for chunk in launch.chunks:
            run_chunk(launch.task(chunk))
        return {}

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        """Nothing runs once `submit` has returned."""

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        folder = Path(run.run_dir)
        return folder / "debug.out", folder / "debug.err"
