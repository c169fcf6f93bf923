"""djhpc's own bookkeeping, in a schema the user may write (`user_<dbuser>_djhpc`).

Tables:
- `run`: one row per submission (target, settings, key count, attempts);
- `chunk`: one row per chunk and attempt: its range of key numbers, its state,
  and who works on it (Slurm job, host, pid, database connection);
- `error`: every failed key with its message and traceback; never deleted, so
  the history survives `retry`;
- `key_time`: when each key's make() started and how long it took, and whether
  it raised (written by the tasks with their progress, read by `djhpc report`);
- `task_usage`: each task's peak memory, CPU time and elapsed time, as Slurm
  accounted it or the task measured itself (the sizing history);
- `keys_<hash>`: one per target table, the run's keys with the target's own
  column types (copied by the server, so every value round-trips exactly),
  numbered per run in primary-key order, each flagged *held* while its chunk
  may still be made (queued or running) so that planning leaves it out.

Keys are computed and recorded by one `INSERT ... SELECT` on the server: they
never travel through Python when a run is planned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from djhpc import dj
from djhpc.errors import UsageError
from djhpc.plan import Chunk
from djhpc.sizing import History, TaskUsage
from djhpc.states import ACTIVE_CHUNK_STATES, ChunkState, RunPhase

log = logging.getLogger(__name__)

KEY_RUN, KEY_SEQ, KEY_HELD = "djhpc_run", "djhpc_seq", "djhpc_held"

def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def default_schema(db_user: str) -> str:
    return f"user_{re.sub(r'[^a-z0-9_]', '_', db_user.lower())}_djhpc"


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    run_id: int
    target: str  # module:Class
    paths: list[str]
    workdir: str
    table_name: str
    keys_table: str
    key_attrs: list[str]
    executor: str
    n_keys: int
    attempts: int
    state: RunPhase
    created: datetime
    finished: datetime | None
    settings: dict[str, Any]
    run_dir: str
    db_user: str
    host: str

    @property
    def cancelled(self) -> bool:
        return self.state == RunPhase.CANCELLED


@dataclass(frozen=True, kw_only=True)
class ChunkRecord:
    run_id: int
    chunk: int
    attempt: int
    lo: int
    hi: int
    state: ChunkState
    job_id: str | None = None
    host: str | None = None
    pid: int | None = None
    connection_id: int | None = None
    started: datetime | None = None
    finished: datetime | None = None
    heartbeat: datetime | None = None
    n_done: int = 0
    n_error: int = 0
    requeues: int = 0
    # Keys below `started_to` are its task's to make (it moves it on before it starts
    # them); the keys above may be split off to an idle task. None: none started yet.
    started_to: int | None = None
    split_from: int | None = None  # the chunk this one's keys were split off from

    @property
    def keys(self) -> int:
        return self.hi - self.lo


@dataclass
class KeyTime:
    """One make() of one key, as a task measured it."""

    seq: int  # the key's number in the run's keys table
    started: datetime
    seconds: float
    ok: bool
    run_id: int = 0
    attempt: int = 0
    chunk: int = 0


RUN_COLUMNS = ("run_id", "target", "paths", "workdir", "table_name", "keys_table", "key_attrs",
               "executor", "n_keys", "attempts", "state", "created", "finished", "settings",
               "run_dir", "db_user", "host")
CHUNK_COLUMNS = ("run_id", "chunk", "attempt", "lo", "hi", "state", "job_id", "host", "pid",
                 "connection_id", "started", "finished", "heartbeat", "n_done", "n_error",
                 "requeues", "started_to", "split_from")
# Chunk columns added after the first release, with their types: `upgrade` adds them.
LATER_CHUNK_COLUMNS = {"started_to": "BIGINT NULL", "split_from": "INT NULL"}
MIN_SPLIT_KEYS = 2  # unstarted keys a running chunk must have for an idle task to split it


class Ledger:
    def __init__(self, conn: Any, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.d = dj.dialect(conn)
        self._key_time_ready: bool | None = None
        self._flagged: set[str] = set()  # keys tables known to have the held flag
        self._usage_kept: set[tuple[int, int, str, str]] = set()  # task_usage rows written
        self._usage_ready: bool | None = None

    # --- plumbing ------------------------------------------------------------

    def t(self, name: str) -> str:
        return self.d.table(self.schema, name)

    def sql(self, statement: str, args: Sequence[Any] = ()) -> Any:
        return dj.query(self.conn, statement, args)

    def has_table(self, name: str) -> bool:
        found = self.sql("SELECT 1 FROM information_schema.tables WHERE table_schema=%s "
                         "AND table_name=%s", (self.schema, name)).fetchone()
        return found is not None

    def exists(self) -> bool:
        return self.has_table("run")

    def create(self) -> None:
        """Create the schema and tables if missing; say which names are allowed if we may not.

        Under a lock and checked again inside it: several first submits at once
        must not race each other's DDL.
        """
        if all(self.has_table(t) for t in ("run", "key_time", "task_usage")):
            self.upgrade()
            return
        with self._lock(f"djhpc-ledger:{self.schema}", f"creating the ledger {self.schema}"):
            if not self.exists():
                self._create()
            # Also in a ledger made before per-key timings and the sizing history.
            self.ensure_key_time()
            self.ensure_task_usage()
        self.upgrade()

    def upgrade(self) -> None:
        """Add the chunk columns a ledger made by an earlier djhpc lacks."""
        rows = self.sql("SELECT column_name FROM information_schema.columns WHERE "
                        "table_schema=%s AND table_name='chunk'", (self.schema,)).fetchall()
        missing = set(LATER_CHUNK_COLUMNS) - {str(r[0]).lower() for r in rows}
        if not missing:
            return
        with self._lock(f"djhpc-ledger:{self.schema}", f"upgrading the ledger {self.schema}"):
            for name, kind in LATER_CHUNK_COLUMNS.items():
                if name in missing:
                    try:
                        self.sql(f"ALTER TABLE {self.t('chunk')} ADD COLUMN {name} {kind}")
                    except Exception as error:  # added meanwhile by another djhpc
                        if not self._has_column("chunk", name):
                            raise self._permission_error(error) from None

    def _has_column(self, table: str, column: str) -> bool:
        return self.sql("SELECT 1 FROM information_schema.columns WHERE table_schema=%s AND "
                        "table_name=%s AND column_name=%s",
                        (self.schema, table, column)).fetchone() is not None

    def _create(self) -> None:
        d = self.d
        ts, text = d.timestamp, d.long_text
        statements = [
            d.create_schema(self.schema),
            f"""CREATE TABLE IF NOT EXISTS {self.t('run')} (
                run_id {d.serial_pk}, target VARCHAR(255) NOT NULL, paths TEXT NOT NULL,
                workdir VARCHAR(1024) NOT NULL, table_name VARCHAR(255) NOT NULL,
                keys_table VARCHAR(64) NOT NULL, key_attrs TEXT NOT NULL,
                executor VARCHAR(16) NOT NULL, n_keys BIGINT NOT NULL DEFAULT 0,
                attempts INT NOT NULL DEFAULT 1, state VARCHAR(16) NOT NULL,
                created {ts} NOT NULL, finished {ts} NULL, settings TEXT NOT NULL,
                run_dir VARCHAR(1024) NOT NULL, db_user VARCHAR(255) NOT NULL,
                host VARCHAR(255) NOT NULL){d.table_options}""",
            f"""CREATE TABLE IF NOT EXISTS {self.t('chunk')} (
                run_id BIGINT NOT NULL, chunk INT NOT NULL, attempt INT NOT NULL,
                lo BIGINT NOT NULL, hi BIGINT NOT NULL, state VARCHAR(16) NOT NULL,
                job_id VARCHAR(64) NULL, host VARCHAR(255) NULL, pid INT NULL,
                connection_id BIGINT NULL, started {ts} NULL, finished {ts} NULL,
                heartbeat {ts} NULL, n_done INT NOT NULL DEFAULT 0,
                n_error INT NOT NULL DEFAULT 0, requeues INT NOT NULL DEFAULT 0,
                started_to BIGINT NULL, split_from INT NULL,
                PRIMARY KEY (run_id, chunk)){d.table_options}""",
            f"""CREATE TABLE IF NOT EXISTS {self.t('error')} (
                error_id {d.serial_pk}, run_id BIGINT NOT NULL, attempt INT NOT NULL,
                chunk INT NOT NULL, key_text TEXT NOT NULL, message VARCHAR(2047) NOT NULL,
                stack {text} NOT NULL, job_id VARCHAR(64) NULL, host VARCHAR(255) NULL,
                created {ts} NOT NULL){d.table_options}""",
            f"CREATE INDEX error_run ON {self.t('error')} (run_id, chunk)",
        ]
        try:
            for statement in statements:
                self.sql(statement)
        except Exception as error:
            raise self._permission_error(error) from None

    def _permission_error(self, error: BaseException) -> UsageError:
        message = dj.server_message(error)
        if "denied" not in message.lower() and "permission" not in message.lower():
            return UsageError(f"Cannot create djhpc's ledger schema {self.schema!r}: {message}",
                              "Check the database server's log")
        allowed = self.allowed_schemas()
        hint = (f"Set ledger_schema: to a name you may create ({', '.join(allowed)})"
                if allowed else "Set ledger_schema: (or DJHPC_LEDGER_SCHEMA) to a schema you may create")
        return UsageError(f"No permission to create djhpc's ledger schema {self.schema!r}", hint)

    def allowed_schemas(self) -> list[str]:
        """Schema name patterns this user holds CREATE on (MySQL grants)."""
        if self.d.postgres:
            return []
        try:
            rows = self.sql("SHOW GRANTS").fetchall()
        except Exception:
            return []
        patterns = []
        for (grant,) in rows:
            match = re.search(r"ON [`'\"]?([^`'\". ]+)[`'\"]?\.\*", grant)
            if match and ("ALL PRIVILEGES" in grant or "CREATE" in grant):
                patterns.append(match.group(1).replace("\\_", "_").replace("%", "*"))
        return patterns

    # --- keys tables ---------------------------------------------------------

    def keys_table_name(self, table_name: str, key_attrs: Sequence[str]) -> str:
        digest = hashlib.md5(f"{table_name}|{','.join(key_attrs)}".encode()).hexdigest()[:16]
        return f"keys_{digest}"

    def ensure_keys_table(self, name: str, pending_sql: str, key_attrs: Sequence[str]) -> None:
        """A table with the key columns as the server types them, plus run, number and held.

        Called under the planning lock; also brings a keys table of an older
        djhpc up to date (its `held` flags computed once from the chunks).
        """
        d = self.d
        if self.has_table(name):
            if not self._has_held_flag(name):
                self.sql(f"ALTER TABLE {self.t(name)} ADD COLUMN {KEY_HELD} SMALLINT NOT NULL "
                         "DEFAULT 1")
                self.sql(f"UPDATE {self.t(name)} SET {KEY_HELD} = 0 WHERE NOT EXISTS ("
                         f"{self._held_by_chunks(name)})")
            return
        cols = ", ".join(d.q(a) for a in key_attrs)
        self.sql(f"CREATE TABLE {self.t(name)} AS SELECT {cols} FROM ({pending_sql}) AS q WHERE 1=0")
        self.sql(f"ALTER TABLE {self.t(name)} ADD COLUMN {KEY_RUN} BIGINT NOT NULL DEFAULT 0, "
                 f"ADD COLUMN {KEY_SEQ} BIGINT NOT NULL DEFAULT 0, "
                 f"ADD COLUMN {KEY_HELD} SMALLINT NOT NULL DEFAULT 1")
        self.sql(f"ALTER TABLE {self.t(name)} ADD PRIMARY KEY ({KEY_RUN}, {KEY_SEQ})")
        self.sql(f"CREATE INDEX {d.q(name + '_key')} ON {self.t(name)} ({cols}, {KEY_HELD})")

    def _has_held_flag(self, keys_table: str) -> bool:
        # Asked at every chunk's end: a table once seen with the flag keeps it.
        if keys_table in self._flagged:
            return True
        found = self.sql("SELECT 1 FROM information_schema.columns WHERE table_schema=%s AND "
                         "table_name=%s AND column_name=%s",
                         (self.schema, keys_table, KEY_HELD)).fetchone() is not None
        if found:
            self._flagged.add(keys_table)
        return found

    def _held_by_chunks(self, keys_table: str, alias: str = "") -> str:
        """SQL: a queued or running chunk of a live run covers the keys row `alias`."""
        row = f"{alias}." if alias else f"{self.t(keys_table)}."
        return (f"SELECT 1 FROM {self.t('chunk')} AS hc JOIN {self.t('run')} AS hr "
                f"ON hr.run_id = hc.run_id WHERE hc.run_id = {row}{KEY_RUN} "
                f"AND {row}{KEY_SEQ} >= hc.lo AND {row}{KEY_SEQ} < hc.hi "
                f"AND hc.state IN ({_listed(ACTIVE_CHUNK_STATES)}) "
                f"AND hr.state <> '{RunPhase.CANCELLED}'")

    def held(self, keys_table: str, key_attrs: Sequence[str], outer: str) -> str | None:
        """SQL: the key of row `outer` is held by a queued or running chunk of a live run.

        None when no live run holds keys of this table (the usual case), so
        that planning needs no probe at all then. Otherwise one probe of the
        keys table's (key, held) index per pending key: the flag is kept by
        the chunks' state changes (`release_keys`), so no join to the chunks.
        """
        if not self.has_table(keys_table) or not self.has_active_chunks(keys_table):
            return None
        on = " AND ".join(f"h.{self.d.q(a)} = {outer}.{self.d.q(a)}" for a in key_attrs)
        if not self._has_held_flag(keys_table):  # an older djhpc's table, not upgraded yet
            return (f"EXISTS (SELECT 1 FROM {self.t(keys_table)} AS h WHERE {on} AND EXISTS "
                    f"({self._held_by_chunks(keys_table, 'h')}))")
        return f"EXISTS (SELECT 1 FROM {self.t(keys_table)} AS h WHERE {on} AND h.{KEY_HELD} = 1)"

    def release_keys(self, run: RunRecord, ranges: Iterable[tuple[int, int]]) -> None:
        """The keys of chunks that can no longer be made by their task are no longer held."""
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        if not merged or not self._has_held_flag(run.keys_table):
            return
        within = " OR ".join([f"({KEY_SEQ} >= %s AND {KEY_SEQ} < %s)"] * len(merged))
        self.sql(f"UPDATE {self.t(run.keys_table)} SET {KEY_HELD} = 0 "
                 f"WHERE {KEY_RUN} = %s AND ({within})",
                 (run.run_id, *[v for pair in merged for v in pair]))

    # --- the pending keys -----------------------------------------------------

    def check_pending(self, pending_sql: str) -> None:
        """Let the server parse and plan the pending-keys query; raises its error."""
        self.sql(f"SELECT 1 FROM ({pending_sql}) AS q LIMIT 0")

    def count_pending(self, pending_sql: str, table_name: str, key_attrs: Sequence[str],
                      all_pending_sql: str | None = None) -> tuple[int, int]:
        """(keys a new run would take, keys held by other active runs or other workers)."""
        keys_table = self.keys_table_name(table_name, key_attrs)
        held = self.held(keys_table, key_attrs, "q") if self.exists() else None
        n_held = f"COALESCE(SUM(CASE WHEN {held} THEN 1 ELSE 0 END), 0)" if held else "0"
        total, n = self.sql(f"SELECT COUNT(*), {n_held} FROM ({pending_sql}) AS q").fetchone()
        reserved = self._reserved_elsewhere(pending_sql, all_pending_sql, int(total))
        return int(total) - int(n), int(n) + reserved

    def _reserved_elsewhere(self, pending_sql: str, all_pending_sql: str | None,
                            n_pending: int) -> int:
        """Pending keys left out because another worker reserved them in DataJoint's jobs
        table (counted only while some are: the queries then differ)."""
        if not all_pending_sql or all_pending_sql == pending_sql:
            return 0
        (every,) = self.sql(f"SELECT COUNT(*) FROM ({all_pending_sql}) AS q").fetchone()
        return max(0, int(every) - n_pending)

    # --- runs ----------------------------------------------------------------

    def record_run(self, *, target: str, paths: Sequence[str], workdir: str, table_name: str,
                   key_attrs: Sequence[str], executor: str, settings: dict[str, Any],
                   run_dir: str, db_user: str, pending_sql: str,
                   plan: Any, all_pending_sql: str | None = None) -> tuple[RunRecord | None, int]:
        """Record a run with its pending keys and chunks, in one transaction.

        `plan(n_keys) -> list[Chunk]`. Keys held by another active run are left
        out; the second number returned says how many. With no keys left,
        nothing is recorded and the run is None.
        """
        d = self.d
        keys_table = self.keys_table_name(table_name, key_attrs)
        cols = ", ".join(d.q(a) for a in key_attrs)
        qcols = ", ".join(f"q.{d.q(a)}" for a in key_attrs)
        conn = self.conn
        # The lock before the transaction: its snapshot must see what a
        # submit that held the lock before us committed.
        with self._planning_lock(table_name):
            # DDL under the lock (no two submits create the table at once) and
            # before the transaction (MySQL's DDL would commit it).
            self.ensure_keys_table(keys_table, pending_sql, key_attrs)
            held, n_held = "", 0
            held_sql = self.held(keys_table, key_attrs, "q")
            if held_sql:
                n_held = int(self.sql(f"SELECT COUNT(*) FROM ({pending_sql}) AS q "
                                      f"WHERE {held_sql}").fetchone()[0])
                held = f" WHERE NOT {held_sql}"
            if all_pending_sql and all_pending_sql != pending_sql:
                (n_pending,) = self.sql(f"SELECT COUNT(*) FROM ({pending_sql}) AS q").fetchone()
                n_held += self._reserved_elsewhere(pending_sql, all_pending_sql, int(n_pending))
            conn.start_transaction()
            try:
                row = (target, json.dumps(list(paths)), workdir, table_name, keys_table,
                       json.dumps(list(key_attrs)), executor, RunPhase.RECORDING, now(),
                       json.dumps(settings, default=str), run_dir, db_user, socket.gethostname())
                run_id = self._insert_run(row)
                inserted = self.sql(
                    f"INSERT INTO {self.t(keys_table)} ({KEY_RUN}, {KEY_SEQ}, {cols}) "
                    f"SELECT %s, ROW_NUMBER() OVER (ORDER BY {qcols}) - 1, {qcols} "
                    f"FROM ({pending_sql}) AS q{held}", (run_id,)).rowcount
                if inserted <= 0:
                    conn.cancel_transaction()
                    return None, n_held
                self.add_chunks(run_id, 1, plan(inserted))
                self.sql(f"UPDATE {self.t('run')} SET n_keys=%s, state=%s WHERE run_id=%s",
                         (inserted, RunPhase.SUBMITTING, run_id))
                conn.commit_transaction()
            except BaseException:
                if conn.in_transaction:
                    conn.cancel_transaction()
                raise
        return self.run(run_id), n_held

    def has_active_chunks(self, keys_table: str) -> bool:
        """Whether any queued or running chunk of a live run has keys in this table."""
        states = _listed(ACTIVE_CHUNK_STATES)
        return self.sql(
            f"SELECT 1 FROM {self.t('chunk')} AS c JOIN {self.t('run')} AS r "
            f"ON r.run_id = c.run_id WHERE r.keys_table = %s AND r.state <> '{RunPhase.CANCELLED}' "
            f"AND c.state IN ({states}) LIMIT 1", (keys_table,)).fetchone() is not None

    def _insert_run(self, row: Sequence[Any]) -> int:
        cols = ("target", "paths", "workdir", "table_name", "keys_table", "key_attrs",
                "executor", "state", "created", "settings", "run_dir", "db_user", "host")
        marks = ", ".join(["%s"] * len(cols))
        statement = f"INSERT INTO {self.t('run')} ({', '.join(cols)}) VALUES ({marks})"
        if self.d.postgres:
            return int(self.sql(statement + " RETURNING run_id", row).fetchone()[0])
        return int(self.sql(statement, row).lastrowid)

    def _planning_lock(self, table_name: str) -> AbstractContextManager[None]:
        """Serialise planning per target, so two submits never plan the same key."""
        return self._lock(f"djhpc:{table_name}", f"planning {table_name}")

    @contextmanager
    def _lock(self, name: str, doing: str) -> Iterator[None]:
        """A server-wide named lock (the session's, so it outlives transactions)."""
        name = name[:64]  # MySQL's limit for lock names
        if self.d.postgres:
            self.sql("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        elif self.sql("SELECT GET_LOCK(%s, 300)", (name,)).fetchone()[0] != 1:
            raise UsageError(f"Another djhpc has been {doing} for 5 minutes",
                             "Wait for it to finish, then try again")
        try:
            yield
        finally:
            unlock = "SELECT pg_advisory_unlock(hashtext(%s))" if self.d.postgres else (
                "SELECT RELEASE_LOCK(%s)")
            self.sql(unlock, (name,))

    def add_chunks(self, run_id: int, attempt: int, chunks: Iterable[Chunk]) -> None:
        rows = [(run_id, c.chunk, attempt, c.lo, c.hi, ChunkState.QUEUED) for c in chunks]
        if not rows:
            return
        marks = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
        flat = [v for row in rows for v in row]
        self.sql(f"INSERT INTO {self.t('chunk')} (run_id, chunk, attempt, lo, hi, state) "
                 f"VALUES {marks}", flat)

    def repend(self, run: RunRecord, attempt: int, plan: Any,
               ranges: Sequence[tuple[int, int]] | None = None) -> list[ChunkRecord]:
        """A new attempt for the run's keys that are not in the target table yet.

        The keys not yet made (of the whole run, or only those numbered within
        `ranges`) are copied under new numbers and split into new chunks;
        earlier attempts and their errors stay as they were, for the history.
        """
        d = self.d
        cols = ", ".join(d.q(a) for a in run.key_attrs)
        kcols = ", ".join(f"k.{d.q(a)}" for a in run.key_attrs)
        on = " AND ".join(f"t.{d.q(a)} = k.{d.q(a)}" for a in run.key_attrs)
        # The first attempt's numbers 0..n-1 hold every key of the run.
        within = (f"k.{KEY_SEQ} < {int(run.n_keys)}" if ranges is None else
                  "(" + " OR ".join(f"(k.{KEY_SEQ} >= {int(lo)} AND k.{KEY_SEQ} < {int(hi)})"
                                    for lo, hi in ranges) + ")")
        if ranges is not None and not ranges:
            return []
        with self._planning_lock(run.table_name):
            held_sql = self.held(run.keys_table, run.key_attrs, "k")
            held = f" AND NOT {held_sql}" if held_sql else ""
            return self._repend(run, attempt, plan, cols, kcols, on, f"{within}{held}")

    def _repend(self, run: RunRecord, attempt: int, plan: Any, cols: str, kcols: str, on: str,
                where: str) -> list[ChunkRecord]:
        conn = self.conn
        conn.start_transaction()
        try:
            base, first_chunk = self.sql(
                f"SELECT COALESCE(MAX(hi), 0), COALESCE(MAX(chunk), -1) + 1 "
                f"FROM {self.t('chunk')} WHERE run_id=%s", (run.run_id,)).fetchone()
            n = self.sql(
                f"INSERT INTO {self.t(run.keys_table)} ({KEY_RUN}, {KEY_SEQ}, {cols}) "
                f"SELECT %s, %s + ROW_NUMBER() OVER (ORDER BY {kcols}) - 1, {kcols} "
                f"FROM {self.t(run.keys_table)} AS k WHERE k.{KEY_RUN}=%s AND {where} "
                f"AND NOT EXISTS (SELECT 1 FROM {run.table_name} AS t WHERE {on})",
                (run.run_id, int(base), run.run_id)).rowcount
            if n <= 0:
                conn.cancel_transaction()
                return []
            chunks = [Chunk(chunk=c.chunk + int(first_chunk), lo=c.lo + int(base),
                            hi=c.hi + int(base))
                      for c in plan(n)]
            self.add_chunks(run.run_id, attempt, chunks)
            self.sql(f"UPDATE {self.t('run')} SET attempts=%s, state=%s, finished=NULL "
                     "WHERE run_id=%s", (attempt, RunPhase.SUBMITTING, run.run_id))
            conn.commit_transaction()
        except BaseException:
            if conn.in_transaction:
                conn.cancel_transaction()
            raise
        return self.chunks(run.run_id, attempt)

    def undo_repend(self, run: RunRecord, attempt: int) -> None:
        """Forget an attempt that could not be submitted."""
        chunks = self.chunks(run.run_id, attempt)
        if chunks:
            self.sql(f"DELETE FROM {self.t(run.keys_table)} WHERE {KEY_RUN}=%s AND {KEY_SEQ} >= %s",
                     (run.run_id, min(c.lo for c in chunks)))
        self.sql(f"DELETE FROM {self.t('chunk')} WHERE run_id=%s AND attempt=%s",
                 (run.run_id, attempt))
        self.sql(f"UPDATE {self.t('run')} SET attempts=%s, state=%s WHERE run_id=%s",
                 (attempt - 1, RunPhase.ACTIVE, run.run_id))

    def delete_run(self, run_id: int) -> None:
        """Remove every trace of a run that could not be submitted."""
        run = self.run(run_id)
        for table in ("error", "chunk"):
            self.sql(f"DELETE FROM {self.t(table)} WHERE run_id=%s", (run_id,))
        self.sql(f"DELETE FROM {self.t(run.keys_table)} WHERE {KEY_RUN}=%s", (run_id,))
        self.sql(f"DELETE FROM {self.t('run')} WHERE run_id=%s", (run_id,))

    def run(self, run_id: int) -> RunRecord:
        row = self.sql(f"SELECT {', '.join(RUN_COLUMNS)} FROM {self.t('run')} WHERE run_id=%s",
                       (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"No run {run_id} in ledger {self.schema}",
                             "See `djhpc status --all` for your runs")
        return _run_record(row)

    def active_run_ids(self) -> list[int]:
        """Runs with a queued or running chunk, however old."""
        rows = self.sql(f"SELECT DISTINCT c.run_id FROM {self.t('chunk')} AS c JOIN "
                        f"{self.t('run')} AS r ON r.run_id = c.run_id WHERE c.state IN "
                        f"({_listed(ACTIVE_CHUNK_STATES)}) AND r.state IN "
                        f"({_listed((RunPhase.SUBMITTING, RunPhase.ACTIVE))})"
                        ).fetchall()
        return [int(r[0]) for r in rows]

    def runs(self, *, table_name: str | None = None, since: datetime | None = None,
             limit: int | None = None) -> list[RunRecord]:
        where: list[str] = [f"state <> '{RunPhase.RECORDING}'"]
        args: list[Any] = []
        if table_name:
            where.append("table_name = %s")
            args.append(table_name)
        if since:
            where.append("created >= %s")
            args.append(since)
        statement = (f"SELECT {', '.join(RUN_COLUMNS)} FROM {self.t('run')} "
                     f"WHERE {' AND '.join(where)} ORDER BY run_id DESC")
        if limit:
            statement += f" LIMIT {int(limit)}"
        return [_run_record(r) for r in self.sql(statement, args).fetchall()]

    def set_run(self, run_id: int, **values: Any) -> None:
        if "settings" in values:
            values["settings"] = json.dumps(values["settings"], default=str)
        sets = ", ".join(f"{k}=%s" for k in values)
        self.sql(f"UPDATE {self.t('run')} SET {sets} WHERE run_id=%s", (*values.values(), run_id))

    # --- chunks --------------------------------------------------------------

    def chunks(self, run_id: int, attempt: int | None = None) -> list[ChunkRecord]:
        statement = f"SELECT {', '.join(CHUNK_COLUMNS)} FROM {self.t('chunk')} WHERE run_id=%s"
        args: list[Any] = [run_id]
        if attempt is not None:
            statement += " AND attempt=%s"
            args.append(attempt)
        rows = self.sql(statement + " ORDER BY chunk", args).fetchall()
        return [_chunk_record(row) for row in rows]

    def chunk(self, run_id: int, chunk: int) -> ChunkRecord:
        row = self.sql(f"SELECT {', '.join(CHUNK_COLUMNS)} FROM {self.t('chunk')} "
                       "WHERE run_id=%s AND chunk=%s", (run_id, chunk)).fetchone()
        if row is None:
            raise UsageError(f"Run {run_id} has no chunk {chunk}",
                             f"See `djhpc status {run_id}` for its chunks")
        return _chunk_record(row)

    def set_jobs(self, run_id: int, jobs: dict[int, str]) -> None:
        for chunk, job_id in jobs.items():
            self.sql(f"UPDATE {self.t('chunk')} SET job_id=%s WHERE run_id=%s AND chunk=%s",
                     (job_id, run_id, chunk))

    def connection_id(self) -> int:
        """This session's id, as the server's process list shows it."""
        return int(self.sql(f"SELECT {self.d.connection_id}").fetchone()[0])

    def claim(self, run_id: int, chunk: int, *, job_id: str | None, host: str, pid: int,
              connection_id: int) -> bool:
        """Take a queued chunk for this task: one atomic UPDATE, so one task wins."""
        stamp = now()
        cursor = self.sql(
            f"UPDATE {self.t('chunk')} SET state=%s, job_id=COALESCE(%s, job_id), host=%s, "
            "pid=%s, connection_id=%s, started=COALESCE(started, %s), heartbeat=%s, finished=NULL, "
            "started_to=NULL WHERE run_id=%s AND chunk=%s AND state=%s",
            (ChunkState.RUNNING, job_id, host, pid, connection_id, stamp, stamp, run_id, chunk,
             ChunkState.QUEUED))
        return bool(cursor.rowcount == 1)

    def advance(self, run_id: int, chunk: int, upto: int) -> tuple[int, int]:
        """Let the chunk's task start its keys below `upto` (no further than the chunk's
        end, which a split may have moved); (how far it may go, the chunk's end)."""
        self.sql(f"UPDATE {self.t('chunk')} SET started_to = LEAST(hi, GREATEST("
                 "COALESCE(started_to, lo), %s)) WHERE run_id=%s AND chunk=%s",
                 (upto, run_id, chunk))
        row = self.sql(f"SELECT started_to, hi FROM {self.t('chunk')} WHERE run_id=%s AND "
                       "chunk=%s", (run_id, chunk)).fetchone()
        return int(row[0]), int(row[1])

    def split(self, run_id: int, attempt: int, *, job_id: str | None, host: str, pid: int,
              connection_id: int) -> tuple[ChunkRecord, ChunkRecord] | None:
        """Take the unstarted upper half of the attempt's running chunk with the most
        unstarted keys, as a new chunk running for this task: (the new chunk, the one it
        came from, as it was). None when no chunk has enough keys left to split.

        The chunk's row is locked while its end moves down, and its task only starts
        keys below `started_to` (moved in the same row), so no key is in both halves.
        """
        unstarted = "hi - started_to"
        candidates = self.sql(
            f"SELECT chunk FROM {self.t('chunk')} WHERE run_id=%s AND attempt=%s AND state=%s "
            f"AND started_to IS NOT NULL AND {unstarted} >= %s ORDER BY {unstarted} DESC, chunk "
            "LIMIT 4", (run_id, attempt, ChunkState.RUNNING, MIN_SPLIT_KEYS)).fetchall()
        for (chunk,) in candidates:
            for _ in range(5):  # two splitters may pick the same new chunk number
                try:
                    split = self._split(run_id, int(chunk), job_id=job_id, host=host, pid=pid,
                                        connection_id=connection_id)
                except Exception as error:
                    log.debug("Split of chunk %s not recorded (%s): trying again", chunk,
                              dj.server_message(error))
                    continue
                if split is not None:
                    return split
                break
        return None

    def _split(self, run_id: int, chunk: int, *, job_id: str | None, host: str, pid: int,
               connection_id: int) -> tuple[ChunkRecord, ChunkRecord] | None:
        conn = self.conn
        conn.start_transaction()
        try:
            row = self.sql(f"SELECT {', '.join(CHUNK_COLUMNS)} FROM {self.t('chunk')} "
                           "WHERE run_id=%s AND chunk=%s FOR UPDATE", (run_id, chunk)).fetchone()
            old = _chunk_record(row)
            if (old.state != ChunkState.RUNNING or old.started_to is None
                    or old.hi - old.started_to < MIN_SPLIT_KEYS):
                conn.cancel_transaction()
                return None
            mid = old.hi - (old.hi - old.started_to) // 2
            number = int(self.sql(f"SELECT COALESCE(MAX(chunk), -1) + 1 FROM {self.t('chunk')} "
                                  "WHERE run_id=%s", (run_id,)).fetchone()[0])
            self.sql(f"UPDATE {self.t('chunk')} SET hi=%s WHERE run_id=%s AND chunk=%s",
                     (mid, run_id, chunk))
            stamp = now()
            self.sql(f"INSERT INTO {self.t('chunk')} (run_id, chunk, attempt, lo, hi, state, "
                     "job_id, host, pid, connection_id, started, heartbeat, split_from) VALUES "
                     "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (run_id, number, old.attempt, mid, old.hi, ChunkState.RUNNING, job_id, host,
                      pid, connection_id, stamp, stamp, chunk))
            conn.commit_transaction()
        except BaseException:
            if conn.in_transaction:
                conn.cancel_transaction()
            raise
        return self.chunk(run_id, number), old

    def queued_chunks(self, run_id: int, attempt: int, limit: int) -> list[int]:
        """The first chunks of an attempt that wait for a task, in order."""
        rows = self.sql(f"SELECT chunk FROM {self.t('chunk')} WHERE run_id=%s AND attempt=%s "
                        f"AND state=%s ORDER BY chunk LIMIT {int(limit)}",
                        (run_id, attempt, ChunkState.QUEUED)).fetchall()
        return [int(r[0]) for r in rows]

    def reserve_keys(self, run: RunRecord, chunk: ChunkRecord,
                     plan: dj.Reservation) -> set[int]:
        """Reserve the chunk's keys in DataJoint's jobs table, straight from the keys table.

        Returns the key numbers another worker holds. Rows a `jobs.refresh()`
        left pending are taken, as `populate(reserve_jobs=True)` would.
        """
        d = self.d
        cols = [d.q(a) for a in run.key_attrs]
        names = list(plan.values)
        within = f"k.{KEY_RUN}=%s AND k.{KEY_SEQ} >= %s AND k.{KEY_SEQ} < %s"
        chunk_range = (run.run_id, chunk.lo, chunk.hi)
        insert = (f"{plan.jobs_table} ({', '.join(cols + [d.q(n) for n in names])}, "
                  f"reserved_time) SELECT {', '.join(f'k.{c}' for c in cols)}, "
                  f"{', '.join(['%s'] * len(names))}, CURRENT_TIMESTAMP(3) "
                  f"FROM {self.t(run.keys_table)} AS k WHERE {within}")
        self.sql(f"INSERT INTO {insert} ON CONFLICT DO NOTHING" if d.postgres
                 else f"INSERT IGNORE INTO {insert}", (*plan.values.values(), *chunk_range))
        same = " AND ".join(f"j.{c} = k.{c}" for c in cols)
        if self.sql(f"SELECT 1 FROM {plan.jobs_table} WHERE status='pending' LIMIT 1").fetchone():
            sets = ", ".join(f"{d.q(n)}=%s" for n in names)
            self.sql(f"UPDATE {plan.jobs_table} AS j SET {sets}, reserved_time=CURRENT_TIMESTAMP(3) "
                     f"WHERE j.status='pending' AND EXISTS (SELECT 1 FROM "
                     f"{self.t(run.keys_table)} AS k WHERE {within} AND {same})",
                     (*plan.values.values(), *chunk_range))
        taken = self.sql(
            f"SELECT k.{KEY_SEQ} FROM {self.t(run.keys_table)} AS k WHERE {within} AND NOT "
            f"EXISTS (SELECT 1 FROM {plan.jobs_table} AS j WHERE {same} AND j.status='reserved' "
            f"AND j.host=%s AND j.pid=%s)",
            (*chunk_range, plan.values["host"], plan.values["pid"])).fetchall()
        return {int(seq) for (seq,) in taken}

    def release_reservations(self, run: RunRecord, chunk: ChunkRecord) -> None:
        """Drop what a task that is gone reserved in DataJoint's jobs table for its chunk."""
        if not chunk.host or not chunk.pid:
            return
        statement, args = dj.release_sql(run.table_name, chunk.host, chunk.pid)
        try:
            self.sql(statement, args)
        except Exception as error:  # no jobs table (nothing was reserved), or no right to it
            log.debug("Reservations of chunk %s not released: %s", chunk.chunk, error)

    def beat(self, run_id: int, chunk: int) -> None:
        """A running chunk's task is alive (a hint for people; liveness asks the executor)."""
        self.sql(f"UPDATE {self.t('chunk')} SET heartbeat=%s WHERE run_id=%s AND chunk=%s "
                 "AND state=%s", (now(), run_id, chunk, ChunkState.RUNNING))

    def report(self, run_id: int, chunk: int, *, n_done: int, n_error: int,
               state: ChunkState | None = None, requeue: bool = False) -> None:
        """Progress of a running chunk; with `state`, its end (or hand-back).

        Also refreshes the task's connection id (it changes when the task
        reconnects). A chunk cancelled meanwhile stays cancelled; one wrongly
        thought lost is set right by the task's own word.
        """
        sets = f"n_done=%s, n_error=%s, heartbeat=%s, connection_id={self.d.connection_id}"
        args: list[Any] = [n_done, n_error, now()]
        if state:
            # `finished` first: MySQL's later assignments see the new `state`.
            owned = f"state IN ('{ChunkState.RUNNING}', '{ChunkState.LOST}')"
            sets += (f", finished=CASE WHEN {owned} THEN %s ELSE finished END"
                     f", state=CASE WHEN {owned} THEN %s ELSE state END")
            args += [None if state == ChunkState.QUEUED else now(), state]
        if requeue:
            sets += ", requeues=requeues+1"
        self.sql(f"UPDATE {self.t('chunk')} SET {sets} WHERE run_id=%s AND chunk=%s",
                 (*args, run_id, chunk))

    def set_chunk_states(self, run_id: int, chunks: Iterable[int], state: ChunkState,
                         only_from: Sequence[ChunkState] = ACTIVE_CHUNK_STATES) -> int:
        """Move these chunks to `state` if they are in one of `only_from`; how many moved.

        Chunks that can no longer be made (lost, cancelled, ...) release their keys.
        """
        ids = list(chunks)
        if not ids:
            return 0
        where = (f"WHERE run_id=%s AND chunk IN ({', '.join(['%s'] * len(ids))}) "
                 f"AND state IN ({', '.join(['%s'] * len(only_from))})")
        args = (run_id, *ids, *only_from)
        moving = [] if state.active else self.sql(
            f"SELECT lo, hi FROM {self.t('chunk')} {where}", args).fetchall()
        cursor = self.sql(
            f"UPDATE {self.t('chunk')} SET state=%s, finished=COALESCE(finished, %s) {where}",
            (state, now(), *args))
        if moving:
            self.release_keys(self.run(run_id), [(int(lo), int(hi)) for lo, hi in moving])
        return int(cursor.rowcount)

    def chunk_keys(self, run: RunRecord, chunk: ChunkRecord) -> list[tuple[Any, ...]]:
        cols = ", ".join(self.d.q(a) for a in run.key_attrs)
        return list(self.sql(
            f"SELECT {cols} FROM {self.t(run.keys_table)} WHERE {KEY_RUN}=%s "
            f"AND {KEY_SEQ} >= %s AND {KEY_SEQ} < %s ORDER BY {KEY_SEQ}",
            (run.run_id, chunk.lo, chunk.hi)).fetchall())

    # --- errors --------------------------------------------------------------

    def add_errors(self, run_id: int, attempt: int, chunk: int,
                   errors: Sequence[tuple[dict[str, Any], str, str]],
                   job_id: str | None, host: str) -> None:
        if not errors:
            return
        stamp = now()
        rows = [(run_id, attempt, chunk, json.dumps(key, default=str, sort_keys=True),
                 message[:2047], stack[-60000:], job_id, host, stamp)
                for key, message, stack in errors]
        marks = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        self.sql(f"INSERT INTO {self.t('error')} (run_id, attempt, chunk, key_text, message, "
                 f"stack, job_id, host, created) VALUES {marks}", [v for r in rows for v in r])

    def fail_key(self, run: RunRecord, chunk: ChunkRecord, seq: int, message: str) -> None:
        """A key its task died on (out of memory or time at the cap): the key's error, and
        the chunk failed rather than lost."""
        key = self.keys_at(run, [seq]).get(seq, {})
        self.add_errors(run.run_id, chunk.attempt, chunk.chunk, [(key, message, "")],
                        chunk.job_id, chunk.host or "")
        self.sql(f"UPDATE {self.t('chunk')} SET n_error=n_error+1, state=%s "
                 "WHERE run_id=%s AND chunk=%s AND state=%s",
                 (ChunkState.FAILED, run.run_id, chunk.chunk, ChunkState.LOST))

    def errors(self, run_ids: Sequence[int]) -> list[ErrorRow]:
        """Every recorded error of these runs, oldest first."""
        if not run_ids:
            return []
        marks = ", ".join(["%s"] * len(run_ids))
        rows = self.sql(
            f"SELECT run_id, attempt, chunk, key_text, message, stack FROM {self.t('error')} "
            f"WHERE run_id IN ({marks}) ORDER BY error_id", list(run_ids)).fetchall()
        return [ErrorRow(run_id=int(r[0]), attempt=int(r[1]), chunk=int(r[2]),
                         key=json.loads(r[3]), message=r[4], stack=r[5]) for r in rows]
    # --- per-key timings -------------------------------------------------------

    def ensure_key_time(self) -> None:
        """The `key_time` table, added to ledgers made before it existed."""
        if self.has_table("key_time"):
            return
        d = self.d
        self.sql(f"""CREATE TABLE IF NOT EXISTS {self.t('key_time')} (
            key_time_id {d.serial_pk}, run_id BIGINT NOT NULL, attempt INT NOT NULL,
            chunk INT NOT NULL, seq BIGINT NOT NULL, started {d.timestamp} NOT NULL,
            seconds DOUBLE PRECISION NOT NULL, ok SMALLINT NOT NULL){d.table_options}""")
        self.sql(f"CREATE INDEX key_time_run ON {self.t('key_time')} (run_id, seq)")

    def add_key_times(self, run_id: int, attempt: int, chunk: int,
                      times: Sequence[KeyTime]) -> None:
        """One multi-row INSERT for a task's timings since its last report.

        A ledger made by an older djhpc, whose `key_time` table nobody has
        added yet (only `retry` since the upgrade), keeps no timings rather than
        failing the task: checked once per Ledger.
        """
        if not times:
            return
        if self._key_time_ready is None:
            self._key_time_ready = self.has_table("key_time")
            if not self._key_time_ready:
                log.warning("Ledger %s has no key_time table: per-key timings are not kept "
                            "(any submit creates it)", self.schema)
        if not self._key_time_ready:
            return
        rows = [(run_id, attempt, chunk, t.seq, t.started, t.seconds, int(t.ok)) for t in times]
        marks = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        self.sql(f"INSERT INTO {self.t('key_time')} (run_id, attempt, chunk, seq, started, "
                 f"seconds, ok) VALUES {marks}", [v for r in rows for v in r])

    def key_times(self, run_ids: Sequence[int]) -> list[KeyTime]:
        """Every recorded make() of these runs, in the order they started."""
        if not run_ids or not self.has_table("key_time"):
            return []
        marks = ", ".join(["%s"] * len(run_ids))
        rows = self.sql(
            f"SELECT run_id, attempt, chunk, seq, started, seconds, ok FROM {self.t('key_time')} "
            f"WHERE run_id IN ({marks}) ORDER BY started, key_time_id", list(run_ids)).fetchall()
        return [KeyTime(seq=int(seq), started=started, seconds=float(seconds), ok=bool(ok),
                        run_id=int(run_id), attempt=int(attempt), chunk=int(chunk))
                for run_id, attempt, chunk, seq, started, seconds, ok in rows]

    # --- the sizing history -----------------------------------------------------

    def ensure_task_usage(self) -> None:
        if self.has_table("task_usage"):
            return
        d = self.d
        self.sql(f"""CREATE TABLE IF NOT EXISTS {self.t('task_usage')} (
            run_id BIGINT NOT NULL, chunk INT NOT NULL, attempt INT NOT NULL,
            job_id VARCHAR(64) NOT NULL, source VARCHAR(8) NOT NULL, state VARCHAR(16) NOT NULL,
            elapsed_s DOUBLE PRECISION NULL, cpu_s DOUBLE PRECISION NULL,
            max_rss_mb DOUBLE PRECISION NULL, req_mem_mb DOUBLE PRECISION NULL,
            recorded {d.timestamp} NOT NULL,
            PRIMARY KEY (run_id, chunk, job_id, source)){d.table_options}""")

    def add_usage(self, usages: Sequence[TaskUsage]) -> None:
        """Keep tasks' resource use; a task already kept (by the same source) stays as it is.

        Written by whoever sees a task end: the task itself, and anyone who
        reads Slurm's accounting of it (status, --wait, the follow-up job).
        """
        fresh = [u for u in usages if (u.run_id, u.chunk, u.job_id or "", u.source)
                 not in self._usage_kept]
        if self._usage_ready is None:
            self._usage_ready = self.has_table("task_usage")  # not in a ledger made before it
        if not fresh or not self._usage_ready:
            return
        rows = [(u.run_id, u.chunk, u.attempt, u.job_id or "", u.source, str(u.state),
                 u.elapsed_s, u.cpu_s, u.max_rss_mb, u.req_mem_mb, now()) for u in fresh]
        marks = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        insert = (f"INTO {self.t('task_usage')} (run_id, chunk, attempt, job_id, source, state, "
                  f"elapsed_s, cpu_s, max_rss_mb, req_mem_mb, recorded) VALUES {marks}")
        self.sql(f"INSERT {insert} ON CONFLICT DO NOTHING" if self.d.postgres
                 else f"INSERT IGNORE {insert}", [v for row in rows for v in row])
        self._usage_kept.update((u.run_id, u.chunk, u.job_id or "", u.source) for u in fresh)

    def key_seconds(self, run_ids: Sequence[int], keys: int = 10000) -> list[float]:
        """These runs' newest `keys` make() times of keys that were made."""
        if not run_ids or not self.has_table("key_time"):
            return []
        marks = ", ".join(["%s"] * len(run_ids))
        return [float(s) for (s,) in self.sql(
            f"SELECT seconds FROM {self.t('key_time')} WHERE run_id IN ({marks}) AND ok=1 "
            f"ORDER BY key_time_id DESC LIMIT {int(keys)}", list(run_ids)).fetchall()]

    def history(self, table_name: str, *, runs: int = 10, keys: int = 10000) -> History:
        """What the table's latest runs measured: their newest `keys` make() times, and
        their tasks' use (Slurm's record of a task where there is one, else the task's)."""
        recent = [r.run_id for r in self.runs(table_name=table_name, limit=runs)]
        if not recent or not self.has_table("key_time"):
            return History(table=table_name)
        marks = ", ".join(["%s"] * len(recent))
        seconds = self.key_seconds(recent, keys)
        failed = self.sql(f"SELECT COUNT(*) FROM {self.t('key_time')} WHERE run_id IN ({marks}) "
                          "AND ok=0", recent).fetchone()[0]
        usage: dict[tuple[int, int, str], TaskUsage] = {}
        if self.has_table("task_usage"):
            rows = self.sql(
                f"SELECT run_id, chunk, attempt, job_id, source, state, elapsed_s, cpu_s, "
                f"max_rss_mb, req_mem_mb FROM {self.t('task_usage')} WHERE run_id IN ({marks}) "
                "ORDER BY source", recent).fetchall()  # "slurm" after "task": it wins
            for r in rows:
                usage[(int(r[0]), int(r[1]), r[3])] = TaskUsage(
                    run_id=int(r[0]), chunk=int(r[1]), attempt=int(r[2]), job_id=r[3] or None,
                    source=r[4], state=r[5], elapsed_s=r[6], cpu_s=r[7], max_rss_mb=r[8],
                    req_mem_mb=r[9])
        measured = sorted({u.run_id for u in usage.values()}
                          | {r for (r,) in self.sql(
                              f"SELECT DISTINCT run_id FROM {self.t('key_time')} "
                              f"WHERE run_id IN ({marks})", recent).fetchall()})
        return History(table=table_name, runs=tuple(int(r) for r in measured),
                       key_seconds=tuple(seconds), failed_keys=int(failed),
                       tasks=tuple(usage.values()))

    def first_unmade(self, run: RunRecord, chunk: ChunkRecord) -> int | None:
        """The number of the chunk's first key neither in the table nor timed: the key its
        task was making when it was killed (a task makes its keys in order)."""
        d = self.d
        on = " AND ".join(f"t.{d.q(a)} = k.{d.q(a)}" for a in run.key_attrs)
        timed = (f" AND NOT EXISTS (SELECT 1 FROM {self.t('key_time')} AS kt WHERE "
                 f"kt.run_id = k.{KEY_RUN} AND kt.seq = k.{KEY_SEQ})"
                 if self.has_table("key_time") else "")
        row = self.sql(
            f"SELECT MIN(k.{KEY_SEQ}) FROM {self.t(run.keys_table)} AS k WHERE k.{KEY_RUN}=%s "
            f"AND k.{KEY_SEQ} >= %s AND k.{KEY_SEQ} < %s AND NOT EXISTS (SELECT 1 FROM "
            f"{run.table_name} AS t WHERE {on}){timed}",
            (run.run_id, chunk.lo, chunk.hi)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def keys_at(self, run: RunRecord, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The key values of these key numbers of the run."""
        wanted = sorted(set(seqs))
        if not wanted:
            return {}
        cols = ", ".join(self.d.q(a) for a in run.key_attrs)
        marks = ", ".join(["%s"] * len(wanted))
        rows = self.sql(f"SELECT {KEY_SEQ}, {cols} FROM {self.t(run.keys_table)} "
                        f"WHERE {KEY_RUN}=%s AND {KEY_SEQ} IN ({marks})",
                        [run.run_id, *wanted]).fetchall()
        return {int(r[0]): dict(zip(run.key_attrs, r[1:], strict=True)) for r in rows}

    # --- counting against the target table ------------------------------------

    def done_by_chunk(self, run: RunRecord, chunks: Sequence[ChunkRecord]) -> dict[int, int]:
        """Keys of each chunk now in the target table: the truth, not what tasks said."""
        if not chunks:
            return {}
        d = self.d
        on = " AND ".join(f"t.{d.q(a)} = k.{d.q(a)}" for a in run.key_attrs)
        ordered = sorted(chunks, key=lambda c: c.lo)
        # The chunks of a run's attempts are adjacent ranges of key numbers.
        bucket = d.bucket(f"k.{KEY_SEQ}", [c.lo for c in ordered])
        # EXISTS, not a join: a table whose key extends the key_source's has
        # several rows per key, and a key is done once.
        rows = self.sql(
            f"SELECT {bucket} AS b, COUNT(*) FROM {self.t(run.keys_table)} AS k "
            f"WHERE k.{KEY_RUN}=%s AND k.{KEY_SEQ} >= %s AND k.{KEY_SEQ} < %s "
            f"AND EXISTS (SELECT 1 FROM {run.table_name} AS t WHERE {on}) GROUP BY 1",
            (run.run_id, ordered[0].lo, max(c.hi for c in ordered))).fetchall()
        return {ordered[int(b) - 1].chunk: int(n) for b, n in rows if b}


Error = tuple[dict[str, Any], str, str]  # (key, message, traceback); {} for the task itself


@dataclass(frozen=True, kw_only=True)
class ErrorRow:
    run_id: int
    attempt: int
    chunk: int
    key: dict[str, Any]
    message: str
    stack: str


class Lease:
    """A task's hold on one chunk: every ledger write the task makes goes through it.

    Taken with `Lease.claim` (one atomic UPDATE, so one task wins); it knows
    who the task is (run, attempt, chunk, job, host), so the worker never
    repeats it.
    """

    def __init__(self, ledger: Ledger, run: RunRecord, chunk: ChunkRecord, *,
                 job_id: str | None, host: str,
                 split_off: ChunkRecord | None = None) -> None:
        self.ledger, self.run, self.chunk = ledger, run, chunk
        self.job_id, self.host = job_id, host
        # The chunk this one was split off from, as it was: its task's reservations
        # of these keys in DataJoint's jobs table pass to this task.
        self.split_off = split_off

    @classmethod
    def claim(cls, ledger: Ledger, run_id: int, chunk: int, *, job_id: str | None, host: str,
              pid: int) -> Lease | None:
        """The lease on a queued chunk, or None when it is taken, finished or cancelled.

        A chunk taken again (a requeued task) first drops what its earlier task left
        reserved in DataJoint's jobs table, should that task have died holding it.
        """
        before = ledger.chunk(run_id, chunk)
        if not ledger.claim(run_id, chunk, job_id=job_id, host=host, pid=pid,
                            connection_id=ledger.connection_id()):
            return None
        run = ledger.run(run_id)
        if before.pid and (before.pid, before.host) != (pid, host):
            ledger.release_reservations(run, before)
        return cls(ledger, run, ledger.chunk(run_id, chunk), job_id=job_id, host=host)

    @classmethod
    def claim_next(cls, ledger: Ledger, run_id: int, attempt: int, *, job_id: str | None,
                   host: str, pid: int) -> Lease | None:
        """The lease on the next chunk of the attempt that no task has started; when none
        is left, on the unstarted half of the running chunk with the most keys left
        (a straggler); None when there is neither. Tasks race for each; the atomic
        claim (or split) lets one win."""
        while True:
            queued = ledger.queued_chunks(run_id, attempt, limit=8)
            if not queued:
                break
            for chunk in queued:
                lease = cls.claim(ledger, run_id, chunk, job_id=job_id, host=host, pid=pid)
                if lease is not None:
                    return lease
        split = ledger.split(run_id, attempt, job_id=job_id, host=host, pid=pid,
                             connection_id=ledger.connection_id())
        if split is None:
            return None
        new, old = split
        return cls(ledger, ledger.run(run_id), new, job_id=job_id, host=host, split_off=old)

    def advance(self, upto: int) -> int:
        """Let this task start the chunk's keys below `upto`; how far it may really go (the
        chunk's end, if that comes first; a split may have moved it down)."""
        started_to, hi = self.ledger.advance(self.chunk.run_id, self.chunk.chunk, upto)
        if hi != self.chunk.hi:
            self.chunk = replace(self.chunk, hi=hi)
        return started_to

    def reserve(self, plan: dj.Reservation) -> set[int]:
        """Reserve the chunk's keys in DataJoint's jobs table; the numbers others hold."""
        return self.ledger.reserve_keys(self.run, self.chunk, plan)

    def key_rows(self) -> list[tuple[Any, ...]]:
        return self.ledger.chunk_keys(self.run, self.chunk)

    def add_errors(self, errors: Sequence[Error]) -> None:
        c = self.chunk
        self.ledger.add_errors(c.run_id, c.attempt, c.chunk, errors, self.job_id, self.host)

    def report(self, *, n_done: int, n_error: int, errors: Sequence[Error] = (),
               times: Sequence[KeyTime] = (), state: ChunkState | None = None,
               requeue: bool = False) -> None:
        """Errors, per-key timings and progress; with `state`, the chunk's end or hand-back.

        The last report counts the chunk's done keys from the database, not
        from what the task saw, so status can trust it later.
        """
        self.add_errors(errors)
        c = self.chunk
        self.ledger.add_key_times(c.run_id, c.attempt, c.chunk, times)
        if state:
            self.chunk = self.ledger.chunk(c.run_id, c.chunk)  # its end, after any split
            n_done = self.ledger.done_by_chunk(self.run, [self.chunk]).get(self.chunk.chunk, 0)
        self.ledger.report(self.chunk.run_id, self.chunk.chunk, n_done=n_done, n_error=n_error,
                           state=state, requeue=requeue)
        if state and not state.active:
            self.ledger.release_keys(self.run, [(self.chunk.lo, self.chunk.hi)])

    def add_usage(self, state: ChunkState, *, elapsed_s: float, cpu_s: float,
                  max_rss_mb: float) -> None:
        """The task's own measure of what it used, kept for the sizing history."""
        self.ledger.add_usage([TaskUsage(
            run_id=self.run.run_id, chunk=self.chunk.chunk, attempt=self.chunk.attempt,
            job_id=self.job_id or f"pid-{self.host}", state=str(state), elapsed_s=elapsed_s,
            cpu_s=cpu_s, max_rss_mb=max_rss_mb, source="task")])

    def release(self, state: ChunkState, only_from: Sequence[ChunkState]) -> None:
        """Set the chunk's state without a progress report (e.g. a requeue Slurm refused)."""
        self.ledger.set_chunk_states(self.chunk.run_id, [self.chunk.chunk], state, only_from)

    def run_cancelled(self) -> bool:
        return self.ledger.run(self.run.run_id).cancelled


def _listed(states: Iterable[str]) -> str:
    """States as an SQL list; they are our own constants, never user input."""
    return ", ".join(f"'{s}'" for s in states)


def _run_record(row: Sequence[Any]) -> RunRecord:
    values = dict(zip(RUN_COLUMNS, row, strict=True))
    values["paths"] = json.loads(values["paths"])
    values["key_attrs"] = json.loads(values["key_attrs"])
    values["settings"] = json.loads(values["settings"])
    values["state"] = RunPhase(values["state"])
    return RunRecord(**values)


def _chunk_record(row: Sequence[Any]) -> ChunkRecord:
    values = dict(zip(CHUNK_COLUMNS, row, strict=True))
    values["state"] = ChunkState(values["state"])
    return ChunkRecord(**values)

