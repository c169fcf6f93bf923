"""One picture of a run: the ledger, the target table and the executors, put together.

A refresh is three named steps: **observe** (each executor says what it sees
of its tasks: one `squeue` and one `sacct` for every Slurm run shown at once),
**reconcile** (`liveness`: chunks whose task is gone become *lost*, so that
`retry` picks their keys up; and the accounting of tasks that ended is kept
for the sizing history) and **count** (a run's key is *done* when it is
in the target table, whatever a task reported). The report itself is built by
pure functions from what those steps return.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from djhpc import backoff, dj, executors, liveness
from djhpc.allocation import explain_reason
from djhpc.executors import FOLLOW_UP, RUN_TASKS, Observed, TaskView
from djhpc.executors.slurm_tools import TaskInfo, pending_reason_text
from djhpc.ledger import ChunkRecord, ErrorRow, Ledger, RunRecord, now
from djhpc.sizing import History, KeySeconds, TaskUsage
from djhpc.states import (
    COUNTED_CHUNK_STATES,
    TASK_STATE_OF_CHUNK,
    ChunkState,
    RunPhase,
    RunState,
    TaskState,
)


@dataclass(frozen=True, kw_only=True)
class KeyCounts:
    total: int = 0
    done: int = 0
    error: int = 0
    reserved: int = 0
    remaining: int = 0


@dataclass(frozen=True, kw_only=True)
class ChunkView:
    chunk: int
    attempt: int
    state: ChunkState
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
    split_from: int | None = None  # the chunk an idle task split these keys off


@dataclass(frozen=True, kw_only=True)
class Efficiency:
    cpu: float | None = None  # TotalCPU / CPUTime
    memory: float | None = None  # max MaxRSS / requested memory
    time: float | None = None  # longest elapsed / time limit


@dataclass(frozen=True, kw_only=True)
class RunReport:
    run_id: int
    target: str
    table: str
    executor: str
    state: RunState
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
    # Billing units x elapsed hours, from sacct; None where Slurm does not bill (local runs).
    billing_hours: float | None = None
    account: str | None = None
    # Automatic reruns with more memory or time (see `escalation`), oldest first.
    escalations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return RunState(self.state).final

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


# --- refresh: observe → reconcile → count → report --------------------------------


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Runs as one refresh saw them: their reports, chunks and what the executors saw."""

    reports: list[RunReport]
    chunks: dict[int, list[ChunkRecord]]  # by run id, after reconciling
    views: Observed


def snapshot(ledger: Ledger, runs: Sequence[RunRecord], ask_scheduler: bool = True,
             poll: SlurmPoll | None = None) -> Snapshot:
    """Observe, reconcile and count several runs, with one scheduler query for all of
    them (if asked, or if `poll` says it is time)."""
    chunks = {run.run_id: ledger.chunks(run.run_id) for run in runs}
    pairs = [(run, c) for run in runs for c in chunks[run.run_id]]
    views = (poll.observe(pairs, runs) if poll is not None
             else executors.observe(pairs, ask_scheduler=ask_scheduler))
    current = {run.run_id: liveness.reconcile(ledger, run, chunks[run.run_id], views)
               for run in runs}
    ledger.add_usage(accounted_usage(pairs, views))
    return Snapshot(reports=[count(ledger, run, current[run.run_id], views) for run in runs],
                    chunks=current, views=views)


def accounted_usage(pairs: Sequence[tuple[RunRecord, ChunkRecord]],
                    views: Observed) -> list[TaskUsage]:
    """What the scheduler accounted for each task that has ended, as history rows."""
    usage = []
    for run, c in pairs:
        view = views.get((run.run_id, c.chunk))
        info = view.accounting if view else None
        # Slurm fills MaxRSS in a moment after the end: a task is kept once it has it.
        if info is None or not info.state.final or info.max_rss_mb is None:
            continue
        usage.append(TaskUsage(run_id=run.run_id, chunk=c.chunk, attempt=c.attempt,
                               job_id=info.job_id, state=str(info.state),
                               elapsed_s=info.elapsed_s, cpu_s=info.total_cpu_s,
                               max_rss_mb=info.max_rss_mb, req_mem_mb=info.req_mem_mb))
    return usage


