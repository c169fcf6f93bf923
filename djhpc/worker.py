"""What runs inside a task: populate its chunk's keys, then pull more chunks.

The same `run_chunk` runs under every executor (a Slurm array task through
submitit, a local process, or in-process for debugging):

1. reconnect with the user's own DataJoint configuration;
2. claim the chunk in the ledger (one atomic UPDATE: one task wins);
3. import the target table and check that its key is still the one recorded;
4. read the chunk's keys from the ledger and make each one in its own
   transaction, as DataJoint's own `populate()` does, skipping keys already made;
5. report progress and errors to the ledger every few seconds, not per key;
6. on Slurm's warning signal (USR2) or SIGTERM, stop between keys, or interrupt
   the current key when there is no time left; hand the rest back (requeue);
   never start a key that would not end before the time limit (`Deadline`);
7. claim the attempt's next chunk no task has started, and go on; the task
   that finds none left cancels the run's tasks that have not started.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from types import FrameType
from typing import Any

from djhpc import dj
from djhpc.ledger import Error, KeyTime, Lease, Ledger
from djhpc.sizing import KEY_MARGIN
from djhpc.states import ChunkState
from djhpc.target import Target

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # how often a task reports progress
WINDOW_MAX_KEYS = 1000  # keys a task takes at a time, at most (see `_window`)
HEARTBEAT_SECONDS = 30.0  # how often it says it is alive while one make() runs long
TRANSIENT_RETRIES = 3  # per key, for deadlocks, lock waits and lost connections
SIGTERM_GRACE = 0.0  # Slurm kills KillWait (often 30 s) after SIGTERM: stop at once
USR2_MARGIN = 20.0  # seconds kept back from the warning signal's lead time
TIME_LIMIT = "the time limit"  # why a task stops when the next key would not fit


class Interrupted(BaseException):
    """Raised inside make() when the task must stop now.

    A BaseException, so that a make() with `except Exception` cannot swallow it.
    """


@dataclass(frozen=True, kw_only=True)
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


@dataclass(kw_only=True)
class Outcome:
    """What a task did with its chunk; filled in as the keys are made."""

    done: int = 0
    errors: int = 0
    interrupted: bool = False
    claimed: bool = True
    state: str = ChunkState.DONE  # a ChunkState, or "skipped" when not claimed
    requeue: bool = False  # ask Slurm to run this task again
    cancelled: bool = False  # the run was cancelled when the task stopped

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "errors": self.errors, "state": str(self.state),
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


class Deadline:
    """When the task's time runs out, and whether the next key still fits before it.

    Read once when the task starts (Slurm: the task's time left; elsewhere
    none). The next key is estimated at the longest this task has seen, or the
    table's p95 from history before it has seen one; a key that would end
    within the signal delay of the limit is not started, so USR2 finds no key
    to cut short.
    """

    def __init__(self, time_left_s: float | None, reserve_s: float, history_p95_s: float | None,
                 clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.end = None if time_left_s is None else clock() + time_left_s
        self.reserve_s, self.longest = reserve_s, history_p95_s or 0.0

    def measured(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)

    def too_late(self) -> bool:
        if self.end is None:
            return False
        return self.clock() + self.longest * KEY_MARGIN + self.reserve_s > self.end


def _deadline(task: ChunkTask, lease: Lease | None) -> Deadline:
    left = None
    if task.slurm:
        from djhpc.executors import slurm_tools

        left = _safe(slurm_tools.current_time_left)
    sizing = (lease.run.settings.get("sizing") or {}) if lease else {}
    p95 = (sizing.get("key_seconds") or {}).get("p95")
    return Deadline(left, reserve_s=float(task.signal_delay), history_p95_s=p95)


def run_chunk(task: ChunkTask) -> dict[str, Any]:
    """Populate the task's chunk, then pull the attempt's next unstarted chunks until none
    is left or the task must stop; returns a summary (the ledger has the full record)."""
    os.chdir(task.workdir)
    if task.workdir not in sys.path:
        sys.path.insert(0, task.workdir)
    conn = dj.connection()
    dj.keep_session(conn)
    ledger = Ledger(conn, task.ledger_schema)
    ledger.upgrade()  # djhpc upgraded while the run's tasks waited in the queue
    job_id, host, pid = _slurm_task_id(task), socket.gethostname(), os.getpid()
    clock = time.monotonic()
    made: list[Outcome] = []
    first: Lease | None = None
    with StopSignal(usr2_grace=max(0.0, task.signal_delay - USR2_MARGIN)) as stop:
        lease = Lease.claim(ledger, task.run_id, task.chunk, job_id=job_id, host=host, pid=pid)
        attempt = lease.chunk.attempt if lease else ledger.chunk(task.run_id, task.chunk).attempt
        if lease is None:
            log.info("Chunk %s of run %s is taken or finished: pulling the next one",
                     task.chunk, task.run_id)
        deadline = _deadline(task, lease)
        while True:
            lease = lease or (None if stop.requested else Lease.claim_next(
                ledger, task.run_id, attempt, job_id=job_id, host=host, pid=pid))
            if lease is None:
                break
            first = first or lease
            if lease.split_off is not None:
                log.info("Split chunk %s of run %s off chunk %s (keys %s-%s)", lease.chunk.chunk,
                         task.run_id, lease.split_off.chunk, lease.chunk.lo, lease.chunk.hi - 1)
            elif lease.chunk.chunk != task.chunk:
                log.info("Pulled chunk %s of run %s", lease.chunk.chunk, task.run_id)
            outcome = _one_chunk(task, lease, stop, deadline)
            made.append(outcome)
            if outcome.interrupted or deadline.too_late():
                break
            lease = None
    if first is not None:
        state = made[-1].state if made else ChunkState.DONE
        _safe(lambda: _keep_usage(first, ChunkState(state), time.monotonic() - clock))
    if not stop.requested and task.slurm:
        _safe(lambda: _cancel_surplus(ledger, task.run_id, attempt))
    return _summary(made)


def _one_chunk(task: ChunkTask, lease: Lease, stop: StopSignal, deadline: Deadline) -> Outcome:
    try:
        with Heartbeat(task.ledger_schema, lease.run.run_id, lease.chunk.chunk):
            return _populate_chunk(task, lease, stop, deadline)
    except BaseException as error:
        # Anything that escapes (an import error, a lost ledger) fails the chunk
        # with its reason on record rather than leaving it "running".
        failure: Error = ({}, f"{type(error).__name__}: {error}", traceback.format_exc())
        _safe(lambda: lease.add_errors([failure]))
        _safe(lambda: lease.report(n_done=0, n_error=0, state=ChunkState.FAILED))
        raise


def _summary(made: list[Outcome]) -> dict[str, Any]:
    if not made:
        return Outcome(claimed=False, state="skipped").to_json()
    summary = made[-1].to_json()
    summary.update(done=sum(o.done for o in made), errors=sum(o.errors for o in made),
                   chunks=len(made))
    return summary


def _cancel_surplus(ledger: Ledger, run_id: int, attempt: int) -> None:
    """No chunk of the attempt waits for a task any more: the run's array tasks that
    have not started are not needed, and are cancelled with one scancel per array."""
    if ledger.queued_chunks(run_id, attempt, limit=1):
        return
    arrays = ledger.run(run_id).settings.get("jobs") or []
    if arrays:
        from djhpc.executors import slurm_tools

        slurm_tools.cancel_pending(arrays)


class Heartbeat:
    """Moves the chunk's heartbeat while its task runs, even inside an hours-long make().

    On a connection of its own, opened at the first beat (short chunks never
    open it), so it neither waits for make() nor touches its transaction.
    """

    def __init__(self, ledger_schema: str, run_id: int, chunk: int,
                 every: float = HEARTBEAT_SECONDS) -> None:
        self.ledger_schema, self.run_id, self.chunk, self.every = (
            ledger_schema, run_id, chunk, every)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="djhpc-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        ledger: Ledger | None = None
        while not self._stop.wait(self.every):
            try:
                ledger = ledger or Ledger(dj.separate_connection(), self.ledger_schema)
                ledger.beat(self.run_id, self.chunk)
            except Exception as error:  # the next beat opens a new connection
                log.warning("Heartbeat not recorded: %s", error)
                ledger = None
        if ledger is not None:
            _safe(ledger.conn.close)


def _keep_usage(lease: Lease, state: ChunkState, elapsed_s: float) -> None:
    """This process's peak memory and CPU time, for sizing the table's next runs.

    Slurm's accounting (kept by whoever reads it) also covers a task killed
    before it could say; this covers local runs and clusters without sacct.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # what make() started
    peak_kb = max(own.ru_maxrss, children.ru_maxrss)  # kilobytes on Linux
    cpu_s = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    lease.add_usage(state, elapsed_s=elapsed_s, cpu_s=cpu_s, max_rss_mb=peak_kb / 1024)


