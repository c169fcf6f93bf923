"""The one place that knows DataJoint 0.14 from 2.x and MySQL from PostgreSQL.

Everything else in djhpc talks to the database through this module: it
connects (without ever prompting), names the key_source's keys, builds the
pending-keys query, quotes SQL for the server at hand, and populates one key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from djhpc.errors import UsageError

# Attributes of DataJoint 2.x's per-table jobs table: a primary-key attribute of
# the same name corrupts the job key there (see notes on 2.x's jobs tables).
JOBS_COLUMNS = frozenset({
    "status", "priority", "created_time", "scheduled_time", "reserved_time", "completed_time",
    "duration", "error_message", "error_stack", "user", "host", "pid", "connection_id", "version",
})


def _datajoint() -> Any:
    import datajoint

    return datajoint


def quiet() -> None:
    """Keep DataJoint's import-time chatter (config hints, connection notes) off the CLI."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import datajoint  # noqa: F401
    warnings.filterwarnings("ignore", module="datajoint")
    warnings.filterwarnings("ignore", message=".*MariaDB is not officially supported.*")
    logging.getLogger("datajoint").setLevel(logging.WARNING)
    with contextlib.suppress(Exception):  # the config re-applies its own level on change
        _datajoint().config["loglevel"] = "WARNING"


def major_version() -> int:
    return int(_datajoint().__version__.split(".")[0])


def is_legacy() -> bool:
    """True on the 0.14 line."""
    return major_version() == 0


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def configure() -> None:
    """Bring the environment's settings to DataJoint the way each line expects.

    2.x reads DJ_HOST/DJ_USER/DJ_PASS/DJ_PORT/DJ_BACKEND/DJ_USE_TLS itself. 0.14
    reads only DJ_HOST/DJ_USER/DJ_PASS, so DJ_PORT and DJ_USE_TLS are applied
    here; and where 0.14 would prompt for a missing user or password (an
    EOFError on a batch node), djhpc stops with a clear error instead.
    """
    dj = _datajoint()
    if not is_legacy():
        return
    config = dj.config
    port = os.environ.get("DJ_PORT")
    host = config["database.host"] or "localhost"
    if port and ":" not in host:
        config["database.host"] = f"{host}:{port}"
    tls = _env_flag("DJ_USE_TLS")
    if tls is not None:
        config["database.use_tls"] = tls
    missing = [k for k in ("user", "password") if config[f"database.{k}"] is None]
    if missing and not sys.stdin.isatty():
        raise UsageError(
            f"No database {' or '.join(missing)} configured for DataJoint",
            "Set DJ_USER/DJ_PASS or database.user/database.password in dj_local_conf.json "
            "or ~/.datajoint_config.json",
        )


@dataclass(frozen=True)
class Dialect:
    """SQL that differs between the two servers."""

    backend: str  # "mysql" | "postgresql"

    @property
    def postgres(self) -> bool:
        return self.backend == "postgresql"

    def q(self, name: str) -> str:
        return f'"{name}"' if self.postgres else f"`{name}`"

    def table(self, schema: str, name: str) -> str:
        return f"{self.q(schema)}.{self.q(name)}"

    @property
    def serial_pk(self) -> str:
        return "BIGSERIAL PRIMARY KEY" if self.postgres else "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY"

    @property
    def timestamp(self) -> str:
        return "TIMESTAMP(3)" if self.postgres else "DATETIME(3)"

    @property
    def long_text(self) -> str:
        return "TEXT" if self.postgres else "MEDIUMTEXT"

    @property
    def table_options(self) -> str:
        return "" if self.postgres else " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

    def create_schema(self, schema: str) -> str:
        keyword = "SCHEMA" if self.postgres else "DATABASE"
        return f"CREATE {keyword} IF NOT EXISTS {self.q(schema)}"

    @property
    def connection_id(self) -> str:
        """SQL for this session's connection id (as the process list shows it)."""
        return "pg_backend_pid()" if self.postgres else "CONNECTION_ID()"

    def bucket(self, expr: str, bounds: Sequence[int]) -> str:
        """1-based index of the last of the ascending `bounds` <= expr (0 if none).

        Both servers find it by binary search, so sorting a million keys into a
        thousand chunks stays one cheap expression per row.
        """
        listed = ", ".join(str(int(b)) for b in bounds)
        if self.postgres:
            return f"width_bucket({expr}, ARRAY[{listed}]::bigint[])"
        return f"INTERVAL({expr}, {listed})"



