"""One picture of a run: the ledger, the target table and Slurm, put together.

Key counts come from the database (a run's key is *done* when it is in the
target table, whatever a task reported). Task states come from one `squeue`
and one `sacct` call per refresh, for every run shown at once. A chunk whose
task is gone (Slurm says it ended, its process is dead, or its database
connection has vanished and it stopped reporting) is marked *lost* here, so
that `retry` picks its keys up.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from djhpc import dj, slurm
from djhpc.executors.local import alive
from djhpc.ledger import (
    ACTIVE_STATES,
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    LOST,
    QUEUED,
    RUNNING,
    ChunkRecord,
    Ledger,
    RunRecord,
    now,
)
from djhpc.slurm import TaskInfo, TaskState
from djhpc.worker import FLUSH_SECONDS

RUN_STATES = ("queued", "running", "done", "failed", "incomplete", "cancelled")
FINAL_RUN_STATES = ("done", "failed", "incomplete", "cancelled")
# How long a task may stay silent, with its database connection gone, before
# its chunk counts as lost: a live task reconnects and reports within this.
SILENCE = timedelta(seconds=max(60.0, 6 * FLUSH_SECONDS))

# Ledger chunk states as task states, where no scheduler knows better.
_LOCAL_TASK_STATE = {QUEUED: TaskState.PENDING, RUNNING: TaskState.RUNNING,
                     DONE: TaskState.COMPLETED, FAILED: TaskState.COMPLETED,
                     INTERRUPTED: TaskState.CANCELLED, LOST: TaskState.FAILED,
                     CANCELLED: TaskState.CANCELLED}


@dataclass
class KeyCounts:
    total: int = 0
    done: int = 0
    error: int = 0
    reserved: int = 0
    remaining: int = 0


@dataclass
class ChunkView:
    chunk: int
    attempt: int
    state: str
    keys: int
    done: int
    error: int
    job: str | None
    host: str | None
    task_state: str | None = None
    elapsed_s: float | None = None
    max_rss_mb: float | None = None
    started: str | None = None
    finished: str | None = None
    pending_reason: str | None = None  # squeue's reason code while the task waits


@dataclass
class Efficiency:
    cpu: float | None = None  # TotalCPU / CPUTime
    memory: float | None = None  # max MaxRSS / requested memory
    time: float | None = None  # longest elapsed / time limit


@dataclass
class RunReport:
    run_id: int
    target: str
    table: str
    executor: str
    state: str
    keys: KeyCounts
    tasks: dict[str, int]
    core_hours: float
    created: str
    started: str | None
    finished: str | None
    attempts: int
    keys_per_hour: float | None
    eta_s: float | None
    efficiency: Efficiency
    hints: list[str]
    chunks: list[ChunkView] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in FINAL_RUN_STATES

    def to_json(self, with_chunks: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_chunks:
            data.pop("chunks")
        else:
            for chunk in data["chunks"]:
                chunk["elapsed_s"] = _round(chunk["elapsed_s"])
        return data


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ") if value else None


# --- liveness ----------------------------------------------------------------


def slurm_tasks(chunks: Iterable[ChunkRecord]) -> dict[str, TaskInfo] | None:
    """Slurm's view of every task of these chunks: one squeue and one sacct call.

    None when Slurm could not be asked (then only the ledger speaks).
    """
    ids = sorted({c.job_id.split("_")[0] for c in chunks
                  if c.job_id and not c.job_id.startswith("local-")})
    if not ids:
        return {}
    if not slurm.available():
        return None
    try:
        return slurm.query(ids)
    except slurm.SlurmError:
        return None


def live_connections(ledger: Ledger) -> set[int] | None:
    try:
        return {int(r[0]) for r in ledger.sql(ledger.d.live_connections).fetchall()}
    except Exception:  # no right to see the process list: skip this check
        return None


def lost_reason(run: RunRecord, chunk: ChunkRecord, tasks: dict[str, TaskInfo] | None,
                connections: set[int] | None, stamp: datetime) -> str | None:
    """Why an active chunk's task can no longer finish it; None while it can."""
    if chunk.state not in ACTIVE_STATES:
        return None
    job = chunk.job_id or ""
    task = (tasks or {}).get(job)
    if task is not None:
        # A queued chunk whose task is pending again after a requeue is fine.
        return f"Task {job} ended ({task.raw_state})" if task.state.final else None
    old = stamp - run.created > SILENCE
    if not job and run.executor != "debug" and old:
        return "The task was never submitted (the submitting command was stopped)"
    if job[:1].isdigit() and tasks is not None and old and chunk.state == QUEUED:
        return f"Slurm no longer knows task {job}"
    here = (chunk.host or run.host) == socket.gethostname()
    if job.startswith("local-") and chunk.state == QUEUED and here:
        return None if alive(int(job.split("-", 1)[1])) else "The local runner is gone"
    if chunk.state == RUNNING:
        if here and chunk.pid and job.startswith("local-") and not alive(chunk.pid):
            return f"Task process {chunk.pid} is gone"
        silent = chunk.heartbeat is None or stamp - chunk.heartbeat > SILENCE
        gone = connections is not None and chunk.connection_id not in connections
        if gone and silent:
            return "The task's database connection is gone and it stopped reporting"
    return None


