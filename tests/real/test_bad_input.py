"""Bad input: one line `Error: <what>. <what to do>`, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest

from .conftest import BIN, POSTGRES, Project, connect, database_user, q


@pytest.fixture
def small(project: Project) -> Project:
    project.make_data("--animals", "2", "--sessions", "1", "--units", "3")
    return project


def _fails(project: Project, *args: str, expect: int = 2, **kw: object) -> str:
    result = project.djhpc(*args, **kw)  # type: ignore[arg-type]
    assert result.returncode == expect, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert project.ledger_runs() == 0
    return lines[0]


@pytest.mark.parametrize(("target", "words"), [
    ("MyTabel", "Did you mean MyTable?"),
    ("my_analysis.MyTabel", "Did you mean MyTable?"),
    ("my_analysys.MyTable", "No module named 'my_analysys'"),
    ("lab.animal.Animal", "is a dj.Manual table, not an auto-populated one"),
])
def test_targets(small: Project, target: str, words: str) -> None:
    assert words in _fails(small, "submit", target, "-e", "local")


def test_import_error_is_shown(small: Project) -> None:
    (small.workdir / "broken.py").write_text("import my_analysis\nx = 1 / 0\n")
    message = _fails(small, "submit", "broken.MyTable", "-e", "local")
    assert "ZeroDivisionError: division by zero" in message and "broken.py:2" in message


@pytest.mark.parametrize("restriction", ["unit_id <", "no_such_attribute = 3", "unit_id = 'x"])
def test_restrictions_the_server_or_datajoint_reject(small: Project, restriction: str) -> None:
    assert "restriction" in _fails(small, "submit", "MyTable", "-e", "local", "-r", restriction)


def test_restriction_matching_nothing_is_nothing_to_do(small: Project) -> None:
    result = small.djhpc("submit", "MyTable", "-e", "local", "-r", "unit_id > 1000")
    assert result.returncode == 0 and "Nothing to do" in result.stdout
    assert small.ledger_runs() == 0


@pytest.mark.parametrize(("args", "words"), [
    (["--mem", "lots"], "Invalid memory 'lots'"),
    (["--time", "-1"], "Invalid time '-1'"),
    (["-p", "sagga"], "Unknown profile 'sagga'"),
    (["-p", "saga"], "requires an account"),
    (["-p", "betzy", "--account", "nn1k", "--time", "3-00:00:00"], "exceeds"),
])
def test_resources_and_profiles(small: Project, args: list[str], words: str) -> None:
    assert words in _fails(small, "submit", "MyTable", "-e", "local", *args)


def test_invalid_yaml_names_the_line(small: Project) -> None:
    (small.workdir / "djhpc.yaml").write_text("modules: [my_analysis]\nmem: [512M\n")
    assert "djhpc.yaml line" in _fails(small, "submit", "MyTable", "-e", "local")


def test_unknown_setting_lists_valid_ones(small: Project) -> None:
    (small.workdir / "djhpc.yaml").write_text("modules: [my_analysis]\nchunksize: 5\n")
    assert "chunk_size" in _fails(small, "submit", "MyTable", "-e", "local")


def test_unreachable_database(small: Project) -> None:
    env = small.env(DJ_PORT="1", DJ_HOST="127.0.0.1")
    assert "Cannot reach the database" in _fails(small, "submit", "MyTable", env=env)


def test_wrong_credentials(small: Project) -> None:
    # PostgreSQL here trusts 127.0.0.1, so a password is not checked: use an unknown role.
    env = small.env(DJ_USER="djhpc_nobody") if POSTGRES else small.env(DJ_PASS="wrong")
    message = _fails(small, "submit", "MyTable", env=env)
    assert "database" in message and "DJ_USER" in message


def test_slurm_executor_without_slurm(small: Project) -> None:
    env = small.env(PATH=str(BIN))
    assert "sbatch is not on PATH" in _fails(small, "submit", "MyTable", "-e", "slurm", env=env)


@pytest.mark.usefixtures("slurm")
def test_sbatch_rejecting_a_partition_leaves_nothing(small: Project) -> None:
    message = _fails(small, "submit", "MyTable", "-e", "slurm", "--partition", "nosuchpartition")
    assert "sbatch rejected the job" in message and "invalid partition" in message.lower()
    assert not list(small.run_dir.glob("*-run-*"))


def test_no_permission_for_the_ledger_schema(small: Project) -> None:
    with database_user("pw", schemas=f"{small.prefix}\\_%") as user:
        env = small.env(DJ_USER=user, DJ_PASS="pw")
        env.pop("DJHPC_LEDGER_SCHEMA")
        message = _fails(small, "submit", "MyTable", "-e", "local", env=env)
        assert f"No permission to create djhpc's ledger schema 'user_{user}_djhpc'" in message
        if not POSTGRES:
            assert f"{small.prefix}_*" in message  # the names this user may create


def test_key_named_like_a_jobs_column_still_works(project: Project) -> None:
    """DataJoint 2.x's jobs table breaks on such keys; djhpc doesn't use it and says so."""
    schema = f"{project.prefix}_pid"
    (project.workdir / "pidtable.py").write_text(f'''
import datajoint as dj
schema = dj.Schema("{schema}")

@schema
class Process(dj.Manual):
    definition = """
    pid : int
    """

@schema
class Trace(dj.Computed):
    definition = """
    -> Process
    ---
    twice : int
    """
    def make(self, key):
        self.insert1(dict(key, twice=2 * key["pid"]))
''')
    try:
        project.python("import json, pidtable as p; p.Process.insert([(i,) for i in range(5)]); "
                       "print(json.dumps(0))")
        result = project.djhpc("submit", "pidtable.Trace", "-e", "local", "--wait")
        assert result.returncode == 0, result.stderr
        assert project.python("import json, pidtable as p; print(len(p.Trace()))") == 5
    finally:
        conn = connect()
        conn.cursor().execute(
            f"DROP SCHEMA IF EXISTS {q(schema)} CASCADE" if POSTGRES
            else f"DROP DATABASE IF EXISTS {q(schema)}")
        conn.close()


def test_status_of_unknown_run(small: Project) -> None:
    small.djhpc("submit", "MyTable", "-e", "local", "--dry-run")
    small.djhpc_json("submit", "MyTable", "-e", "debug", "-r", "unit_id = 1")
    result = small.djhpc("status", "999")
    assert result.returncode == 2 and "No run 999" in result.stderr
    assert json.loads(small.djhpc("status", "--json").stdout)["runs"][0]["state"] == "done"


