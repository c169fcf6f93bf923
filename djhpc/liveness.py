"""Whether a chunk's task can still finish it, and marking the ones that cannot as lost.

Only evidence counts: the executor must say that the task is gone (Slurm: it
ended, or neither squeue nor sacct knows it; a local or debug task: its
process is gone or is another program now). Silence never does: a make() may
run for hours without a word, and its database connection may drop and come
back meanwhile. The task's heartbeat and connection id in the ledger are
hints for people, not grounds for declaring it lost.

`reconcile` is the one step that writes: `djhpc status`, `--wait` and `retry`
call it explicitly before they count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from djhpc.executors import Observed, TaskView
from djhpc.ledger import ChunkRecord, Ledger, RunRecord
from djhpc.states import ChunkState


def lost_reason(chunk: ChunkRecord, view: TaskView | None) -> str | None:
    """Why an active chunk's task can no longer finish it; None while it can, or while
    nobody can tell."""
    if not chunk.state.active or view is None or view.alive:
        return None
    return view.gone


def reconcile(ledger: Ledger, run: RunRecord, chunks: Sequence[ChunkRecord],
              views: Observed) -> list[ChunkRecord]:
    """Mark chunks whose task is gone as lost, with the reason in the error history.

    Returns the chunks as they are now. A cancelled run is left alone: its
    chunks were stopped on purpose.
    """
    if run.cancelled:
        return list(chunks)
    current = []
    for c in chunks:
        reason = lost_reason(c, views.get((run.run_id, c.chunk)))
        if reason and ledger.set_chunk_states(run.run_id, [c.chunk], ChunkState.LOST,
                                              only_from=(c.state,)):
            left = c.keys - c.n_done - c.n_error
            ledger.add_errors(run.run_id, c.attempt, c.chunk,
                              [({}, f"{reason} before finishing its chunk: {left} keys handed "
                                "back", "")], c.job_id, c.host or "")
            ledger.release_reservations(run, c)
            c = dataclasses.replace(c, state=ChunkState.LOST)
        current.append(c)
    return current