def reconcile(ledger: Ledger, run: RunRecord, chunks: list[ChunkRecord],
              tasks: dict[str, TaskInfo] | None,
              connections: set[int] | None) -> list[ChunkRecord]:
    """Mark chunks whose task is gone as lost, with the reason in the error history."""
    if run.cancelled:
        return chunks
    stamp = now()
    for c in chunks:
        reason = lost_reason(run, c, tasks, connections, stamp)
        if reason and ledger.set_chunk_states(run.run_id, [c.chunk], LOST, only_from=(c.state,)):
            ledger.add_errors(run.run_id, c.attempt, c.chunk,
                              [({}, f"{reason} before finishing its chunk: "
                                f"{c.keys - c.n_done - c.n_error} keys handed back", "")],
                              c.job_id, c.host or "")
            c.state = LOST
    return chunks


# --- the report ---------------------------------------------------------------


# States a task's last report leaves behind, with the count of its keys that
# were in the table then, read from the database (see worker).
COUNTED_STATES = (DONE, FAILED, INTERRUPTED)


def done_counts(ledger: Ledger, run: RunRecord, chunks: Sequence[ChunkRecord]) -> dict[int, int]:
    """Keys of each chunk in the table: counted now, or when the chunk's task ended.

    A finished chunk of a single attempt keeps the count its task took from
    the database as it ended, so a big finished run needs no million-row count
    on every refresh. After a retry, the first attempt's keys may have been made
    by a later one, so its chunks are counted afresh, as are active and lost ones.
    """
    if run.attempts != 1:
        return ledger.done_by_chunk(run, chunks)
    kept = {c.chunk: c.n_done for c in chunks if c.state in COUNTED_STATES and c.attempt == 1}
    fresh = [c for c in chunks if c.chunk not in kept]
    return {**kept, **ledger.done_by_chunk(run, fresh)}


def run_state(run: RunRecord, latest: Sequence[ChunkRecord], keys: KeyCounts) -> str:
    if run.cancelled:
        return "cancelled"
    if any(c.state in ACTIVE_STATES for c in latest):
        started = any(c.state != QUEUED or c.started for c in latest)
        return "running" if started else "queued"
    if keys.remaining == 0:
        return "done"
    if keys.error or any(c.state == FAILED for c in latest):
        return "failed"
    return "incomplete"


