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
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from djhpc.executors import (
    Accepted,
    Launch,
    Observed,
    TaskView,
    default_parallel,
    never_submitted,
)
from djhpc.ledger import ChunkRecord, RunRecord, now
from djhpc.states import TASK_STATE_OF_CHUNK, ChunkState

RUNNER_LOG = "local-runner.log"
TASK_MARK = "djhpc"  # in the command line of every runner and task process (and `djhpc debug`)
PREFIX = "local-"  # job id of a chunk: "local-<pid of its runner>"
NOTHING_LEFT = 3  # a task's exit status when it found no chunk to make


def runner_pid(job_id: str) -> int | None:
    return int(job_id[len(PREFIX):]) if job_id.startswith(PREFIX) else None


class LocalExecutor:
    name = "local"

    @staticmethod
    def owns(job_id: str) -> bool:
        return job_id.startswith(PREFIX)

    def _command(self, launch: Launch) -> list[str]:
        spec = {
            "tasks": [vars(launch.task(c, slurm=False)) for c in launch.chunks],
            "parallel": launch.max_parallel or default_parallel(),
            "run_dir": launch.run_dir,
        }
        # A file, not an argument: a thousand chunks would pass Linux's 128 KiB
        # limit for one argument.
        path = Path(launch.run_dir) / "local-runner.json"
        path.write_text(json.dumps(spec))
        return [launch.python or sys.executable, "-m", "djhpc.executors.local", str(path)]

    def preview(self, launch: Launch) -> str:
        parallel = launch.max_parallel or default_parallel()
        return (f"{len(launch.chunks)} local processes, at most {parallel} at once, "
                f"logs in {launch.run_dir}")

    def submit(self, launch: Launch, on_accepted: Accepted) -> dict[int, str]:
        log = Path(launch.run_dir) / RUNNER_LOG
        with open(log, "ab") as out:
            runner = subprocess.Popen(self._command(launch), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      cwd=launch.workdir)
        jobs = {c.chunk: f"{PREFIX}{runner.pid}" for c in launch.chunks}
        try:
            on_accepted(jobs, True)
        except BaseException:
            os.killpg(runner.pid, signal.SIGTERM)  # the run is being removed: stop its tasks
            raise
        return jobs

    def follow_up(self, launch: Launch, jobs: dict[int, str]) -> str | None:
        return None  # no limits here for a task to run out of

    def job_ids(self, jobs: dict[int, str]) -> list[str]:
        return []  # no scheduler: nothing for the user to look up

    def observe(self, chunks: Sequence[tuple[RunRecord, ChunkRecord]], *,
                ask_scheduler: bool = True) -> Observed:
        """Processes are seen only on the host that runs them; elsewhere nothing is known."""
        stamp, here = now(), socket.gethostname()
        views: Observed = {}
        for run, c in chunks:
            state = TASK_STATE_OF_CHUNK[c.state]
            runner = runner_pid(c.job_id or "")
            view = TaskView(state=state, gone=never_submitted(run, c, stamp))
            if runner is not None and (c.host or run.host) == here:
                if c.state == ChunkState.QUEUED:
                    view = (TaskView(state=state, alive=True) if alive(runner, TASK_MARK) else
                            TaskView(state=state, gone="The local runner is gone"))
                elif c.state == ChunkState.RUNNING and c.pid:
                    view = (TaskView(state=state, alive=True) if alive(c.pid, TASK_MARK) else
                            TaskView(state=state, gone=f"Task process {c.pid} is gone"))
            views[(run.run_id, c.chunk)] = view
        return views

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        runners = {runner_pid(c.job_id) for c in chunks if c.job_id}
        for runner in sorted(pid for pid in runners if pid is not None):
            # Already gone, or not ours to stop: nothing to do.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner, signal.SIGTERM)

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        """The logs of the task process that made the chunk (its pid is in the ledger)."""
        folder = Path(run.run_dir)
        name = f"task-{chunk.pid}" if chunk.pid else f"chunk-{chunk.chunk}"  # before 0.2
        if chunk.pid and not (folder / f"{name}.out").exists():
            name = f"chunk-{chunk.chunk}"
        return folder / f"{name}.out", folder / f"{name}.err"


def alive(pid: int, mark: str | None = None) -> bool:
    """True while `pid` runs (and, given `mark`, is still the program whose command
    line holds it: a reused pid is another program). A zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        if mark is None:
            return True
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return mark.encode() in cmdline.read()
    except (FileNotFoundError, IndexError, ProcessLookupError, PermissionError):
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
        if any(p.poll() == NOTHING_LEFT for p in running):
            tasks.clear()  # tasks pulled every chunk: those not started are not needed
        running = [p for p in running if p.poll() is None]
        while tasks and not stopping and len(running) < parallel:
            running.append(_start_task(tasks.pop(0), folder))
        time.sleep(0.05)
    return 0


def _start_task(task: dict[str, object], folder: Path) -> subprocess.Popen[bytes]:
    """One task process, its output in task-<pid>.out/.err: a task may make several chunks."""
    starting = folder / f".starting-{task['chunk']}"
    with open(f"{starting}.out", "ab") as out, open(f"{starting}.err", "ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "djhpc.executors.local", "--task", json.dumps(task)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    for stream in ("out", "err"):
        os.replace(f"{starting}.{stream}", folder / f"task-{process.pid}.{stream}")
    return process


def _task(spec: dict[str, object]) -> int:
    import logging

    from djhpc.worker import ChunkTask

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result = ChunkTask(**spec)()  # type: ignore[arg-type]
    print(json.dumps(result))
    return NOTHING_LEFT if not result["claimed"] else 0


if __name__ == "__main__":
    if sys.argv[1] == "--task":
        sys.exit(_task(json.loads(sys.argv[2])))
    sys.exit(_runner(json.loads(Path(sys.argv[1]).read_text())))