def connection() -> Any:
    """DataJoint's shared connection, or a one-line error saying what to fix."""
    dj = _datajoint()
    configure()
    install_timeouts()
    try:
        return dj.conn()
    except Exception as error:  # the drivers raise many types; translate them all
        if _is_timeout(error):
            raise timed_out_error() from None
        if is_legacy() and "SSL is required" in str(error) and dj.config["database.use_tls"] is None:
            # 0.14's "preferred" TLS fails on PyMySQL >= 1.2 when the server has
            # no TLS; fall back the way 2.x does.
            dj.config["database.use_tls"] = False
            try:
                return dj.conn(reset=True)
            except Exception as retry_error:
                error = retry_error
        raise connection_error(error) from None


def separate_connection() -> Any:
    """A connection of its own, configured like the shared one (a task's heartbeat uses it)."""
    dj = _datajoint()
    config = dj.config
    return dj.Connection(config["database.host"], config["database.user"],
                         config["database.password"], use_tls=config["database.use_tls"])


def keep_session(conn: Any) -> None:
    """Let a task's session idle for as long as one make() may take.

    MySQL closes a session idle for `wait_timeout` (8 hours by default) and a
    make() may not touch the database for longer; PostgreSQL keeps idle
    sessions by default.
    """
    if not dialect(conn).postgres:
        conn.query("SET SESSION wait_timeout = 604800")  # a week
def _is_timeout(error: BaseException | None, depth: int = 0) -> bool:
    if error is None or depth > 3:
        return False
    return isinstance(error, TimeoutError) or _is_timeout(error.__cause__ or error.__context__,
                                                          depth + 1)


def connection_error(error: BaseException) -> UsageError:
    text = str(error)
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    where = _where()
    refused = ("password authentication failed", "Access denied", "no password supplied")
    if code == 1045 or any(w in text for w in refused) or re.search(r'role ".*" does not exist', text):
        return UsageError(f"The database refused the credentials for {where}",
                          "Check DJ_USER/DJ_PASS or your DataJoint config file")
    if code in (2002, 2003, 2005, 2013) or "could not connect" in text or "Connection refused" in text:
        return UsageError(f"Cannot reach the database at {where}",
                          "Check DJ_HOST/DJ_PORT and that the server is running")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return UsageError(f"Cannot connect to the database at {where}: {first}",
                      "Check your DataJoint configuration (`djhpc doctor` helps)")


def _where() -> str:
    config = _datajoint().config
    user = config["database.user"]
    host = config["database.host"]
    port = None if is_legacy() else config["database.port"]
    return f"{user}@{host}" + (f":{port}" if port and ":" not in str(host) else "")


def dialect(conn: Any) -> Dialect:
    adapter = getattr(conn, "adapter", None)
    name = type(adapter).__name__.lower() if adapter is not None else "mysql"
    return Dialect("postgresql" if "postgres" in name else "mysql")


def db_user(conn: Any) -> str:
    user = _datajoint().config["database.user"] or "unknown"
    return str(user).split("@")[0]


def query(conn: Any, sql: str, args: Sequence[Any] = ()) -> Any:
    """A cursor for `sql`; server errors keep their own text."""
    return conn.query(sql, args=tuple(args))


def server_message(error: BaseException) -> str:
    """The server's own words from a driver error, on one line."""
    args: tuple[Any, ...] = tuple(getattr(error, "args", ()))
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(error)
    return " ".join(text.split())


# --- the target table ------------------------------------------------------


def is_autopopulated(cls: Any) -> bool:
    dj = _datajoint()
    return isinstance(cls, type) and issubclass(cls, (dj.Computed, dj.Imported))


def table_kind(cls: Any) -> str:
    dj = _datajoint()
    for kind in ("Manual", "Lookup", "Part", "Computed", "Imported"):
        if isinstance(cls, type) and issubclass(cls, getattr(dj, kind)):
            return f"dj.{kind}"
    return type(cls).__name__ if not isinstance(cls, type) else cls.__name__


def key_source(table: Any) -> Any:
    ks = table.key_source
    if isinstance(ks, type):
        ks = ks()
    return ks


def key_attributes(table: Any) -> list[str]:
    """The key_source's primary key: exactly the attributes of a pending key."""
    return list(key_source(table).primary_key)


