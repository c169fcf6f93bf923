"""The pure parts of status: run states, counting, efficiency and error groups."""

from __future__ import annotations

from typing import Any

from djhpc import status
from djhpc.executors import RUN_TASKS, TaskView
from djhpc.executors.slurm_tools import TaskInfo
from djhpc.ledger import ErrorRow
from djhpc.states import ChunkState, RunPhase, RunState, TaskState
from tests.unit.records import T0, chunk, later, run

DONE, FAILED, QUEUED, RUNNING = (ChunkState.DONE, ChunkState.FAILED, ChunkState.QUEUED,
                                 ChunkState.RUNNING)


def keys(total: int = 10, done: int = 0, error: int = 0) -> status.KeyCounts:
    return status.KeyCounts(total=total, done=done, error=error, remaining=total - done)


def test_run_state() -> None:
    r = run()
    assert status.run_state(run(state=RunPhase.CANCELLED), [chunk(state=RUNNING)],
                            keys()) == RunState.CANCELLED
    assert status.run_state(r, [chunk(state=QUEUED)], keys()) == RunState.QUEUED
    assert status.run_state(r, [chunk(state=QUEUED, started=T0)], keys()) == RunState.RUNNING
    assert status.run_state(r, [chunk(state=QUEUED), chunk(1, DONE)], keys()) == RunState.RUNNING
    assert status.run_state(r, [chunk(state=DONE)], keys(done=10)) == RunState.DONE
    assert status.run_state(r, [chunk(state=DONE)], keys(done=8, error=2)) == RunState.FAILED
    assert status.run_state(r, [chunk(state=FAILED)], keys(done=8)) == RunState.FAILED
    assert status.run_state(r, [chunk(state=ChunkState.LOST)], keys(done=8)) == (
        RunState.INCOMPLETE)


class CountingLedger:
    """Answers done_by_chunk from a table of truths and remembers what was asked."""

    def __init__(self, truth: dict[int, int]) -> None:
        self.truth = truth
        self.asked: list[list[int]] = []

    def done_by_chunk(self, run: Any, chunks: Any) -> dict[int, int]:
        self.asked.append([c.chunk for c in chunks])
        return {c.chunk: self.truth[c.chunk] for c in chunks if c.chunk in self.truth}


def test_done_counts_keep_a_finished_first_attempts_own_count() -> None:
    ledger = CountingLedger({0: 5, 1: 3, 2: 1})
    chunks = [chunk(0, DONE, n_done=4), chunk(1, RUNNING, n_done=2), chunk(2, ChunkState.LOST)]
    counts = status.done_counts(ledger, run(), chunks)  # type: ignore[arg-type]
    assert counts == {0: 4, 1: 3, 2: 1}  # the ended chunk keeps what its task counted
    assert ledger.asked == [[1, 2]]


def test_done_counts_after_a_retry_count_everything_afresh() -> None:
    ledger = CountingLedger({0: 5, 1: 5})
    chunks = [chunk(0, DONE, n_done=4), chunk(1, FAILED, n_done=2)]
    counts = status.done_counts(ledger, run(attempts=2), chunks)  # type: ignore[arg-type]
    assert counts == {0: 5, 1: 5} and ledger.asked == [[0, 1]]


def test_build_report_counts_keys_and_task_states() -> None:
    r = run(n_keys=15)
    chunks = [chunk(0, DONE, started=T0, finished=later(60), job_id="1_0"),
              chunk(1, RUNNING, started=T0, n_error=1, job_id="1_1"),
              chunk(2, QUEUED, job_id="1_2")]
    info = TaskInfo(job_id="1_0", state=TaskState.COMPLETED, raw_state="COMPLETED",
                    elapsed_s=60, cpu_time_s=120, total_cpu_s=90, max_rss_mb=500,
                    req_mem_mb=4000, timelimit_s=3600)
    views = {(7, 0): TaskView(state=TaskState.COMPLETED, accounting=info),
             (7, 1): TaskView(state=TaskState.RUNNING, alive=True)}
    report = status.build_report(r, chunks, views, done_first={0: 5, 1: 2},
                                 done_latest={0: 5, 1: 2}, stamp=later(120))
    assert report.state == RunState.RUNNING
    assert (report.keys.done, report.keys.error, report.keys.reserved,
            report.keys.remaining) == (7, 1, 2, 8)
    assert report.tasks == {"completed": 1, "running": 1, "pending": 1}
    assert report.core_hours == round(120 / 3600, 4)  # Slurm's CPU time, not wall time
    assert report.efficiency == status.Efficiency(cpu=0.75, memory=0.125, time=round(60 / 3600, 3))
    assert report.hints == []  # only once the run has ended
    assert report.keys_per_hour == 7 * 30 and report.eta_s == round(8 / (7 * 30) * 3600)
    assert report.chunks[2].task_state == "pending" and report.chunks[0].max_rss_mb == 500
    assert report.to_json()["state"] == "running"


