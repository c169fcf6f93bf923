"""Slurm array tasks through submitit.

Chunks are submitted as arrays of at most the cluster's array size; several
arrays of one run are chained (`afterany`) when `--max-parallel` is set, so the
run never has more than that many tasks at once. A run is submitted whole or
not at all: when a later array is rejected, the earlier ones are cancelled.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm import slurm as submitit_slurm

from djhpc import backoff, credentials, plan
from djhpc.errors import UsageError
from djhpc.executors import (
    FOLLOW_UP,
    GRACE,
    RUN_TASKS,
    Accepted,
    Launch,
    Observed,
    TaskView,
    never_submitted,
)
from djhpc.executors import slurm_tools as tools
from djhpc.ledger import ChunkRecord, RunRecord, now
from djhpc.resources import Resources, warning_delay
from djhpc.states import TASK_STATE_OF_CHUNK, TaskState

log = logging.getLogger(__name__)


FOLLOW_UP_TIME_S = 600.0
FOLLOW_UP_MEM_MB = 512.0  # Python, DataJoint and djhpc need ~150M


class SubmitRejected(UsageError):
    """sbatch refused a job; the run was not submitted."""


def submitit_parameters(res: Resources, signal_delay_s: int) -> dict[str, Any]:
    """The resources as submitit's SlurmExecutor parameters."""
    params: dict[str, Any] = {
        "time": res.time_min,
        "mem": f"{math.ceil(res.mem_mb)}M",
        "cpus_per_task": res.cpus,
        "signal_delay_s": warning_delay(res, signal_delay_s),
        "setup": list(res.setup),
    }
    if res.gpus:
        params["gpus_per_node"] = res.gpus
    for key in ("partition", "account", "qos"):
        value = getattr(res, key)
        if value:
            params[key] = value
    params.update(res.extra)
    return params


def array_of(job_id: str) -> str:
    """The array (job) id of an array task's id: "123_4" -> "123"."""
    return job_id.split("_")[0]


def partition_of(res: Resources) -> tools.Partition | None:
    """The limits of the partition the tasks go to (the default one if none is named)."""
    try:
        known = tools.partitions()
    except tools.SlurmError as error:
        log.debug("partition limits not read: %s", error)
        return None
    name = res.partition
    return known.get(name) if name else next((p for p in known.values() if p.default), None)


def check_partition(res: Resources) -> None:
    """Refuse a task the partition can never run (it would pend forever), naming the limit."""
    part = partition_of(res)
    if part is None:  # an unknown name: sbatch says so itself
        return
    problems = tools.resource_problems(part, cpus=res.cpus, mem_mb=res.mem_mb, gpus=res.gpus,
                                       time_s=res.time_s)
    if problems:
        raise UsageError(f"The partition cannot run these tasks: {'; '.join(problems)}",
                         "Ask for less (--cpus, --mem, --gpus, --time) or choose another "
                         "--partition (sinfo lists them)")


def follow_up_of(run: RunRecord) -> str | None:
    """The job id of the follow-up that watches the run's latest attempt, if it has one."""
    recorded = run.settings.get("follow_up") or {}
    if recorded.get("attempt") != run.attempts:
        return None
    return str(recorded["job_id"]) if recorded.get("job_id") else None


def max_array_size() -> int | None:
    """Tasks one array may hold on this cluster, read from its configuration."""
    return tools.max_array_size(tools.show_config())