def uuid_attributes(table: Any) -> set[str]:
    heading = key_source(table).heading
    return {name for name in heading.primary_key if getattr(heading.attributes[name], "uuid", False)}


def pending_expression(table: Any, restrictions: Iterable[str],
                       leave_out_reserved: bool = True) -> Any:
    """`(key_source & restrictions) - table`, as DataJoint's own populate sees it, less the
    keys another worker has reserved in DataJoint's jobs table (unless told otherwise)."""
    dj = _datajoint()
    todo = key_source(table) & dj.AndList(list(restrictions))
    pending = todo.proj() - table.proj()
    if not leave_out_reserved:
        return pending
    try:
        taken = reserved_keys(table)
    except Exception as error:  # a jobs table DataJoint cannot make for this table
        logging.getLogger(__name__).debug("DataJoint's jobs table not read: %s", error)
        taken = []
    return pending - taken if taken else pending


def pending_sql(table: Any, restrictions: Iterable[str], leave_out_reserved: bool = True) -> str:
    return str(pending_expression(table, restrictions, leave_out_reserved).make_sql())


def jobs_column_collisions(table: Any) -> list[str]:
    """Key attributes that DataJoint 2.x's jobs table would corrupt."""
    if is_legacy():
        return []
    return sorted(set(table.primary_key) & JOBS_COLUMNS)


def decode_key(values: Sequence[Any], names: Sequence[str], uuids: set[str]) -> dict[str, Any]:
    """A key read back from the ledger, as DataJoint itself would fetch it."""
    key = dict(zip(names, values, strict=True))
    for name in uuids:
        value = key[name]
        if isinstance(value, (bytes, bytearray)):
            key[name] = uuid.UUID(bytes=bytes(value))
        elif isinstance(value, str):
            key[name] = uuid.UUID(value)
    return key


def populate_one(table: Any, key: dict[str, Any],
                 make_kwargs: dict[str, Any] | None = None) -> tuple[bool, BaseException | None]:
    """Make one key in its own transaction, as `populate()` does for each key.

    Returns (made, error). Both lines share `_populate1`, which skips a key that
    is already in the table inside the transaction; the key was checked against
    the key_source's primary key, so it can never widen to other keys.
    """
    try:
        # make_kwargs reaches make() exactly as populate(make_kwargs=) passes it (both lines).
        result = table._populate1(
            key, jobs=None, suppress_errors=True, return_exception_objects=True,
            **({"make_kwargs": make_kwargs} if make_kwargs else {})
        )
    except Exception as error:
        # On PostgreSQL a dropped connection also breaks DataJoint's own
        # rollback, which then escapes: it is still the key's (transient) error.
        if not is_transient(error):
            raise
        return False, error
    if isinstance(result, tuple):
        return False, result[1]
    return bool(result), None


def rollback(table: Any) -> None:
    """Undo a key interrupted inside make(), as DataJoint's own error path does.

    `_allow_insert` is DataJoint's switch that lets make() insert into its own
    table; it must be off again once the key's transaction is abandoned.
    """
    conn = table.connection
    try:
        if conn.in_transaction:
            conn.cancel_transaction()
    finally:
        type(table)._allow_insert = False


def progress(table: Any) -> tuple[int, int]:
    remaining, total = table.progress(display=False)
    return int(remaining), int(total)


# --- transient database errors ------------------------------------------------

_TRANSIENT_CODES = {1205, 1213, 2006, 2013}  # lock wait, deadlock, gone away, lost
# PostgreSQL SQLSTATEs: deadlock, serialization failure, lock not available,
# admin/crash shutdown, cannot connect now; class 08 is every connection exception.
_TRANSIENT_SQLSTATES = {"40P01", "40001", "55P03", "57P01", "57P02", "57P03"}
# psycopg2.errors' classes for the same states, and the bare classes of a lost connection.
_TRANSIENT_PG_TYPES = {"DeadlockDetected", "SerializationFailure", "LockNotAvailable",
                       "AdminShutdown", "CrashShutdown", "CannotConnectNow",
                       "OperationalError", "InterfaceError"}