def _slurm_task_id(task: ChunkTask) -> str | None:
    if not task.slurm:
        return None
    from djhpc.executors import slurm_tools  # only Slurm tasks need Slurm's side

    return slurm_tools.current_task_id()


def _populate_chunk(task: ChunkTask, lease: Lease, stop: StopSignal,
                    deadline: Deadline) -> Outcome:
    run = lease.run
    cls = Target.from_ref(run.target, run.paths).load()
    table = cls()
    attrs = dj.key_attributes(table)
    if attrs != run.key_attrs:
        raise RuntimeError(
            f"{run.target}'s key_source key is now ({', '.join(attrs)}), but the run recorded "
            f"({', '.join(run.key_attrs)}): the table changed since submission; submit again")
    uuids = dj.uuid_attributes(table)
    keys = [dj.decode_key(row, run.key_attrs, uuids) for row in lease.key_rows()]
    mine = _reserve(lease, table, keys)
    if len(mine) < len(keys):
        note = (f"{len(keys) - len(mine)} keys were reserved by another worker in DataJoint's "
                "jobs table: left to it")
        log.warning(note)
        _safe(lambda: lease.add_errors([({}, note, "")]))
    try:
        return _make_chunk(task, lease, table, keys, mine, stop, deadline)
    finally:
        _safe(lambda: dj.release(table))


