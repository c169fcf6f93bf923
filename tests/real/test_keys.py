"""Keys round-trip exactly, and a key outside the key_source is never made."""

from __future__ import annotations

import pytest

from .conftest import POSTGRES, Project, drop_schema

MODULE = '''
import datetime, decimal, uuid
import datajoint as dj

DJ2 = dj.__version__.split(".")[0] != "0"
INT = "int32" if DJ2 else "int"
schema = dj.Schema("{schema}")

@schema
class Source(dj.Manual):
    definition = f"""
    n      : {{INT}}
    name   : varchar(16)
    day    : date
    moment : datetime
    amount : decimal(6,2)
    {uuid_attr}
    kind   : enum('spike', 'lfp')
    """

@schema
class Made(dj.Computed):
    definition = """
    -> Source
    ---
    seen : varchar(255)
    """
    key_source = Source & "n < 50"

    def make(self, key):
        expected = dict(n=int, name=str, day=datetime.date, moment=datetime.datetime,
                        amount=decimal.Decimal, kind=str)
        if "ident" in key:
            expected["ident"] = uuid.UUID
        for name, kind in expected.items():
            if not isinstance(key[name], kind):
                raise TypeError(f"{{name}} arrived as {{type(key[name]).__name__}}")
        self.insert1(dict(key, seen=repr(sorted(key.items()))))
'''


@pytest.fixture
def typed(project: Project) -> Project:
    schema = f"{project.prefix}_types"
    # DataJoint 2.3 cannot insert a uuid on PostgreSQL (it sends bytes to a
    # uuid column), whoever populates: the uuid attribute is MySQL-only here.
    uuid_attr = "" if POSTGRES else "ident  : uuid"
    (project.workdir / "typed.py").write_text(MODULE.format(schema=schema, uuid_attr=uuid_attr))
    project.python(
        "import datetime, decimal, json, uuid, typed\n"
        "rows = [dict(n=i, name=f'unit é{i}', day=datetime.date(2024, 1, 1 + i % 28),\n"
        "             moment=datetime.datetime(2024, 5, 6, 7, 8, i % 60),\n"
        "             amount=decimal.Decimal(f'{i}.{i % 100:02d}'), ident=uuid.uuid4(),\n"
        "             kind=('spike', 'lfp')[i % 2]) for i in range(60)]\n"
        "rows = [{k: v for k, v in r.items() if k in typed.Source.heading.names} for r in rows]\n"
        "typed.Source.insert(rows)\n"
        "print(json.dumps(len(typed.Source())))")
    yield project
    drop_schema(schema)


@pytest.mark.parametrize("executor", ["local", "debug"])
def test_every_key_type_round_trips_exactly(typed: Project, executor: str) -> None:
    out = typed.djhpc_json("submit", "typed.Made", "-e", executor, "--chunk-size", "7", "--wait")
    assert out["keys"] == 50 and out["status"]["keys"]["error"] == 0
    same = typed.python(
        "import json, typed\n"
        "src = (typed.Source & 'n < 50').fetch('KEY', order_by='n')\n"
        "made = typed.Made.fetch('KEY', order_by='n')\n"
        "print(json.dumps(src == made and len(made) == 50))")
    assert same is True
    outside = typed.python("import json, typed; print(len(typed.Made & 'n >= 50'))")
    assert outside == 0