def refresh(ledger: Ledger, runs: Sequence[RunRecord], ask_scheduler: bool = True,
            poll: SlurmPoll | None = None) -> list[RunReport]:
    """Reports for several runs (see `snapshot`)."""
    return snapshot(ledger, runs, ask_scheduler, poll).reports


def done_counts(ledger: Ledger, run: RunRecord, chunks: Sequence[ChunkRecord]) -> dict[int, int]:
    """Keys of each chunk in the table: counted now, or when the chunk's task ended.

    A finished chunk of a single attempt keeps the count its task took from
    the database as it ended, so a big finished run needs no million-row count
    on every refresh. After a retry, the first attempt's keys may have been made
    by a later one, so its chunks are counted afresh, as are active and lost ones.
    """
    if run.attempts != 1:
        return ledger.done_by_chunk(run, chunks)
    kept = {c.chunk: c.n_done for c in chunks
            if c.state in COUNTED_CHUNK_STATES and c.attempt == 1}
    fresh = [c for c in chunks if c.chunk not in kept]
    return {**kept, **ledger.done_by_chunk(run, fresh)}


def count(ledger: Ledger, run: RunRecord, chunks: Sequence[ChunkRecord],
          views: Observed) -> RunReport:
    """Count the run's keys in the target table and build its report."""
    latest = [c for c in chunks if c.attempt == run.attempts]
    first = [c for c in chunks if c.attempt == 1]
    done_first = done_counts(ledger, run, first)
    done_latest = done_first if run.attempts == 1 else done_counts(ledger, run, latest)
    return build_report(run, chunks, views, done_first=done_first, done_latest=done_latest,
                        stamp=now())


def run_state(run: RunRecord, latest: Sequence[ChunkRecord], keys: KeyCounts) -> RunState:
    if run.cancelled:
        return RunState.CANCELLED
    if run.state == RunPhase.SUBMITTING:
        return RunState.SUBMITTING
    if any(c.state.active for c in latest):
        started = any(c.state != ChunkState.QUEUED or c.started for c in latest)
        return RunState.RUNNING if started else RunState.QUEUED
    if keys.remaining == 0:
        return RunState.DONE
    if keys.error or any(c.state == ChunkState.FAILED for c in latest):
        return RunState.FAILED
    return RunState.INCOMPLETE


def build_report(run: RunRecord, chunks: Sequence[ChunkRecord], views: Observed, *,
                 done_first: dict[int, int], done_latest: dict[int, int],
                 stamp: datetime) -> RunReport:
    """The report, from the run's chunks, what the executors saw, and the done counts."""
    latest = [c for c in chunks if c.attempt == run.attempts]
    chunk_views = []
    for c in latest:
        done = done_latest.get(c.chunk, 0)
        error = min(c.n_error, c.keys - done)
        chunk_views.append(_chunk_view(c, views.get((run.run_id, c.chunk)), done, error, stamp))
    done = sum(done_first.values())
    keys = KeyCounts(
        total=run.n_keys, done=done, remaining=run.n_keys - done,
        error=sum(v.error for v in chunk_views),
        reserved=sum(max(0, v.keys - v.done - v.error) for v in chunk_views
                     if v.state == ChunkState.RUNNING))
    state = run_state(run, latest, keys)
    # A run whose tasks Slurm stopped for memory or time is not over while its
    # follow-up job may yet start another attempt for them.
    follow_up = views.get((run.run_id, FOLLOW_UP))
    following = (state.final and not run.cancelled and follow_up is not None and follow_up.alive
                 and (any(v.task_state in ESCALATED_TASK_STATES for v in chunk_views)
                      or any(c.state in (ChunkState.INTERRUPTED, ChunkState.LOST)
                             for c in latest)))
    if following:
        state = RunState.RUNNING
    task_counts = Counter(v.task_state or "unknown" for v in chunk_views)

    started = min((c.started for c in chunks if c.started), default=None)
    ended = [c.finished for c in chunks if c.finished]
    finished = max(ended) if state.final and ended else None
    if state == RunState.CANCELLED and run.finished:
        finished = run.finished
    accounted = run_tasks(run, chunks, views)
    rate, eta = _rate(keys, started, finished, stamp)
    eff = efficiency(accounted)
    return RunReport(
        run_id=run.run_id, target=run.target, table=run.table_name, executor=run.executor,
        state=state, keys=keys, tasks=dict(task_counts),
        core_hours=round(_core_hours(chunks, accounted, stamp), 4),
        created=_iso(run.created) or "", started=_iso(started), finished=_iso(finished),
        attempts=run.attempts, keys_per_hour=_round(rate), eta_s=_round(eta, 0),
        efficiency=eff, hints=(_hints(eff, state) + pending_hints(chunk_views, run_account(run))
                               + (FOLLOWING_HINT if following else [])),
        chunks=chunk_views, billing_hours=billing_hours(accounted), account=run_account(run),
        escalations=list(run.settings.get("escalations") or []))