def report(ledger: Ledger, run: RunRecord, chunks: list[ChunkRecord],
           known: dict[str, TaskInfo] | None, connections: set[int] | None) -> RunReport:
    chunks = reconcile(ledger, run, chunks, known, connections)
    tasks = known or {}
    latest = [c for c in chunks if c.attempt == run.attempts]
    first = [c for c in chunks if c.attempt == 1]
    done_first = done_counts(ledger, run, first)
    done_latest = done_first if run.attempts == 1 else done_counts(ledger, run, latest)

    keys = KeyCounts(total=run.n_keys, done=sum(done_first.values()))
    keys.remaining = keys.total - keys.done
    views = []
    for c in latest:
        done = done_latest.get(c.chunk, 0)
        error = min(c.n_error, c.keys - done)
        keys.error += error
        if c.state == RUNNING:
            keys.reserved += max(0, c.keys - done - error)
        task = tasks.get(c.job_id or "")
        views.append(ChunkView(
            chunk=c.chunk, attempt=c.attempt, state=c.state, keys=c.keys, done=done,
            error=error, job=c.job_id, host=c.host or (task.node if task else None),
            task_state=(task.state.value if task else _LOCAL_TASK_STATE[c.state].value),
            elapsed_s=(task.elapsed_s if task and task.elapsed_s is not None
                       else _elapsed(c.started, c.finished)),
            max_rss_mb=task.max_rss_mb if task else None,
            started=_iso(c.started), finished=_iso(c.finished),
            pending_reason=task.reason if task and task.state is TaskState.PENDING else None))
    state = run_state(run, latest, keys)
    task_counts = Counter(v.task_state or "unknown" for v in views)

    started = min((c.started for c in chunks if c.started), default=None)
    ended = [c.finished for c in chunks if c.finished]
    finished = max(ended) if state in FINAL_RUN_STATES and ended else None
    if state == "cancelled" and run.finished:
        finished = run.finished
    run_tasks = [tasks[c.job_id] for c in chunks if c.job_id in tasks]
    core_hours = _core_hours(chunks, run_tasks)
    rate, eta = _rate(keys, started, finished)
    efficiency = _efficiency(run_tasks)
    return RunReport(
        run_id=run.run_id, target=run.target, table=run.table_name, executor=run.executor,
        state=state, keys=keys, tasks=dict(task_counts), core_hours=round(core_hours, 4),
        created=_iso(run.created) or "", started=_iso(started), finished=_iso(finished),
        attempts=run.attempts, keys_per_hour=_round(rate), eta_s=_round(eta, 0),
        efficiency=efficiency, hints=_hints(efficiency, state) + pending_hints(views),
        chunks=views)


def pending_hints(views: Sequence[ChunkView]) -> list[str]:
    """Why queued tasks wait, in words, one line per reason."""
    from djhpc.slurm import pending_reason_text

    waiting = Counter(v.pending_reason for v in views if v.pending_reason)
    hints = []
    for reason, count in waiting.most_common():
        text = pending_reason_text(reason)
        tasks = f"{count} task{'s' if count > 1 else ''}"
        hints.append(f"{tasks} pending ({reason}): {text}" if text
                     else f"{tasks} pending ({reason})")
    return hints


