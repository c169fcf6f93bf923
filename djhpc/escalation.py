"""What a run does by itself once an attempt's tasks have ended: the follow-up job.

With each attempt's arrays the Slurm executor submits one small follow-up job
that starts once all of them have ended (`--dependency=afterany`). It reads
Slurm's accounting of the attempt's tasks (and keeps it for the sizing
history); when some ended OUT_OF_MEMORY or TIMEOUT, it starts a new attempt of
the same run for their unmade keys, with twice the memory or the time (up to
`max_mem` or the partition's limit), and a follow-up for that attempt in turn.
Keys handed back unmade (a task stopped at its time limit with its requeues
spent, or cancelled as surplus before it started) go on in a continuation
attempt with the same resources, up to `max_continuations` attempts. A run
thus completes and heals without the user and without a daemon; status shows
each escalation and why. A key that runs out of memory (or time) even at the cap,
or after `max_escalations`, becomes that key's error, naming what it had; the rest of
its chunk is left for `djhpc retry`.

`decide` is pure; `follow_up` is what the job runs on its compute node.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from djhpc.ledger import ChunkRecord
from djhpc.resources import Resources, format_duration, format_mb
from djhpc.sizing import CONTINUED, Escalation, escalate
from djhpc.states import ChunkState, TaskState

log = logging.getLogger(__name__)

REASONS = {TaskState.OUT_OF_MEMORY: "out_of_memory", TaskState.TIMEOUT: "timeout"}
HANDED_BACK = "handed_back"  # keys a task gave back unmade: they go on as they were
NOT_ITS_FAULT = (TaskState.CANCELLED, TaskState.PREEMPTED, TaskState.NODE_FAIL)
SACCT_WAIT_S = 120.0  # for Slurm's accounting to record every end


@dataclass(frozen=True, kw_only=True)
class Stopped:
    """A chunk whose task Slurm stopped, and the first of its keys not made."""

    chunk: int
    reason: str  # "out_of_memory" | "timeout"
    hi: int  # one past its last key number
    first_unmade: int | None  # None: every key was made or failed on its own


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What a follow-up does about an attempt's stopped tasks."""

    resources: Resources  # the next attempt's
    ranges: list[tuple[int, int]] = field(default_factory=list)  # key numbers to make again
    escalations: list[Escalation] = field(default_factory=list)
    culprits: list[tuple[int, int, str]] = field(default_factory=list)  # (chunk, key no., why)


def decide(res: Resources, stopped: Sequence[Stopped], *, attempt: int, escalated: int,
           max_escalations: int, max_mem_mb: float | None, max_time_s: float | None,
           continuations_left: int = 0) -> Decision:
    """More memory or time for the next attempt, where the caps allow; else the key at
    fault becomes an error. Keys handed back go on as they were, while the run may
    continue (`continuations_left`)."""
    raised: dict[str, Resources] = {}
    current = res
    for reason in sorted({s.reason for s in stopped} - {HANDED_BACK}):
        more = None
        if escalated + len(raised) < max_escalations:
            more = escalate(current, reason, max_mem_mb=max_mem_mb, max_time_s=max_time_s)
        if more is not None:
            raised[reason] = more
            current = more
    escalations = [
        Escalation(attempt=attempt + 1, reason=reason,
                   chunks=tuple(s.chunk for s in stopped if s.reason == reason),
                   before=_amount(res, reason), after=_amount(raised[reason], reason))
        for reason in raised]
    ranges, culprits, continued = [], [], []
    for s in stopped:
        if s.first_unmade is None:
            continue
        if s.reason == HANDED_BACK:
            if continuations_left > 0:
                ranges.append((s.first_unmade, s.hi))
                continued.append(s.chunk)
            continue
        if s.reason in raised:
            ranges.append((s.first_unmade, s.hi))
            continue
        # The rest of its chunk waits for `djhpc retry`, which the user runs with more.
        culprits.append((s.chunk, s.first_unmade, _fault(res, s.reason, escalated,
                                                         max_escalations)))
    if continued:
        escalations.append(Escalation(attempt=attempt + 1, reason=CONTINUED,
                                      chunks=tuple(continued), before="", after=""))
    return Decision(resources=current, ranges=ranges, escalations=escalations, culprits=culprits)