def run_tasks(run: RunRecord, chunks: Sequence[ChunkRecord], views: Observed) -> list[TaskInfo]:
    """The scheduler's record of each task the run started, once each: every task of its
    jobs where the executor sees them, else the tasks its chunks name."""
    every = views.get((run.run_id, RUN_TASKS))
    if every is not None:
        return list(every.tasks)
    named = {v.accounting.job_id: v.accounting for c in chunks
             if (v := views.get((run.run_id, c.chunk))) and v.accounting}
    return list(named.values())


ESCALATED_TASK_STATES = (TaskState.OUT_OF_MEMORY, TaskState.TIMEOUT)
FOLLOWING_HINT = ["its tasks have ended; the run's follow-up job is looking at those Slurm "
                  "stopped for memory or time and at keys handed back, to go on with them"]


def pending_hints(views: Sequence[ChunkView], account: str | None = None) -> list[str]:
    """Why queued tasks wait, in words with what to do, one line per reason."""
    waiting = Counter(v.pending_reason for v in views if v.pending_reason)
    hints = []
    for reason, count in waiting.most_common():
        tasks = f"{count} task{'s' if count > 1 else ''}"
        # The allocation's own reasons name the account and how to look at its quota.
        quota_text = explain_reason(reason, account)
        if quota_text:
            hints.append(f"{tasks}: {quota_text}")
            continue
        text = pending_reason_text(reason)
        hints.append(f"{tasks} pending ({reason}): {text}" if text
                     else f"{tasks} pending ({reason})")
    return hints


def _chunk_view(c: ChunkRecord, view: TaskView | None, done: int, error: int,
                stamp: datetime) -> ChunkView:
    task = view.accounting if view else None
    return ChunkView(
        chunk=c.chunk, attempt=c.attempt, state=c.state, keys=c.keys, done=done, error=error,
        job=c.job_id, host=c.host or (task.node if task else None),
        task_state=str(view.state if view else TASK_STATE_OF_CHUNK[c.state]),
        elapsed_s=(task.elapsed_s if task and task.elapsed_s is not None
                   else _elapsed(c.started, c.finished, stamp)),
        max_rss_mb=task.max_rss_mb if task else None,
        started=_iso(c.started), finished=_iso(c.finished),
        pending_reason=task.reason if task and task.state is TaskState.PENDING else None,
        split_from=c.split_from)


def _elapsed(start: datetime | None, end: datetime | None, stamp: datetime) -> float | None:
    if start is None:
        return None
    return ((end or stamp) - start).total_seconds()


