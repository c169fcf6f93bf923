"""Local processes: the same tasks as on Slurm, on this machine.

`submit` starts one detached runner process (its own session, so it outlives
the command that started it); the runner keeps at most `max_parallel` task
processes going, each running one chunk through `djhpc.worker`. Cancelling
sends SIGTERM to the runner's process group, which reaches every task.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from djhpc.executors import Launch, default_parallel
from djhpc.ledger import ChunkRecord, RunRecord

RUNNER_LOG = "local-runner.log"


class LocalExecutor:
    name = "local"

    def _command(self, launch: Launch) -> list[str]:
        spec = {
            "tasks": [vars(launch.task(c)) for c in launch.chunks],
            "parallel": launch.max_parallel or default_parallel(),
            "run_dir": launch.run.run_dir,
        }
        # A file, not an argument: a thousand chunks would pass Linux's 128 KiB
        # limit for one argument.
        path = Path(launch.run.run_dir) / "local-runner.json"
        path.write_text(json.dumps(spec))
        return [launch.python or sys.executable, "-m", "djhpc.executors.local", str(path)]

    def preview(self, launch: Launch) -> str:
        parallel = launch.max_parallel or default_parallel()
        return (f"{len(launch.chunks)} local processes, at most {parallel} at once, "
                f"logs in {launch.run.run_dir}")

    def submit(self, launch: Launch) -> dict[int, str]:
        log = Path(launch.run.run_dir) / RUNNER_LOG
        with open(log, "ab") as out:
            runner = subprocess.Popen(self._command(launch), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      cwd=launch.run.workdir)
        return {c.chunk: f"local-{runner.pid}" for c in launch.chunks}

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        for group in sorted({c.job_id for c in chunks if c.job_id and c.job_id.startswith("local-")}):
            # Already gone, or not ours to stop: nothing to do.
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(group.split("-", 1)[1]), signal.SIGTERM)

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        folder = Path(run.run_dir)
        return folder / f"chunk-{chunk.chunk}.out", folder / f"chunk-{chunk.chunk}.err"


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _runner(spec: dict[str, object]) -> int:
    """Keep at most `parallel` tasks running until every chunk has had its turn."""
    tasks = list(spec["tasks"])  # type: ignore[call-overload]
    parallel = int(spec["parallel"])  # type: ignore[call-overload]
    folder = Path(str(spec["run_dir"]))
    running: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in running:
            process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    while (tasks and not stopping) or running:
        running = [p for p in running if p.poll() is None]
        while tasks and not stopping and len(running) < parallel:
            task = tasks.pop(0)
            chunk = task["chunk"]
            with open(folder / f"chunk-{chunk}.out", "ab") as out, \
                    open(folder / f"chunk-{chunk}.err", "ab") as err:
                running.append(subprocess.Popen(
                    [sys.executable, "-m", "djhpc.executors.local", "--task", json.dumps(task)],
                    stdout=out, stderr=err, stdin=subprocess.DEVNULL))
        time.sleep(0.05)
    return 0


def _task(spec: dict[str, object]) -> int:
    import logging

    from djhpc.worker import ChunkTask

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result = ChunkTask(**spec)()  # type: ignore[arg-type]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--task":
        sys.exit(_task(json.loads(sys.argv[2])))
    sys.exit(_runner(json.loads(Path(sys.argv[1]).read_text())))