def test_a_run_costs_each_task_of_its_jobs_once() -> None:
    def task(job: str, elapsed: float) -> TaskInfo:
        return TaskInfo(job_id=job, state=TaskState.COMPLETED, raw_state="COMPLETED",
                        elapsed_s=elapsed, cpu_time_s=2 * elapsed, billing=2.0)

    puller, pulled_from = task("1_0", 1800), task("1_1", 36)
    # Task 1_0 pulled chunk 1 as well; task 1_1 started, found no chunk left and ended.
    chunks = [chunk(0, DONE, job_id="1_0"), chunk(1, DONE, job_id="1_0")]
    named = {(7, c): TaskView(state=TaskState.COMPLETED, accounting=puller) for c in (0, 1)}
    assert status.run_tasks(run(), chunks, named) == [puller]  # not once per chunk
    every = {**named, (7, RUN_TASKS): TaskView(state=TaskState.RUNNING,
                                               tasks=(puller, pulled_from))}
    assert status.run_tasks(run(), chunks, every) == [puller, pulled_from]
    report = status.build_report(run(n_keys=10), chunks, every, done_first={0: 5, 1: 5},
                                 done_latest={0: 5, 1: 5}, stamp=later(2000))
    assert report.billing_hours == round(2.0 * (1800 + 36) / 3600, 4)
    assert report.core_hours == round(2 * (1800 + 36) / 3600, 4)
    # A task squeue lists and sacct does not know yet: its CPU time is elapsed x CPUs.
    live = TaskInfo(job_id="1_2", state=TaskState.RUNNING, raw_state="RUNNING", elapsed_s=90,
                    cpus=4)
    assert status._core_hours(chunks, [live], later(0)) == 90 * 4 / 3600


def test_efficiency_and_hints_of_an_ended_run() -> None:
    ended = [TaskInfo(job_id=f"1_{i}", state=TaskState.COMPLETED, raw_state="COMPLETED",
                      elapsed_s=600, timelimit_s=3600, max_rss_mb=rss, req_mem_mb=4096,
                      cpu_time_s=600, total_cpu_s=300) for i, rss in enumerate((400, 1000))]
    running = TaskInfo(job_id="1_9", state=TaskState.RUNNING, raw_state="RUNNING",
                       max_rss_mb=4000, req_mem_mb=4096)
    eff = status.efficiency([*ended, running])
    assert eff == status.Efficiency(cpu=0.5, memory=round(1000 / 4096, 3), time=round(1 / 6, 3))
    hints = status._hints(eff, RunState.DONE)
    assert len(hints) == 2 and "24% of the memory" in hints[0] and "17% of its time" in hints[1]
    assert status.efficiency([]) == status.Efficiency()


def test_error_patterns_mask_what_varies() -> None:
    a = status.error_pattern("ValueError: unit 12 of {'subject': 'm1'} has 3.5 spikes\nmore")
    b = status.error_pattern("ValueError: unit 7 of {'subject': 'm2'} has 10 spikes")
    assert a == b == "ValueError: unit <n> of {…} has <n> spikes"
    assert status.error_pattern("OSError: file 'a/b.h5' at 0x7f00aa") == "OSError: file '…' at 0x…"
    assert status.error_pattern("Error in layer2 of conv3d") == "Error in layer2 of conv3d"


def test_group_errors_counts_attempts_and_examples() -> None:
    rows = [ErrorRow(run_id=7, attempt=a, chunk=c, key={"k": k}, message=f"KeyError: {k}",
                     stack="tb") for a, c, k in ((1, 0, 1), (1, 1, 2), (2, 3, 3), (2, 3, 4))]
    rows.append(ErrorRow(run_id=7, attempt=1, chunk=2, key={}, message="MemoryError", stack=""))
    groups = status.group_errors(rows, log_path=lambda run_id, c: f"/logs/{run_id}-{c}.err",
                                 examples=3)  # type: ignore[arg-type, return-value]
    top, other = groups
    assert (top.message, top.count, top.attempts, top.chunk) == ("KeyError: <n>", 4, [1, 2], 0)
    assert top.keys == [{"k": 1}, {"k": 2}, {"k": 3}] and top.log == "/logs/7-0.err"
    assert (other.message, other.count) == ("MemoryError", 1)
    assert top.to_json()["traceback"] == "tb"