def _elapsed(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return ((end or now()) - start).total_seconds()


def _core_hours(chunks: Sequence[ChunkRecord], tasks: Sequence[TaskInfo]) -> float:
    if tasks:
        return sum(t.cpu_time_s or 0.0 for t in tasks) / 3600
    # Local runs: one core per task for as long as it ran.
    return sum(_elapsed(c.started, c.finished) or 0.0 for c in chunks) / 3600


def _rate(keys: KeyCounts, started: datetime | None,
          finished: datetime | None) -> tuple[float | None, float | None]:
    if not started or not keys.done:
        return None, None
    hours = max(((finished or now()) - started).total_seconds(), 1.0) / 3600
    rate = keys.done / hours
    eta = None if finished else keys.remaining / rate * 3600
    return rate, eta


def _efficiency(tasks: Sequence[TaskInfo]) -> Efficiency:
    ended = [t for t in tasks if t.state.final]
    cpu_time = sum(t.cpu_time_s or 0 for t in ended)
    total_cpu = sum(t.total_cpu_s or 0 for t in ended)
    mems = [t.max_rss_mb / t.req_mem_mb for t in ended if t.max_rss_mb and t.req_mem_mb]
    times = [t.elapsed_s / t.timelimit_s for t in ended if t.elapsed_s and t.timelimit_s]
    return Efficiency(cpu=_round(total_cpu / cpu_time, 3) if cpu_time else None,
                      memory=_round(max(mems), 3) if mems else None,
                      time=_round(max(times), 3) if times else None)


def _hints(eff: Efficiency, state: str) -> list[str]:
    if state not in FINAL_RUN_STATES:
        return []
    hints = []
    if eff.memory is not None and eff.memory < 0.5:
        hints.append(f"Tasks used at most {eff.memory:.0%} of the memory they asked for: "
                     "ask for less (--mem) to start sooner and spend less.")
    if eff.time is not None and eff.time < 0.5:
        hints.append(f"The longest task used {eff.time:.0%} of its time limit: ask for less "
                     "(--time) or put more keys in each chunk (--chunk-size).")
    return hints


def reports(ledger: Ledger, runs: Sequence[RunRecord], ask_slurm: bool = True) -> list[RunReport]:
    """Reports for several runs, with one Slurm query for all of them (if asked)."""
    chunks = {run.run_id: ledger.chunks(run.run_id) for run in runs}
    tasks = slurm_tasks(c for cs in chunks.values() for c in cs) if ask_slurm else None
    connections = live_connections(ledger) if any(
        c.state == RUNNING for cs in chunks.values() for c in cs) else None
    return [report(ledger, run, chunks[run.run_id], tasks, connections) for run in runs]


# --- errors --------------------------------------------------------------------


_VARYING = [
    (re.compile(r"\{[^{}]*\}"), "{…}"),  # a key or dict printed into the message
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),  # quoted values
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "0x…"),
    (re.compile(r"(?<![A-Za-z_])-?\d+(?:\.\d+)?(?!x…)"), "<n>"),  # numbers, not digits in names
]


def error_pattern(message: str) -> str:
    """The message with its varying parts (keys, values, numbers) masked, for grouping."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, placeholder in _VARYING:
        first = pattern.sub(placeholder, first)
    return first


@dataclass
class ErrorGroup:
    message: str  # the pattern shared by the group's messages
    example: str  # the first message as it was
    count: int
    keys: list[dict[str, Any]]
    chunk: int
    run_id: int
    attempts: list[int]
    log: str | None
    stack: str


def error_groups(ledger: Ledger, runs: Sequence[RunRecord], log_path: Any = None,
                 examples: int = 3) -> list[ErrorGroup]:
    """Errors of these runs grouped by message, most frequent first."""
    import json

    if not runs:
        return []
    marks = ", ".join(["%s"] * len(runs))
    rows = ledger.sql(
        f"SELECT run_id, attempt, chunk, key_text, message, stack FROM {ledger.t('error')} "
        f"WHERE run_id IN ({marks}) ORDER BY error_id", [r.run_id for r in runs]).fetchall()
    groups: dict[str, ErrorGroup] = {}
    by_id = {r.run_id: r for r in runs}
    for run_id, attempt, chunk, key_text, message, stack in rows:
        pattern = error_pattern(message)
        group = groups.get(pattern)
        if group is None:
            log = None
            if log_path is not None:
                run = by_id[run_id]
                record = ledger.chunk(run_id, chunk)
                log = str(log_path(run, record))
            group = groups[pattern] = ErrorGroup(pattern, message, 0, [], chunk, run_id, [],
                                                 log, stack)
        group.count += 1
        if attempt not in group.attempts:
            group.attempts.append(attempt)
        if len(group.keys) < examples:
            group.keys.append(json.loads(key_text))
    return sorted(groups.values(), key=lambda g: -g.count)


def table_progress(cls: Any) -> tuple[int, int]:
    """DataJoint's own (remaining, total) for the table."""
    return dj.progress(cls())
