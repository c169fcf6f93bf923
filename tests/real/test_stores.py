"""Tasks see what the user's DataJoint configuration gives an interactive session.

A pipeline written the lab guide's way — `dj.schema(...)` and `blob@ephys_store`
on DataJoint 0.14 (`dj.Schema` and `<blob@ephys_store>` on 2.x), the store
configured in the user's own config file — populated through the real Slurm.
"""

from __future__ import annotations

import json

import pytest

from .conftest import POSTGRES, Project, drop_schema

MODULE = '''
import datajoint as dj
import numpy as np

LEGACY = dj.__version__.startswith("0.")
# The guide's spelling on 0.14; 2.x has only dj.Schema and writes <blob@store>.
schema = dj.schema("{schema}") if LEGACY else dj.Schema("{schema}")
BLOB = "blob@ephys_store" if LEGACY else "<blob@ephys_store>"


@schema
class Trace(dj.Manual):
    definition = """
    trace_id : int
    """


@schema
class Summary(dj.Computed):
    definition = f"""
    -> Trace
    ---
    doubled : {{BLOB}}
    """

    @property
    def key_source(self):
        return Trace & "trace_id < 8"

    def make(self, key):
        self.insert1(dict(key, doubled=np.arange(1000.0) * key["trace_id"]))
'''


def _datajoint_2_on_mysql() -> bool:
    import datajoint

    return not datajoint.__version__.startswith("0.") and not POSTGRES


@pytest.mark.xfail(_datajoint_2_on_mysql(), strict=True,
                   reason="DataJoint 2.3 cannot write <blob@store> on MariaDB: its own "
                          "populate() fails the same way ('dict can not be used as parameter')")
@pytest.mark.usefixtures("slurm")
def test_external_store_from_the_users_config(project: Project) -> None:
    schema = f"{project.prefix}_store"
    store = project.tmp / "ephys_store"
    store.mkdir()
    stores = {"ephys_store": {"protocol": "file", "location": str(store)}}
    # 0.14 reads dj_local_conf.json, 2.x datajoint.json: each line its own file.
    legacy_conf = json.loads((project.workdir / "dj_local_conf.json").read_text())
    (project.workdir / "dj_local_conf.json").write_text(json.dumps({**legacy_conf, "stores": stores}))
    (project.workdir / "datajoint.json").write_text(json.dumps({"stores": stores}))
    (project.workdir / "seedstyle.py").write_text(MODULE.format(schema=schema))
    try:
        project.python("import json, seedstyle as s; s.Trace.insert([(i,) for i in range(10)]); "
                       "print(json.dumps(0))")
        out = project.djhpc_json("submit", "seedstyle.Summary", "-e", "slurm", "--tasks", "2",
                                 "--wait")
        assert out["status"]["state"] == "done" and out["keys"] == 8
        check = project.python(
            "import json, numpy as np, seedstyle as s\n"
            "got = (s.Summary & 'trace_id = 3').fetch1('doubled')\n"
            "print(json.dumps([len(s.Summary()), bool(np.array_equal(got, np.arange(1000.0) * 3))]))")
        assert check == [8, True]
        assert any(p.is_file() for p in store.rglob("*")), "nothing was written to the store"
    finally:
        drop_schema(schema)