def _core_hours(chunks: Sequence[ChunkRecord], tasks: Sequence[TaskInfo],
                stamp: datetime) -> float:
    if tasks:
        # sacct's CPUTime is elapsed x allocated CPUs; a task only squeue has seen yet
        # (accounting lags) is counted the same way from squeue's figures.
        return sum(t.cpu_time_s if t.cpu_time_s is not None
                   else (t.elapsed_s or 0.0) * (t.cpus or 1) for t in tasks) / 3600
    # Local runs: one core per task for as long as it ran.
    return sum(_elapsed(c.started, c.finished, stamp) or 0.0 for c in chunks) / 3600


def billing_hours(tasks: Sequence[TaskInfo]) -> float | None:
    """What the tasks cost in the site's billing units x hours (sacct's own figures)."""
    billed = [t for t in tasks if t.billing is not None and t.elapsed_s is not None]
    if not billed:
        return None
    return round(sum((t.billing or 0.0) * (t.elapsed_s or 0.0) for t in billed) / 3600, 4)


def run_account(run: RunRecord) -> str | None:
    resources = run.settings.get("resources") if isinstance(run.settings, dict) else None
    return resources.get("account") if isinstance(resources, dict) else None


def billing_totals(reports: Sequence[RunReport]) -> dict[str, dict[str, float]]:
    """Billing hours summed per table and per account, over runs that have them."""
    by_table: dict[str, float] = {}
    by_account: dict[str, float] = {}
    for r in reports:
        if r.billing_hours is None:
            continue
        by_table[r.table] = round(by_table.get(r.table, 0.0) + r.billing_hours, 4)
        account = r.account or "(default)"
        by_account[account] = round(by_account.get(account, 0.0) + r.billing_hours, 4)
    return {"by_table": by_table, "by_account": by_account}


def _rate(keys: KeyCounts, started: datetime | None, finished: datetime | None,
          stamp: datetime) -> tuple[float | None, float | None]:
    if not started or not keys.done:
        return None, None
    hours = max(((finished or stamp) - started).total_seconds(), 1.0) / 3600
    rate = keys.done / hours
    eta = None if finished else keys.remaining / rate * 3600
    return rate, eta


def efficiency(tasks: Sequence[TaskInfo]) -> Efficiency:
    """How much of what ended tasks asked for they used (CPU, memory, time)."""
    ended = [t for t in tasks if t.state.final]
    cpu_time = sum(t.cpu_time_s or 0 for t in ended)
    total_cpu = sum(t.total_cpu_s or 0 for t in ended)
    mems = [t.max_rss_mb / t.req_mem_mb for t in ended if t.max_rss_mb and t.req_mem_mb]
    times = [t.elapsed_s / t.timelimit_s for t in ended if t.elapsed_s and t.timelimit_s]
    return Efficiency(cpu=_round(total_cpu / cpu_time, 3) if cpu_time else None,
                      memory=_round(max(mems), 3) if mems else None,
                      time=_round(max(times), 3) if times else None)


def _hints(eff: Efficiency, state: RunState) -> list[str]:
    if not state.final:
        return []
    hints = []
    if eff.memory is not None and eff.memory < 0.5:
        hints.append(f"Tasks used at most {eff.memory:.0%} of the memory they asked for: "
                     "ask for less (--mem) to start sooner and spend less (once 20 keys are "
                     "timed, the table's next submit sizes it from djhpc history).")
    if eff.time is not None and eff.time < 0.5:
        hints.append(f"The longest task used {eff.time:.0%} of its time limit: ask for less "
                     "(--time) or put more keys in each chunk (--chunk-size) (once 20 keys are "
                     "timed, the table's next submit sizes both from djhpc history).")
    return hints


