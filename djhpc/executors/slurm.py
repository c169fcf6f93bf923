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
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm import slurm as submitit_slurm

from djhpc import credentials, plan, slurm
from djhpc.errors import UsageError
from djhpc.executors import Launch
from djhpc.ledger import ChunkRecord, RunRecord
from djhpc.plan import Chunk
from djhpc.profile import submitit_parameters

log = logging.getLogger(__name__)


class SubmitRejected(UsageError):
    """sbatch refused a job; the run was not submitted."""


class SlurmExecutor:
    name = "slurm"

    def parameters(self, launch: Launch, n_tasks: int) -> dict[str, Any]:
        params = submitit_parameters(launch.resources, launch.signal_delay)
        params["job_name"] = f"djhpc-{launch.run.run_id}"
        params["array_parallelism"] = launch.max_parallel or n_tasks
        return params

    def _executor(self, launch: Launch) -> submitit.SlurmExecutor:
        executor = submitit.SlurmExecutor(folder=launch.run.run_dir,
                                          python=launch.python or sys.executable,
                                          max_num_timeout=0)
        return executor

    def preview(self, launch: Launch) -> str:
        params = self.parameters(launch, len(launch.chunks))
        params["map_count"] = min(len(launch.chunks), launch.max_array_size or len(launch.chunks))
        executor = self._executor(launch)
        return str(submitit_slurm._make_sbatch_string(
            command=executor._submitit_command_str, folder=launch.run.run_dir, **params))

    def submit(self, launch: Launch) -> dict[int, str]:
        chunks = [Chunk(c.chunk, c.lo, c.hi) for c in launch.chunks]
        by_number = {c.chunk: c for c in launch.chunks}
        groups = plan.arrays(chunks, launch.max_array_size)
        executor = self._executor(launch)
        jobs: dict[int, str] = {}
        previous: str | None = None
        for group in groups:
            params = self.parameters(launch, len(group))
            if previous and launch.max_parallel:
                params["dependency"] = f"afterany:{previous}"
            executor.update_parameters(**params)
            try:
                submitted = self._submit_array(executor, [launch.task(by_number[c.chunk])
                                                          for c in group])
            except SubmitRejected:
                self._cancel_ids(sorted({j.split("_")[0] for j in jobs.values()}))
                raise
            for chunk, job in zip(group, submitted, strict=True):
                jobs[chunk.chunk] = job
            previous = submitted[0].split("_")[0]
        return jobs

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
        arrays = sorted({c.job_id.split("_")[0] for c in chunks if c.job_id})
        self._cancel_ids(arrays)

    def _cancel_ids(self, ids: Sequence[str]) -> None:
        if ids:
            try:
                slurm.scancel(ids)
            except slurm.SlurmError as error:
                log.error("scancel failed: %s", error.detail())

    def log_paths(self, run: RunRecord, chunk: ChunkRecord) -> tuple[Path, Path]:
        folder = Path(run.run_dir)
        job = chunk.job_id or "unknown"
        return folder / f"{job}_0_log.out", folder / f"{job}_0_log.err"