def is_transient(error: BaseException, _depth: int = 0) -> bool:
    """A deadlock, lock wait timeout or lost connection: worth another try.

    Recognised by the driver's error code or type, never by message text: a
    user's own exception that mentions "deadlock" is the user's error.
    """
    if type(error).__name__ == "LostConnectionError" and \
            type(error).__module__.startswith("datajoint"):
        return True
    module = type(error).__module__
    args = getattr(error, "args", ())
    if module.startswith("pymysql") and args and isinstance(args[0], int) \
            and args[0] in _TRANSIENT_CODES:
        return True
    if module.startswith("psycopg2"):
        code = getattr(error, "pgcode", None)
        if code is not None:
            return code in _TRANSIENT_SQLSTATES or code.startswith("08")
        # No SQLSTATE on the bare classes: the client lost the server.
        return type(error).__name__ in _TRANSIENT_PG_TYPES
    cause = error.__cause__ or error.__context__
    return _depth < 3 and cause is not None and is_transient(cause, _depth + 1)


def reconnect(conn: Any) -> None:
    """Open the connection again if the server dropped it."""
    try:
        if conn.in_transaction:
            conn.cancel_transaction()
    except Exception:  # a dead connection cannot roll back; the server already did
        pass
    try:
        # A real round trip: 2.x's PostgreSQL ping reports a closed connection
        # by returning False rather than raising.
        conn.query("SELECT 1")
    except Exception:
        conn.connect()
        keep_session(conn)
    if hasattr(conn, "_in_transaction"):
        conn._in_transaction = False  # the server rolled back what was open


# --- DataJoint's log and the drivers' timeouts (issue 11) ----------------------------


class _QuietFallback:
    """Drops 2.x's "SSL connection failed ... Falling back" note unless -v.

    With DataJoint's default TLS setting it is logged on every connect to a
    server without TLS (and before every connection error), which is noise
    for a CLI whose errors are one line.
    """

    def filter(self, record: Any) -> bool:
        return not str(record.msg).startswith("SSL connection failed")


def route_logs(verbose: bool) -> None:
    """DataJoint's log on stderr (2.x writes it to stdout), WARNING and up unless -v.

    stdout carries only djhpc's own output, so `--json` stays parseable.
    """
    import logging
    import warnings

    if "datajoint" not in sys.modules:
        # 2.x picks its stream at import and may log while importing.
        before = os.environ.get("DJ_LOG_STREAM")
        os.environ["DJ_LOG_STREAM"] = "stderr"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import datajoint  # noqa: F401  (its logging module installs the handler)
        finally:
            if before is None:
                os.environ.pop("DJ_LOG_STREAM", None)
            else:
                os.environ["DJ_LOG_STREAM"] = before
    logger = logging.getLogger("datajoint")
    if logger.handlers:
        logger.propagate = False  # its own handler prints it; djhpc's root handler would repeat it
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)
        if not verbose and not any(isinstance(f, _QuietFallback) for f in handler.filters):
            handler.addFilter(_QuietFallback())
    if not verbose:
        quiet()


DEFAULT_TIMEOUT = 15.0
_timeout = {"seconds": DEFAULT_TIMEOUT}
# When each address last timed out: DataJoint 2.x retries without TLS right away,
# which would double the wait; later reconnects (a worker's) wait again in full.
_timed_out: dict[tuple[str, str], float] = {}
_RETRY_WINDOW = 2.0


def set_timeout(seconds: float | None) -> None:
    """Most seconds to wait for the server to accept and answer a new connection."""
    _timeout["seconds"] = float(seconds) if seconds else DEFAULT_TIMEOUT


def _bounded(connect: Any, driver: str) -> Any:
    """The driver's connect() with djhpc's timeout on connecting and on the handshake.

    Neither line of DataJoint passes a read timeout, so a port that accepts TCP
    but never answers (not a database, a hung server) blocked forever. The bound
    covers only the connect and the handshake: queries may rightly take longer
    (planning a million keys), so pymysql's read/write timeouts are lifted once
    connected. A connect to an address that timed out a moment ago fails at once
    (DataJoint retries without TLS, which would double the wait).
    """
    import time

    def bounded(*args: Any, **kwargs: Any) -> Any:
        seconds = _timeout["seconds"]
        where = (str(kwargs.get("host")), str(kwargs.get("port")))
        if time.monotonic() - _timed_out.get(where, -_RETRY_WINDOW) < _RETRY_WINDOW:
            raise TimeoutError(f"no answer within {seconds:g} s")
        if driver == "pymysql":
            kwargs.update(connect_timeout=seconds, read_timeout=seconds, write_timeout=seconds)
        else:  # libpq's connect_timeout covers the handshake too; whole seconds, >= 2
            kwargs["connect_timeout"] = max(2, round(seconds))
        started = time.monotonic()
        try:
            conn = connect(*args, **kwargs)
        except Exception:
            if time.monotonic() - started >= seconds * 0.9:
                _timed_out[where] = time.monotonic()
                raise TimeoutError(f"no answer within {seconds:g} s") from None
            raise
        if driver == "pymysql":
            conn._read_timeout = conn._write_timeout = None
            conn._current_timeout = None
            conn._sock.settimeout(None)
        return conn

    bounded.djhpc_bounded = True  # type: ignore[attr-defined]
    return bounded


