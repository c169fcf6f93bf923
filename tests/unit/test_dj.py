"""The compatibility layer's pure parts: SQL dialects, key decoding, error kinds."""

import uuid

import pytest

from djhpc import dj


def test_dialects_quote_their_own_way() -> None:
    mysql, pg = dj.Dialect("mysql"), dj.Dialect("postgresql")
    assert mysql.table("s", "t") == "`s`.`t`"
    assert pg.table("s", "t") == '"s"."t"'
    assert mysql.bucket("x", [0, 10, 20]) == "INTERVAL(x, 0, 10, 20)"
    assert pg.bucket("x", [0, 10]) == "width_bucket(x, ARRAY[0, 10]::bigint[])"
    assert "SERIAL" in pg.serial_pk and "AUTO_INCREMENT" in mysql.serial_pk


def test_decode_key_restores_uuids() -> None:
    u = uuid.uuid4()
    assert dj.decode_key((1, u.bytes), ["a", "u"], {"u"}) == {"a": 1, "u": u}
    assert dj.decode_key((1, str(u)), ["a", "u"], {"u"}) == {"a": 1, "u": u}
    with pytest.raises(ValueError):
        dj.decode_key((1,), ["a", "u"], set())


class _Err(Exception):
    pass


def _pymysql(code: int, message: str) -> Exception:
    import pymysql

    return pymysql.err.OperationalError(code, message)


def _psycopg2(name: str, message: str) -> Exception:
    import psycopg2
    import psycopg2.errors

    cls = getattr(psycopg2.errors, name, None) or getattr(psycopg2, name)
    return cls(message)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("error", "transient"), [
    (_pymysql(1213, "Deadlock found when trying to get lock"), True),
    (_pymysql(1205, "Lock wait timeout exceeded"), True),
    (_pymysql(2013, "Lost connection to MySQL server during query"), True),
    (_psycopg2("OperationalError", "server closed the connection unexpectedly"), True),
    (_psycopg2("InterfaceError", "connection already closed"), True),
    (_psycopg2("DeadlockDetected", "deadlock detected"), True),
    (_psycopg2("UniqueViolation", "duplicate key"), False),
    (_pymysql(1062, "Duplicate entry"), False),
    (ValueError("bad spikes"), False),
    # A user's own exception is the user's, whatever it says or carries.
    (RuntimeError("deadlock in my simulation; lost connection to the rig"), False),
    (_Err(1213, "Deadlock found when trying to get lock"), False),
])
def test_transient_errors(error: Exception, transient: bool) -> None:
    assert dj.is_transient(error) is transient


def test_transient_cause_is_found() -> None:
    try:
        try:
            raise _pymysql(2006, "MySQL server has gone away")
        except Exception as inner:
            raise RuntimeError("query failed") from inner
    except RuntimeError as outer:
        assert dj.is_transient(outer)


def test_connect_timeout_is_applied_and_not_repeated() -> None:
    """The drivers' connect gets djhpc's bound; a timed-out address fails fast afterwards."""
    import time

    calls: list[dict[str, object]] = []

    def slow_connect(**kwargs: object) -> object:
        calls.append(kwargs)
        time.sleep(0.25)
        raise OSError("timed out")

    dj.set_timeout(0.2)
    try:
        bounded = dj._bounded(slow_connect, "psycopg2")
        with pytest.raises(TimeoutError):
            bounded(host="db.example", port=1)
        assert calls[0]["connect_timeout"] == 2  # libpq's whole seconds, at least 2
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # DataJoint's retry without TLS: no second wait
            bounded(host="db.example", port=1)
        assert len(calls) == 1 and time.monotonic() - started < 0.1
        dj._timed_out[("db.example", "1")] -= dj._RETRY_WINDOW  # a later reconnect waits again
        with pytest.raises(TimeoutError):
            bounded(host="db.example", port=1)
        assert len(calls) == 2
    finally:
        dj.set_timeout(None)
        dj._timed_out.clear()


def test_a_quick_refusal_is_not_a_timeout() -> None:
    def refused(**kwargs: object) -> object:
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        dj._bounded(refused, "pymysql")(host="h", port=2)
    assert ("h", "2") not in dj._timed_out
