"""Whether a chunk's task can still finish it, and marking the ones that cannot as lost.

Two kinds of evidence meet here: what the executor sees of the task
(`executors.TaskView`: the scheduler's state, a process that is gone) and
what the ledger shows (the task's heartbeat and database connection). The
executor's word wins when it has one; the ledger's silence counts only when
the executor cannot tell.

`reconcile` is the one step that writes: `djhpc status` and `retry` call it
explicitly before they count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

from djhpc.executors import Observed, TaskView
from djhpc.ledger import ChunkRecord, Ledger, RunRecord, now
from djhpc.states import ChunkState
from djhpc.worker import FLUSH_SECONDS

# How long a task may stay silent, with its database connection gone, before
# its chunk counts as lost: a live task reconnects and reports within this.
SILENCE = timedelta(seconds=max(60.0, 6 * FLUSH_SECONDS))


def lost_reason(chunk: ChunkRecord, view: TaskView | None, connections: set[int] | None,
                stamp: datetime) -> str | None:
    """Why an active chunk's task can no longer finish it; None while it can."""
    if not chunk.state.active:
        return None
    if view is not None and (view.gone or view.alive):
        return view.gone
    if chunk.state == ChunkState.RUNNING:
        silent = chunk.heartbeat is None or stamp - chunk.heartbeat > SILENCE
        gone = connections is not None and chunk.connection_id not in connections
        if gone and silent:
            return "The task's database connection is gone and it stopped reporting"
    return None


def reconcile(ledger: Ledger, run: RunRecord, chunks: Sequence[ChunkRecord], views: Observed,
              connections: set[int] | None) -> list[ChunkRecord]:
    """Mark chunks whose task is gone as lost, with the reason in the error history.

    Returns the chunks as they are now. A cancelled run is left alone: its
    chunks were stopped on purpose.
    """
    if run.cancelled:
        return list(chunks)
    stamp = now()
    current = []
    for c in chunks:
        reason = lost_reason(c, views.get((run.run_id, c.chunk)), connections, stamp)
        if reason and ledger.set_chunk_states(run.run_id, [c.chunk], ChunkState.LOST,
                                              only_from=(c.state,)):
            left = c.keys - c.n_done - c.n_error
            ledger.add_errors(run.run_id, c.attempt, c.chunk,
                              [({}, f"{reason} before finishing its chunk: {left} keys handed "
                                "back", "")], c.job_id, c.host or "")
            c = dataclasses.replace(c, state=ChunkState.LOST)
        current.append(c)
    return current