def _amount(res: Resources, reason: str) -> str:
    return format_mb(res.mem_mb) if reason == "out_of_memory" else format_duration(res.time_s)


def _fault(res: Resources, reason: str, escalated: int, max_escalations: int) -> str:
    """The error of a key that needed more than a task may have."""
    why = (f"after {escalated} escalations (max_escalations)" if escalated >= max_escalations
           else "the most this run may ask for")
    if reason == "out_of_memory":
        return (f"Out of memory: this key's make() needed more than {format_mb(res.mem_mb)} "
                f"({why}); raise --max-mem or --mem, or make it use less")
    return (f"Out of time: this key's make() did not finish within {format_duration(res.time_s)} "
            f"({why}); raise --time or use a partition with a longer limit")


# --- the follow-up job ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FollowUp:
    """The pickled payload of a follow-up job: names and numbers, never credentials."""

    ledger_schema: str
    run_id: int
    attempt: int
    workdir: str

    def __call__(self) -> dict[str, Any]:
        return follow_up(self)


def follow_up(job: FollowUp) -> dict[str, Any]:
    """After an attempt's tasks: keep their accounting, and rerun what Slurm stopped."""
    from djhpc import dj, lifecycle, status
    from djhpc.config import load
    from djhpc.ledger import Ledger

    os.chdir(job.workdir)
    if job.workdir not in sys.path:
        sys.path.insert(0, job.workdir)
    conn = dj.connection()
    ledger = Ledger(conn, job.ledger_schema)
    run = ledger.run(job.run_id)
    if run.cancelled or run.attempts != job.attempt:
        return {"escalated": False, "why": "the run was cancelled or retried meanwhile"}
    views = _accounted(ledger, run, status)
    stopped = []
    for c in ledger.chunks(run.run_id, attempt=job.attempt):
        reason = _reason(c, views.get((run.run_id, c.chunk)))
        if reason:
            stopped.append(Stopped(chunk=c.chunk, reason=reason, hi=c.hi,
                                   first_unmade=ledger.first_unmade(run, c)))
    if not stopped:
        return {"escalated": False, "why": "every chunk was made or failed on its own"}
    settings, sources = load(cwd=Path(job.workdir))
    ctx = lifecycle.Context(settings=settings, sources=sources, conn=conn, ledger=ledger)
    return lifecycle.escalate(ctx, run, stopped)


def _reason(chunk: ChunkRecord, view: Any) -> str | None:
    """Why a chunk of an ended attempt has keys to go on with, if it has."""
    if chunk.state in (ChunkState.DONE, ChunkState.CANCELLED):
        return None
    if view is not None and view.state in REASONS:
        return REASONS[view.state]
    # Handed back at the time limit without making one key: its key needs more time.
    if chunk.state == ChunkState.INTERRUPTED and chunk.n_done + chunk.n_error == 0:
        return "timeout"
    # Handed back (a signal, the time limit), or its task stopped by others (cancelled as
    # surplus, preempted, its node failed); not a task that died of its own make().
    if chunk.state == ChunkState.INTERRUPTED or (
            chunk.state == ChunkState.LOST and view is not None and view.state in NOT_ITS_FAULT):
        return HANDED_BACK
    return None


def _accounted(ledger: Any, run: Any, status: Any) -> Mapping[tuple[int, int], Any]:
    """The attempt's tasks as Slurm saw them, once its accounting has every one's end.

    Observing also reconciles (a stopped task's chunk becomes lost) and keeps
    each task's accounting for the history.
    """
    deadline = time.monotonic() + SACCT_WAIT_S
    while True:
        shot = status.snapshot(ledger, [run])
        latest = [c for c in shot.chunks[run.run_id] if c.attempt == run.attempts and c.job_id]
        views = shot.views
        if all((v := views.get((run.run_id, c.chunk))) is not None and v.accounting is not None
               and v.state.final for c in latest) or time.monotonic() > deadline:
            return dict(views)
        time.sleep(3)