def _make_chunk(task: ChunkTask, lease: Lease, table: Any, keys: list[dict[str, Any]],
                mine: set[int], stop: StopSignal, deadline: Deadline) -> Outcome:
    """Make the chunk's keys this task reserved, reporting as it goes; stop on a signal."""
    run = lease.run
    outcome = Outcome()
    pending_errors: list[Error] = []
    pending_times: list[KeyTime] = []
    last_flush = time.monotonic()

    def flush(state: ChunkState | None = None, requeue: bool = False) -> None:
        lease.report(n_done=outcome.done, n_error=outcome.errors, errors=pending_errors,
                     times=pending_times, state=state, requeue=requeue)
        pending_errors.clear()
        pending_times.clear()

    reach = lease.chunk.lo  # keys below it are this task's to start
    # This chunk's keys, timed (another chunk's, a straggler's, may be far slower).
    timed_s, timed_n = 0.0, 0
    for number, key in enumerate(keys, start=lease.chunk.lo):
        if number >= reach:
            reach = _with_reconnect(table, partial(lease.advance,
                                                   number + _window(timed_s / max(1, timed_n))))
            if number >= reach:
                break  # the rest of the chunk was split off to an idle task
        if number - lease.chunk.lo not in mine:
            continue
        if not stop.requested and deadline.too_late():
            stop.requested = TIME_LIMIT  # the key would not end before the limit
        if stop.requested:
            outcome.interrupted = True
            break
        try:
            stop.in_key = True
            started, clock = datetime.now(timezone.utc).replace(tzinfo=None), time.monotonic()
            error = _make(table, key, run.settings.get("make_kwargs") or None)
        except Interrupted:
            _safe(lambda: dj.rollback(table))
            outcome.interrupted = True
            break
        finally:
            stop.in_key = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = time.monotonic() - clock
        pending_times.append(KeyTime(number, started, took, error is None))
        deadline.measured(took)
        timed_s, timed_n = timed_s + took, timed_n + 1
        if error is None:
            outcome.done += 1
        else:
            outcome.errors += 1
            pending_errors.append((key, _message(error), _stack(error)))
        if time.monotonic() - last_flush >= FLUSH_SECONDS:
            _with_reconnect(table, flush)
            last_flush = time.monotonic()
    # Free the keys before any requeue: Slurm may stop this process as it requeues it.
    _safe(lambda: dj.release(table))
    if outcome.interrupted:
        signal_name = stop.requested or "a signal"
        state = _hand_back(task, lease, outcome, signal_name)
        _with_reconnect(table, lambda: flush(state, requeue=state == ChunkState.QUEUED))
        outcome.state = state
        what = _after_hand_back(lease, outcome)
        # Of the keys still the chunk's (a split may have taken some of them away).
        left = sum(1 for n in mine if lease.chunk.lo + n < lease.chunk.hi) - outcome.done \
            - outcome.errors
        message = f"Interrupted by {signal_name} after {outcome.done} keys: {left} keys {what}"
        log.warning(message)
        _safe(lambda: lease.add_errors([({}, message, "")]))
    else:
        state = ChunkState.FAILED if outcome.errors else ChunkState.DONE
        _with_reconnect(table, lambda: flush(state))
        outcome.state = state
    return outcome


