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


@pytest.mark.parametrize(("error", "transient"), [
    (_Err(1213, "Deadlock found when trying to get lock"), True),
    (_Err(1205, "Lock wait timeout exceeded"), True),
    (_Err(2013, "Lost connection to MySQL server during query"), True),
    (_Err("server closed the connection unexpectedly"), True),
    (_Err(1062, "Duplicate entry"), False),
    (ValueError("bad spikes"), False),
])
def test_transient_errors(error: Exception, transient: bool) -> None:
    assert dj.is_transient(error) is transient


def test_transient_cause_is_found() -> None:
    try:
        try:
            raise _Err(2006, "MySQL server has gone away")
        except _Err as inner:
            raise RuntimeError("query failed") from inner
    except RuntimeError as outer:
        assert dj.is_transient(outer)