class SlurmExecutor:
    name = "slurm"

    @staticmethod
    def owns(job_id: str) -> bool:
        return job_id[:1].isdigit()

    def parameters(self, launch: Launch, n_tasks: int) -> dict[str, Any]:
        params = submitit_parameters(launch.resources, launch.signal_delay)
        params["job_name"] = launch.name
        params["array_parallelism"] = launch.max_parallel or n_tasks
        return params

    def _executor(self, launch: Launch) -> submitit.SlurmExecutor:
        executor = submitit.SlurmExecutor(folder=launch.run_dir,
                                          python=launch.python or sys.executable,
                                          max_num_timeout=0)
        return executor

    def preview(self, launch: Launch) -> str:
        params = self.parameters(launch, len(launch.chunks))
        params["map_count"] = min(len(launch.chunks), launch.max_array_size or len(launch.chunks))
        executor = self._executor(launch)
        # submitit renders the script only while submitting; this private helper
        # is the same renderer (tests/unit/test_sbatch_script.py pins its output).
        return str(submitit_slurm._make_sbatch_string(
            command=executor._submitit_command_str, folder=launch.run_dir, **params))

    def submit(self, launch: Launch, on_accepted: Accepted) -> dict[int, str]:
        groups = plan.arrays(launch.chunks, launch.max_array_size)
        executor = self._executor(launch)
        jobs: dict[int, str] = {}
        previous: str | None = None
        try:
            for n, group in enumerate(groups, 1):
                params = self.parameters(launch, len(group))
                if previous and launch.max_parallel:
                    params["dependency"] = f"afterany:{previous}"
                executor.update_parameters(**params)
                submitted = self._submit_array_retrying(
                    executor, [launch.task(c, slurm=True) for c in group])
                accepted = {c.chunk: job for c, job in zip(group, submitted, strict=True)}
                jobs.update(accepted)
                on_accepted(accepted, n == len(groups))
                previous = array_of(submitted[0])
        except BaseException:
            # Rejected, interrupted (Ctrl-C) or failed halfway: nothing of the run
            # may go on running once the run is removed.
            self._cancel_ids(self.job_ids(jobs))
            raise
        return jobs

    def follow_up(self, launch: Launch, jobs: dict[int, str]) -> str | None:
        """One small job after all of the attempt's arrays (`afterany`); see `escalation`.

        It asks for little (one CPU, 512M, 10 minutes) from the tasks' own partition
        and account. A follow-up that cannot be submitted only costs the run its
        automatic escalation and continuation: the tasks run regardless.
        """
        arrays = self.job_ids(jobs)
        if not launch.follow_up or launch.run_id is None or not arrays:
            return None
        from djhpc.escalation import FollowUp

        small = replace(launch.resources, time_s=FOLLOW_UP_TIME_S, mem_mb=FOLLOW_UP_MEM_MB, cpus=1,
                        gpus=0)
        params = submitit_parameters(small, 0)
        params.update(job_name=f"{launch.name}-follow-up",
                      dependency=f"afterany:{':'.join(arrays)}")
        params.pop("signal_delay_s", None)
        executor = self._executor(launch)
        executor.update_parameters(**params)
        attempt = max(c.attempt for c in launch.chunks)
        payload = FollowUp(ledger_schema=launch.ledger_schema, run_id=launch.run_id,
                           attempt=attempt, workdir=launch.workdir)
        try:
            return self._submit_array_retrying(executor, [payload])[0]
        except UsageError as error:
            log.warning("No follow-up job for run %s (keys of tasks stopped for memory or time, "
                        "or handed back, will wait for `djhpc retry`): %s", launch.run_id, error)
            return None
        except BaseException:  # Ctrl-C: the run is being removed, so are its arrays
            self._cancel_ids(arrays)
            raise

    def _submit_array_retrying(self, executor: submitit.SlurmExecutor,
                               tasks: list[Any]) -> list[str]:
        """`_submit_array`, again after a pause while the controller is too busy to take it.

        sbatch refuses a job outright when it is wrong (a bad account) and says
        so; a busy controller answers with a time-out or "Resource temporarily
        unavailable" instead, and then the same array is submitted again.
        """
        return backoff.retrying(
            lambda: self._submit_array(executor, tasks), "sbatch",
            lambda error: isinstance(error, SubmitRejected) and backoff.is_transient(str(error)))

    def job_ids(self, jobs: dict[int, str]) -> list[str]:
        return sorted({array_of(j) for j in jobs.values() if self.owns(j)}, key=int)

    def observe(self, chunks: Sequence[tuple[RunRecord, ChunkRecord]], *,
                ask_scheduler: bool = True) -> Observed:
        """One squeue and one sacct call for every task of these chunks (and each run's
        follow-up job, seen as chunk FOLLOW_UP, and all tasks of its arrays, RUN_TASKS)."""
        runs = {run.run_id: run for run, _ in chunks}
        follow_ups = {i: job for i, run in runs.items() if (job := follow_up_of(run))}
        run_arrays: dict[int, set[str]] = {i: set(run.settings.get("jobs", []))
                                           for i, run in runs.items()}
        for run, c in chunks:
            if c.job_id and self.owns(c.job_id):
                run_arrays[run.run_id].add(array_of(c.job_id))
        arrays = sorted({*(a for ids in run_arrays.values() for a in ids),
                         *(array_of(j) for j in follow_ups.values())})
        tasks: dict[str, tools.TaskInfo] | None = {} if ask_scheduler else None
        if arrays and ask_scheduler:
            try:
                tasks = tools.query(arrays) if tools.available() else None
            except tools.SlurmError:
                tasks = None  # Slurm could not be asked: only the ledger speaks
        stamp = now()
        views = {(run.run_id, c.chunk): self._view(run, c, tasks, stamp) for run, c in chunks}
        for run_id, job in follow_ups.items():
            info = (tasks or {}).get(job)
            if info is not None:
                views[(run_id, FOLLOW_UP)] = TaskView(state=info.state, alive=not info.state.final,
                                                      accounting=info)
        for run_id, ids in run_arrays.items():
            started = tuple(t for job, t in (tasks or {}).items()
                            if array_of(job) in ids and t.elapsed_s)
            if started:
                views[(run_id, RUN_TASKS)] = TaskView(state=TaskState.RUNNING, tasks=started)
        return views

    @staticmethod
    def _view(run: RunRecord, chunk: ChunkRecord, tasks: dict[str, tools.TaskInfo] | None,
              stamp: Any) -> TaskView:
        info = (tasks or {}).get(chunk.job_id or "")
        if info is not None:
            ended = f"Task {chunk.job_id} ended ({info.raw_state})" if info.state.final else None
            # A queued chunk whose task is pending again after a requeue is alive.
            return TaskView(state=info.state, alive=ended is None, gone=ended, accounting=info)
        fallback = TASK_STATE_OF_CHUNK[chunk.state]
        if not chunk.job_id:
            return TaskView(state=fallback, gone=never_submitted(run, chunk, stamp))
        # Neither squeue nor sacct knows it (and accounting has had time to catch up).
        forgotten = tasks is not None and stamp - run.created > GRACE
        return TaskView(state=fallback,
                        gone=f"Slurm no longer knows task {chunk.job_id}" if forgotten else None)

    def _submit_array(self, executor: submitit.SlurmExecutor, tasks: list[Any]) -> list[str]:
        stderr = io.StringIO()  # submitit prints sbatch's complaints; we report them once
        try:
            with contextlib.redirect_stderr(stderr), credentials.out_of_job_environment(), \
                    executor.batch():
                pending = [executor.submit(task) for task in tasks]
        except Exception as error:
            script = sorted(Path(executor.folder).glob(".submission_file_*.sh"),
                            key=lambda p: p.stat().st_mtime)
            command = "sbatch " + (shlex.quote(str(script[-1])) if script else "<script>")
            text = " ".join((str(error) or stderr.getvalue()).split())
            raise SubmitRejected(f"sbatch rejected the job ({command}): {text}",
                                 "Check --partition, --account, --qos, --time and --mem "
                                 "against `sinfo` and your profile") from None
        return [str(job.job_id) for job in pending]

    def cancel(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> None:
        follow_up = follow_up_of(run)
        self._cancel_ids(sorted({array_of(j) for j in [*(c.job_id for c in chunks if c.job_id),
                                                         *([follow_up] if follow_up else [])]}))

    def _cancel_ids(self, ids: Sequence[str]) -> None:
        if ids:
            try:
                tools.scancel(ids)
            except tools.SlurmError as error:
                log.error("scancel failed: %s", error.detail())

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        folder = Path(run.run_dir)
        job = chunk.job_id or "unknown"
        return folder / f"{job}_0_log.out", folder / f"{job}_0_log.err"
