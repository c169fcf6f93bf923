"""What runs inside a task: populate exactly one chunk's keys.

The same `run_chunk` runs under every executor (a Slurm array task through
submitit, a local process, or in-process for debugging):

1. reconnect with the user's own DataJoint configuration;
2. claim the chunk in the ledger (one atomic UPDATE: one task wins);
3. import the target table and check that its key is still the one recorded;
4. read the chunk's keys from the ledger and make each one in its own
   transaction, as DataJoint's own `populate()` does, skipping keys already made;
5. report progress and errors to the ledger every few seconds, not per key;
6. on Slurm's warning signal (USR2) or SIGTERM, stop between keys, or interrupt
   the current key when there is no time left; hand the rest back (requeue).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from djhpc import dj
from djhpc.ledger import DONE, FAILED, INTERRUPTED, QUEUED, ChunkRecord, KeyTime, Ledger, RunRecord
from djhpc.target import Target

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # how often a task reports progress
TRANSIENT_RETRIES = 3  # per key, for deadlocks, lock waits and lost connections
SIGTERM_GRACE = 0.0  # Slurm kills KillWait (often 30 s) after SIGTERM: stop at once
USR2_MARGIN = 20.0  # seconds kept back from the warning signal's lead time


class Interrupted(BaseException):
    """Raised inside make() when the task must stop now.

    A BaseException, so that a make() with `except Exception` cannot swallow it.
    """


@dataclass(frozen=True)
class ChunkTask:
    """The pickled payload of one task: names and numbers, never credentials."""

    ledger_schema: str
    run_id: int
    chunk: int
    workdir: str
    signal_delay: int = 120
    max_requeues: int = 3
    # Whether this is a Slurm task of ours: a local run started inside an
    # allocation (salloc) sees SLURM_* too, but must not act on it.
    slurm: bool = False

    def __call__(self) -> dict[str, Any]:
        return run_chunk(self)


@dataclass
class Outcome:
    done: int = 0
    errors: int = 0
    interrupted: bool = False
    claimed: bool = True
    state: str = DONE
    requeue: bool = False  # ask Slurm to run this task again

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "errors": self.errors, "state": self.state,
                "claimed": self.claimed}


class StopSignal:
    """Turns SIGTERM / SIGUSR2 into a stop between keys, or an interrupt."""

    def __init__(self, usr2_grace: float) -> None:
        self.usr2_grace = usr2_grace
        self.requested: str | None = None
        self.in_key = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        # SIGINT too: Ctrl-C under the debug executor stops like a cancel, and
        # DataJoint would otherwise record it as the key's error and go on.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGALRM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGALRM:
            if self.in_key:
                raise Interrupted(f"no time left after {self.requested}")
            return
        log.warning("Received %s: stopping after the current key", name)
        self.requested = self.requested or name
        grace = self.usr2_grace if signum == signal.SIGUSR2 else SIGTERM_GRACE
        if not self.in_key:
            return
        if grace <= 0:
            raise Interrupted(f"{name} received")
        signal.setitimer(signal.ITIMER_REAL, grace)


def slurm_job_id() -> str | None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def run_chunk(task: ChunkTask) -> dict[str, Any]:
    """Populate one chunk; returns a summary (the ledger has the full record)."""
    os.chdir(task.workdir)
    if task.workdir not in sys.path:
        sys.path.insert(0, task.workdir)
    conn = dj.connection()
    ledger = Ledger(conn, task.ledger_schema)
    run = ledger.run(task.run_id)
    host, job_id = socket.gethostname(), slurm_job_id() if task.slurm else None
    connection_id = int(dj.query(conn, f"SELECT {ledger.d.connection_id}").fetchone()[0])
    if not ledger.claim(task.run_id, task.chunk, job_id=job_id, host=host, pid=os.getpid(),
                        connection_id=connection_id):
        log.warning("Chunk %s of run %s is not queued (taken, finished or cancelled): "
                    "nothing to do", task.chunk, task.run_id)
        return Outcome(claimed=False, state="skipped").as_dict()
    chunk = ledger.chunk(task.run_id, task.chunk)
    try:
        outcome = _populate_chunk(task, ledger, run, chunk, host, job_id)
    except BaseException as error:
        # Anything that escapes (an import error, a lost ledger) fails the chunk
        # with its reason on record rather than leaving it "running".
        message = f"{type(error).__name__}: {error}"
        _safe(lambda: ledger.add_errors(run.run_id, chunk.attempt, chunk.chunk,
                                        [({}, message, traceback.format_exc())], job_id, host))
        _safe(lambda: ledger.report(run.run_id, chunk.chunk, n_done=0, n_error=0, state=FAILED))
        raise
    if outcome.requeue and not _requeue_self():
        # Slurm would not take the task back: leave the keys to `djhpc retry`.
        _safe(lambda: ledger.set_chunk_states(run.run_id, [chunk.chunk], INTERRUPTED,
                                              only_from=(QUEUED,)))
    return outcome.as_dict()


def _populate_chunk(task: ChunkTask, ledger: Ledger, run: RunRecord, chunk: ChunkRecord,
                    host: str, job_id: str | None) -> Outcome:
    cls = Target.from_ref(run.target, run.paths).load()
    table = cls()
    attrs = dj.key_attributes(table)
    if attrs != run.key_attrs:
        raise RuntimeError(
            f"{run.target}'s key_source key is now ({', '.join(attrs)}), but the run recorded "
            f"({', '.join(run.key_attrs)}): the table changed since submission; submit again")
    uuids = dj.uuid_attributes(table)
    rows = ledger.chunk_keys(run, chunk)
    outcome = Outcome()
    pending_errors: list[tuple[dict[str, Any], str, str]] = []
    pending_times: list[KeyTime] = []
    last_flush = time.monotonic()

    def flush(state: str | None = None, requeue: bool = False) -> None:
        ledger.add_errors(run.run_id, chunk.attempt, chunk.chunk, pending_errors, job_id, host)
        pending_errors.clear()
        ledger.add_key_times(run.run_id, chunk.attempt, chunk.chunk, pending_times)
        pending_times.clear()
        # The last report counts from the database, so status can trust it later.
        done = ledger.done_by_chunk(run, [chunk]).get(chunk.chunk, 0) if state else outcome.done
        ledger.report(run.run_id, chunk.chunk, n_done=done, n_error=outcome.errors,
                      state=state, requeue=requeue)

    with StopSignal(usr2_grace=max(0.0, task.signal_delay - USR2_MARGIN)) as stop:
        for number, row in enumerate(rows, start=chunk.lo):
            if stop.requested:
                outcome.interrupted = True
                break
            key = dj.decode_key(row, run.key_attrs, uuids)
            try:
                stop.in_key = True
                started, clock = datetime.now(timezone.utc).replace(tzinfo=None), time.monotonic()
                error = _make(table, key)
            except Interrupted:
                _rollback(table)
                outcome.interrupted = True
                break
            finally:
                stop.in_key = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            pending_times.append(KeyTime(number, started, time.monotonic() - clock, error is None))
            if error is None:
                outcome.done += 1
            else:
                outcome.errors += 1
                pending_errors.append((key, _message(error), _stack(error)))
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                _with_reconnect(table, flush)
                last_flush = time.monotonic()
        if outcome.interrupted:
            _hand_back(task, ledger, run, chunk, outcome, stop.requested or "a signal",
                       len(rows), job_id, host)
            _with_reconnect(table, lambda: flush(outcome.state, requeue=outcome.state == QUEUED))
        else:
            outcome.state = FAILED if outcome.errors else DONE
            _with_reconnect(table, lambda: flush(outcome.state))
    return outcome


def _hand_back(task: ChunkTask, ledger: Ledger, run: RunRecord, chunk: ChunkRecord,
               outcome: Outcome, signal_name: str, n_keys: int, job_id: str | None,
               host: str) -> None:
    """Decide what becomes of a stopped chunk's remaining keys.

    Under Slurm, within the requeue budget, the chunk is queued again: after
    the time-limit warning (USR2) this task asks Slurm to requeue it; after
    SIGTERM (cancel, preemption) Slurm requeues a preempted task itself, and a
    cancelled one is found lost by `status`. Otherwise the keys wait for
    `djhpc retry`. A cancelled run is never requeued.
    """
    cancelled = _safe(lambda: ledger.run(run.run_id).cancelled, default=True)
    again = bool(job_id) and not cancelled and chunk.requeues < task.max_requeues
    outcome.state = QUEUED if again else INTERRUPTED
    outcome.requeue = again and signal_name == "SIGUSR2"
    left = n_keys - outcome.done - outcome.errors
    what = ("requeued" if again else "cancelled" if cancelled else "left for `djhpc retry`")
    message = f"Interrupted by {signal_name} after {outcome.done} keys: {left} keys {what}"
    log.warning(message)
    _safe(lambda: ledger.add_errors(run.run_id, chunk.attempt, chunk.chunk,
                                    [({}, message, "")], job_id, host))


def _make(table: Any, key: dict[str, Any]) -> BaseException | None:
    """Make one key; retry transient database errors with backoff."""
    for attempt in range(TRANSIENT_RETRIES + 1):
        try:
            _made, error = dj.populate_one(table, key)
        except SystemExit as exit_error:  # DataJoint re-raises SystemExit; keep going
            error = exit_error
        if error is None or not dj.is_transient(error) or attempt == TRANSIENT_RETRIES:
            return error
        delay = 0.5 * 2**attempt
        log.warning("Transient database error on %s (%s); retrying in %.1f s", key, error, delay)
        time.sleep(delay)
        dj.reconnect(table.connection)
    return None



def _with_reconnect(table: Any, action: Any) -> None:
    try:
        action()
    except Exception as error:
        if not dj.is_transient(error):
            raise
        dj.reconnect(table.connection)
        action()


def _rollback(table: Any) -> None:
    _safe(lambda: table.connection.cancel_transaction() if table.connection.in_transaction else None)
    type(table)._allow_insert = False


def _message(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _stack(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _safe(action: Any, default: Any = None) -> Any:
    try:
        return action()
    except Exception as error:  # reporting must never hide the original failure
        log.error("Could not record to the ledger: %s", error)
        return default


def _requeue_self() -> bool:
    """Ask Slurm to run this task again; the chunk is queued for it in the ledger."""
    from djhpc import slurm

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        slurm.run(["scontrol", "requeue", job])
    except slurm.SlurmError as error:
        log.error("Requeue failed (%s); `djhpc retry` will pick the chunk up", error)
        return False
    return True