def _window(key_s: float) -> int:
    """Keys a task takes at a time: what it makes in a progress report's interval at the
    chunk's mean key time so far (one before it has timed one of the chunk's keys),
    so that the rest of its chunk stays free to split off."""
    if key_s <= 0:
        return 1
    return max(1, min(WINDOW_MAX_KEYS, int(FLUSH_SECONDS / key_s)))


def _reserve(lease: Lease, table: Any, keys: list[dict[str, Any]]) -> set[int]:
    """Positions of the chunk's keys this task may make: those it reserved in DataJoint's
    jobs table. Where that table cannot be used (no right to create it), all of them.
    Keys split off another task's chunk are first handed over from that task."""
    try:
        if lease.split_off is not None and lease.split_off.host and lease.split_off.pid:
            dj.hand_over(table, keys, lease.split_off.host, lease.split_off.pid)
        plan = dj.reservation(table, lease.run.key_attrs)
        if plan is not None:  # on the server, in one statement
            taken = lease.reserve(plan)
            return {n for n in range(len(keys)) if lease.chunk.lo + n not in taken}
        reserved = dj.reserve(table, keys)
    except Exception as error:
        log.warning("Keys not reserved in DataJoint's jobs table (%s): other workers are not "
                    "told about this chunk", dj.server_message(error))
        return set(range(len(keys)))
    ids = {id(k) for k in reserved}
    return {n for n, k in enumerate(keys) if id(k) in ids}


def _hand_back(task: ChunkTask, lease: Lease, outcome: Outcome, signal_name: str) -> ChunkState:
    """Decide what becomes of a stopped chunk's remaining keys.

    Under Slurm, within the requeue budget, the chunk is queued again: after
    the time-limit warning (USR2) this task asks Slurm to requeue it; after SIGTERM (cancel, preemption) Slurm requeues a preempted
    task itself, and a running task may pull the chunk. Otherwise the keys wait
    for the run's follow-up job to continue them (or for `djhpc retry`). A
    cancelled run is never requeued.
    """
    outcome.cancelled = _safe(lease.run_cancelled, default=True)
    # Stopped before a key that would not fit: the follow-up job continues the keys
    # at once in a new attempt, sooner than Slurm starts a requeued task (~2 minutes).
    again = (bool(lease.job_id) and not outcome.cancelled and signal_name != TIME_LIMIT
             and lease.chunk.requeues < task.max_requeues)
    outcome.requeue = again and signal_name == "SIGUSR2"
    return ChunkState.QUEUED if again else ChunkState.INTERRUPTED


def _after_hand_back(lease: Lease, outcome: Outcome) -> str:
    """Requeue this task if that was decided; say what became of the keys, as it happened."""
    if outcome.state == ChunkState.INTERRUPTED:
        return ("cancelled" if outcome.cancelled else
                "handed back for the run's follow-up job (Slurm) or `djhpc retry`")
    if not outcome.requeue:  # SIGTERM: only Slurm knows whether it will run the task again
        return ("handed back: Slurm requeues a preempted task; another task or the run's "
                "follow-up goes on with a cancelled one's")
    if _requeue_self():
        return "requeued: Slurm runs this task again"
    # Slurm would not take the task back: leave the keys to `djhpc retry`.
    _safe(lambda: lease.release(ChunkState.INTERRUPTED, only_from=(ChunkState.QUEUED,)))
    outcome.state = ChunkState.INTERRUPTED
    return "left for `djhpc retry` (Slurm refused the requeue)"


def _make(table: Any, key: dict[str, Any],
          make_kwargs: dict[str, Any] | None = None) -> BaseException | None:
    """Make one key; retry transient database errors with backoff."""
    for attempt in range(TRANSIENT_RETRIES + 1):
        try:
            _made, error = dj.populate_one(table, key, make_kwargs)
        except SystemExit as exit_error:  # DataJoint re-raises SystemExit; keep going
            error = exit_error
        if error is None or not dj.is_transient(error) or attempt == TRANSIENT_RETRIES:
            return error
        delay = 0.5 * 2**attempt
        log.warning("Transient database error on %s (%s); retrying in %.1f s", key, error, delay)
        time.sleep(delay)
        dj.reconnect(table.connection)
    return None


def _with_reconnect(table: Any, action: Any) -> Any:
    """`action()`; once more on a new connection if the server dropped this one."""
    try:
        return action()
    except Exception as error:
        if not dj.is_transient(error):
            raise
        dj.reconnect(table.connection)
        return action()


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
    from djhpc.executors import slurm_tools

    try:
        return slurm_tools.requeue_current_task()
    except slurm_tools.SlurmError as error:
        log.error("Requeue failed (%s); `djhpc retry` will pick the chunk up", error)
        return False