# --- what the CLI shows -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Overview:
    """`djhpc status`: several runs, without their chunks."""

    runs: list[RunReport]

    @property
    def final(self) -> bool:
        return all(r.final for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {"runs": [r.to_json(with_chunks=False) for r in self.runs],
                "billing": billing_totals(self.runs)}


@dataclass(frozen=True, kw_only=True)
class RunDetail:
    """`djhpc status RUN`: one run with its chunks and its most frequent errors."""

    report: RunReport
    errors: list[ErrorGroup]
    key_seconds: KeySeconds | None = None  # make() per key, of the keys made so far

    @property
    def final(self) -> bool:
        return self.report.final

    def to_json(self) -> dict[str, Any]:
        return {**self.report.to_json(),
                "key_seconds": self.key_seconds.to_json() if self.key_seconds else None}


@dataclass(frozen=True, kw_only=True)
class TableView:
    """`djhpc status TARGET`: DataJoint's own progress of the table, and its runs."""

    target: str
    table: str
    remaining: int
    total: int
    runs: list[RunReport]
    history: History | None = None  # what the runs measured, as the next submit sizes from

    @property
    def final(self) -> bool:
        return all(r.final for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "table": self.table,
                "progress": {"remaining": self.remaining, "total": self.total},
                "runs": [r.to_json(with_chunks=False) for r in self.runs],
                "billing": billing_totals(self.runs),
                "history": self.history.to_json() if self.history else None}


@dataclass
class SlurmPoll:
    """The scheduler's word for repeated refreshes (`status --watch`), asked for sparingly.

    The scheduler is asked at most every `backoff.slurm_interval` seconds (30 s,
    more for runs of hours); in between, its last answer about each task stands,
    while the ledger (and local processes) are read afresh on every refresh.
    """

    floor: float = backoff.MIN_SLURM_INTERVAL
    asked_at: float | None = None
    seen: Observed = field(default_factory=dict)
    clock: Any = time.monotonic

    def observe(self, chunks: Sequence[tuple[RunRecord, ChunkRecord]],
                runs: Sequence[RunRecord]) -> Observed:
        oldest = min((r.created for r in runs), default=None)
        age = (now() - oldest).total_seconds() if oldest else 0.0
        due = self.asked_at is None or (
            self.clock() - self.asked_at >= backoff.slurm_interval(age, self.floor))
        views = executors.observe(chunks, ask_scheduler=due)
        if due:
            self.asked_at = self.clock()
            self.seen = {k: v for k, v in views.items() if v.accounting is not None or v.tasks}
        else:
            # Its word on the runs' chunks, and on their follow-ups and tasks (FOLLOW_UP,
            # RUN_TASKS: keys only an asked scheduler adds).
            watched = {r.run_id for r in runs}
            views.update({k: v for k, v in self.seen.items()
                          if k in views or (k[0] in watched and k[1] < 0)})
        return views


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


@dataclass(frozen=True, kw_only=True)
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

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "example": self.example, "count": self.count,
                "keys": self.keys, "chunk": self.chunk, "run_id": self.run_id,
                "attempts": self.attempts, "log": self.log, "traceback": self.stack}


LogPath = Callable[[int, int], Path | None]  # (run_id, chunk) -> the task's stderr


def group_errors(rows: Sequence[ErrorRow], log_path: LogPath | None = None,
                 examples: int = 3) -> list[ErrorGroup]:
    """Errors grouped by message pattern, most frequent first."""
    by_pattern: dict[str, list[ErrorRow]] = {}
    for row in rows:
        by_pattern.setdefault(error_pattern(row.message), []).append(row)
    groups = []
    for pattern, members in by_pattern.items():
        first = members[0]  # the group points at its first error's task and log
        log = log_path(first.run_id, first.chunk) if log_path else None
        groups.append(ErrorGroup(
            message=pattern, example=first.message, count=len(members),
            keys=[m.key for m in members[:examples]], chunk=first.chunk, run_id=first.run_id,
            attempts=list(dict.fromkeys(m.attempt for m in members)),
            log=str(log) if log else None, stack=first.stack))
    return sorted(groups, key=lambda g: -g.count)


def error_groups(ledger: Ledger, runs: Sequence[RunRecord],
                 log_path: LogPath | None = None) -> list[ErrorGroup]:
    """Errors of these runs grouped by message, most frequent first."""
    return group_errors(ledger.errors([r.run_id for r in runs]), log_path)


def table_progress(cls: Any) -> tuple[int, int]:
    """DataJoint's own (remaining, total) for the table."""
    return dj.progress(cls())