def install_timeouts() -> None:
    """Wrap the drivers' connect() once, for both lines of DataJoint."""
    import importlib

    for driver in ("pymysql", "psycopg2"):
        try:
            module = importlib.import_module(driver)
        except ImportError:
            continue
        if not getattr(module.connect, "djhpc_bounded", False):
            setattr(module, "connect", _bounded(module.connect, driver))  # noqa: B010


def timed_out_error() -> UsageError:
    return UsageError(
        f"The database at {_where()} did not answer within {_timeout['seconds']:g} s",
        "Check DJ_HOST/DJ_PORT point at the database server and that it is not overloaded; "
        "db_timeout: sets the limit")


# --- DataJoint versions ------------------------------------------------------------


def version_warning() -> str | None:
    """A known-bad DataJoint release, in words; None when the version is fine."""
    version = str(_datajoint().__version__)
    if version == "2.3.0":
        return ("DataJoint 2.3.0 traces every dependency for each key (about 50 ms and 60 "
                "queries per key, fixed in 2.3.1): upgrade with pip install -U datajoint")
    return None


# --- DataJoint's own jobs tables: coordination with other workers ----------------------
#
# `populate(reserve_jobs=True)` (a lab's worker, another user's script) reserves each key
# in DataJoint's jobs table for the target before making it: 0.14 keeps one `~jobs`
# per schema (a row per table and key hash); 2.x one `~~table` per table (a row per
# key). djhpc's tasks reserve their chunk's keys there too, in one batch per chunk, and
# release them as they finish, so that neither makes a key the other is making; and
# planning leaves out keys reserved there by anyone.


def _worker() -> tuple[str, int]:
    import platform

    return platform.node(), os.getpid()


def _legacy_jobs(table: Any) -> Any:
    return table.connection.schemas[table.database].jobs


def _jobs_2x(table: Any, declare: bool) -> Any:
    from datajoint.jobs import Job

    jobs = Job(table)  # not `table.jobs`: that creates the table even just to look
    if not jobs.is_declared:
        if not declare:
            return None
        jobs.declare()
    return jobs


def reserved_keys(table: Any) -> list[dict[str, Any]]:
    """Keys of the table that some worker has reserved in DataJoint's jobs table now."""
    attrs = key_attributes(table)
    if is_legacy():
        jobs = _legacy_jobs(table)
        found = (jobs & {"table_name": table.table_name, "status": "reserved"}).fetch("key")
    else:
        jobs = _jobs_2x(table, declare=False)
        found = [] if jobs is None else (jobs & "status='reserved'").fetch(as_dict=True)
    return [{a: k[a] for a in attrs} for k in found if k and all(a in k for a in attrs)]


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """How this process reserves keys in DataJoint 2.x's jobs table, straight in SQL."""

    jobs_table: str  # its full name
    values: dict[str, Any]  # the columns of a reservation (status, host, pid, ...)


def reservation(table: Any, key_attrs: Sequence[str]) -> Reservation | None:
    """2.x, where the jobs table's key is the key_source's: a chunk's keys can be reserved
    on the server, straight from the ledger (one statement, no row through Python).
    None: reserve them with `reserve()` instead."""
    if is_legacy():
        return None
    jobs = _jobs_2x(table, declare=True)
    if set(jobs.primary_key) != set(key_attrs):
        return None
    host, pid = _worker()
    conn = table.connection
    return Reservation(jobs_table=jobs.full_table_name, values=dict(
        status="reserved", priority=conn._config.jobs.default_priority, host=host, pid=pid,
        connection_id=conn.connection_id, user=conn.get_user()))


def reserve(table: Any, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reserve `keys` for this process in DataJoint's jobs table, in one batch.

    Returns the keys now reserved by this process; the others are reserved (or
    were just taken) by another worker, which will make them.
    """
    if not keys:
        return []
    host, pid = _worker()
    conn = table.connection
    dj = _datajoint()
    if is_legacy():
        from datajoint.hash import key_hash

        jobs = _legacy_jobs(table)
        name = table.table_name
        rows = [dict(table_name=name, key_hash=key_hash(k), status="reserved", host=host,
                     pid=pid, connection_id=conn.connection_id, key=k, user=jobs._user)
                for k in keys]
        with dj.config(enable_python_native_blobs=True):
            jobs.insert(rows, ignore_extra_fields=True, skip_duplicates=True)
        mine = set((jobs & {"table_name": name, "status": "reserved", "host": host,
                            "pid": pid}).fetch("key_hash"))
        return [k for k in keys if key_hash(k) in mine]
    jobs = _jobs_2x(table, declare=True)
    attrs = list(jobs.primary_key)
    stamp = conn.query("SELECT CURRENT_TIMESTAMP(3)").fetchone()[0]
    ours = dict(status="reserved", priority=jobs.connection._config.jobs.default_priority,
                host=host, pid=pid, connection_id=conn.connection_id, user=conn.get_user(),
                reserved_time=stamp)
    jobs.insert([{**{a: k[a] for a in attrs}, **ours} for k in keys], skip_duplicates=True)
    # Rows a `jobs.refresh()` left pending are free: take them as populate() would.
    pending = jobs & [{a: k[a] for a in attrs} for k in keys] & "status='pending'"
    for key in pending.fetch("KEY"):
        jobs.reserve(key)
    # Compared as text: the jobs table may hand back another type (a datetime for a date).
    mine = {tuple(str(r[a]) for a in attrs)
            for r in (jobs & {"host": host, "pid": pid, "status": "reserved"}).fetch(
                *attrs, as_dict=True)}
    return [k for k in keys if tuple(str(k[a]) for a in attrs) in mine]


def hand_over(table: Any, keys: Sequence[dict[str, Any]], host: str, pid: int) -> None:
    """Move the reservations another task (`host`, `pid`) holds on `keys` in DataJoint's
    jobs table to this process: its chunk was split, and these keys are now ours."""
    if not keys:
        return
    conn = table.connection
    if is_legacy():
        from datajoint.hash import key_hash

        jobs = _legacy_jobs(table)
        which = [{"table_name": table.table_name, "key_hash": key_hash(k)} for k in keys]
    else:
        jobs = _jobs_2x(table, declare=False)
        if jobs is None:
            return
        which = [{a: k[a] for a in jobs.primary_key} for k in keys]
    held = jobs & which & {"status": "reserved", "host": host, "pid": pid}
    mine, me = _worker()
    where = held.where_clause().replace("%", "%%")  # values are inlined; args come after
    conn.query(f"UPDATE {jobs.full_table_name} SET host=%s, pid=%s, connection_id=%s{where}",
               args=(mine, me, conn.connection_id))


def release_sql(full_table_name: str, host: str, pid: int) -> tuple[str, tuple[Any, ...]]:
    """SQL dropping the reservations a (dead) task of this table left in DataJoint's jobs
    table, without importing the table's module."""
    quote = full_table_name[:1]  # ` on MySQL, " on PostgreSQL
    db, name = (part.strip('`"') for part in full_table_name.split("."))
    schema = f"{quote}{db}{quote}"
    if is_legacy():
        return (f"DELETE FROM {schema}.{quote}~jobs{quote} WHERE table_name=%s "
                "AND status='reserved' AND host=%s AND pid=%s", (name, host, pid))
    return (f"DELETE FROM {schema}.{quote}~~{name.lstrip('_')}{quote} WHERE status='reserved' "
            "AND host=%s AND pid=%s", (host, pid))


def release(table: Any) -> None:
    """Drop this process's reservations in DataJoint's jobs table (its keys are made or
    handed back)."""
    host, pid = _worker()
    if is_legacy():
        jobs = _legacy_jobs(table)
        (jobs & {"table_name": table.table_name, "status": "reserved", "host": host,
                 "pid": pid}).delete_quick()
        return
    jobs = _jobs_2x(table, declare=False)
    if jobs is not None:
        (jobs & {"status": "reserved", "host": host, "pid": pid}).delete_quick()
