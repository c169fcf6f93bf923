"""Bad input: one line `Error: <what>. <what to do>`, exit 2, nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from .conftest import BIN, POSTGRES, Project, database_user, drop_schema


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
        drop_schema(schema)


def test_status_of_unknown_run(small: Project) -> None:
    small.djhpc("submit", "MyTable", "-e", "local", "--dry-run")
    small.djhpc_json("submit", "MyTable", "-e", "debug", "-r", "unit_id = 1")
    result = small.djhpc("status", "999")
    assert result.returncode == 2 and "No run 999" in result.stderr
    assert json.loads(small.djhpc("status", "--json").stdout)["runs"][0]["state"] == "done"




# --- issue 11: every bad input one line and exit 2, --json always JSON, no endless wait ---


def test_json_is_json_with_datajoints_default_tls_and_a_module_that_declares(
        project: Project) -> None:
    """No DJ_USE_TLS (DataJoint's default: on PostgreSQL it tries TLS and logs a fallback),
    and a target module that declares a table (2.x logs "Native type 'int' is used")."""
    project.make_data("--animals", "1", "--sessions", "1", "--units", "3", "--empty-units", "1")
    schema = f"{project.prefix}_declares"
    (project.workdir / "declares.py").write_text(f'''
import datajoint as dj
import my_analysis

schema = dj.Schema("{schema}")

@schema
class Doubled(dj.Computed):
    definition = """
    -> my_analysis.MyTable
    ---
    twice : int
    """
    def make(self, key):
        self.insert1(dict(key, twice=2))
''')
    env = project.env()
    env.pop("DJ_USE_TLS")
    for name in ("dj_local_conf.json", "datajoint.json"):
        (project.workdir / name).unlink(missing_ok=True)
    try:
        calls: list[tuple[str, ...]] = [
            ("doctor", "--json"),
            ("submit", "MyTable", "-e", "local", "--dry-run", "--json"),
            ("-v", "submit", "MyTable", "-e", "local", "--wait", "--json"),
        ]
        outputs = []
        for args in calls:
            result = project.djhpc(*args, env=env)
            outputs.append(json.loads(result.stdout))  # nothing but JSON on stdout
        run_id = str(outputs[-1]["run_id"])
        for args in [("status", "--json"), ("status", run_id, "--json"),
                     ("-v", "status", run_id, "--json"), ("errors", run_id, "--json"),
                     ("status", "MyTable", "--json"), ("cancel", run_id, "--json"),
                     ("retry", run_id, "--wait", "--json"),
                     ("submit", "declares.Doubled", "-e", "local", "--wait", "--json"),
                     ("status", "declares.Doubled", "--json")]:
            result = project.djhpc(*args, env=env)
            json.loads(result.stdout)
            assert "Traceback" not in result.stderr
            if args[0] != "-v":  # DataJoint's notes below WARNING only with -v
                assert "connected to" not in result.stderr
    finally:
        drop_schema(schema)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A real listening socket that accepts connections and never says a word."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("command", [("status",), ("submit", "MyTable", "-e", "local"),
                                     ("status", "--json")])
def test_silent_database_server_is_one_error_well_within_30_s(
        small: Project, silent_port: int, command: tuple[str, ...]) -> None:
    import time

    env = small.env(DJ_PORT=str(silent_port))
    env.pop("DJ_USE_TLS")  # the default setting: 2.x also retries without TLS
    started = time.monotonic()
    message = _fails(small, *command, env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert "did not answer within 15 s" in message and "db_timeout" in message


def test_doctor_on_a_silent_server_reports_it(small: Project, silent_port: int) -> None:
    import time

    env = small.env(DJ_PORT=str(silent_port), DJHPC_DB_TIMEOUT="3")
    started = time.monotonic()
    report = small.djhpc_json("doctor", expect=1, env=env, timeout=60)
    assert time.monotonic() - started < 30
    database = next(c for c in report["checks"] if c["name"] == "database")
    assert not database["ok"] and "did not answer within 3 s" in database["detail"]


@pytest.mark.parametrize(("args", "words"), [
    (["submit", "MyTable", "--chunk-size", "abc"], "'abc' is not a valid integer"),
    (["status", "-1"], "No such option '-1'"),
    (["retry", "abc"], "'abc' is not a valid integer"),
    (["status", "--watch", "--interval", "-1"], "--interval"),
    (["submit", "MyTable", "-e", "local", "--time", "99:99"], "Invalid time '99:99'"),
    (["submit", "MyTable", "-e", "local", "-r", ""], "An empty restriction"),
    (["submit", "MyTable", "-e", "local", "--make-kwargs", "{bad"], "not valid JSON"),
    (["submit", "MyTable", "-e", "local", "--make-kwargs", "[1]"], "must be a JSON object"),
])
def test_usage_errors_are_one_line(small: Project, args: list[str], words: str) -> None:
    assert words in _fails(small, *args)


def test_yaml_that_is_not_utf8(small: Project) -> None:
    (small.workdir / "djhpc.yaml").write_bytes(b"modules: [my_analysis]\n# caf\xe9\n")
    assert "is not valid UTF-8" in _fails(small, "submit", "MyTable", "-e", "local")


def test_run_dir_that_cannot_be_created(small: Project) -> None:
    blocker = small.tmp / "a-file"
    blocker.write_text("")
    env = small.env(DJHPC_RUN_DIR=str(blocker / "runs"))
    message = _fails(small, "submit", "MyTable", "-e", "local", env=env)
    assert "Cannot create a run directory" in message and "run_dir" in message


def test_a_70_kb_restriction_is_refused_before_recording(small: Project) -> None:
    restriction = "unit_id IN (" + ",".join(str(i) for i in range(14_000)) + ")"
    assert len(restriction) > 65_535
    message = _fails(small, "submit", "MyTable", "-e", "local", "-r", restriction)
    assert "the ledger keeps at most 65,535" in message and len(message) < 400


def test_a_long_bad_restriction_is_shortened(small: Project) -> None:
    restriction = "unit_id = 1 AND " + "x" * 10_000
    message = _fails(small, "submit", "MyTable", "-e", "local", "-r", restriction)
    assert "restriction" in message and len(message) < 1000


def test_a_working_directory_over_1024_characters(small: Project) -> None:
    deep = small.workdir
    while len(str(deep)) <= 1100:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    target = f"{small.workdir / 'my_analysis.py'}:MyTable"
    message = _fails(small, "submit", target, "-e", "local", cwd=deep)
    assert "characters long" in message


def test_a_module_that_exits_at_import(small: Project) -> None:
    (small.workdir / "exits.py").write_text("import sys\nimport my_analysis\nsys.exit(3)\n")
    message = _fails(small, "submit", "exits.MyTable", "-e", "local")
    assert "called sys.exit(3)" in message


@pytest.mark.usefixtures("slurm")
@pytest.mark.parametrize(("args", "words"), [
    (["--cpus", "64"], "64 CPUs per task, but partition 'debug' has at most 8 per node"),
    (["--mem", "64G"], "allows at most 8000 MB per node"),
    (["--gpus", "1"], "no GPUs per node"),
])
def test_resources_beyond_the_partition(small: Project, args: list[str], words: str) -> None:
    message = _fails(small, "submit", "MyTable", "-e", "slurm", *args)
    assert words in message and "--partition" in message


def test_doctor_fails_on_invalid_table_overrides(small: Project) -> None:
    (small.workdir / "djhpc.yaml").write_text(
        "modules: [my_analysis]\ntables:\n  MyTable: {mem: lots}\n")
    report = small.djhpc_json("doctor", expect=1)
    profile = next(c for c in report["checks"] if c["name"] == "profile")
    assert not profile["ok"] and "Invalid memory 'lots'" in profile["detail"]


def test_cancel_of_a_finished_run_says_so(small: Project) -> None:
    run_id = str(small.djhpc_json("submit", "MyTable", "-e", "local", "--wait")["run_id"])
    result = small.djhpc("cancel", run_id, "-y")
    assert result.returncode == 0 and "had already ended (done)" in result.stdout
    assert "Cancelled" not in result.stdout
    assert small.djhpc_json("status", run_id)["state"] == "done"


def test_retry_keeps_the_runs_chunk_size(project: Project) -> None:
    project.make_data("--animals", "1", "--sessions", "1", "--units", "4", "--empty-units", "4")
    first = project.djhpc_json("submit", "MyTable", "-e", "local", "--chunk-size", "1", "--wait",
                               expect=1)
    failed = first["status"]["keys"]["remaining"]
    assert failed >= 3 and first["chunks"] == first["keys"]
    again = project.djhpc_json("retry", str(first["run_id"]), "--wait", expect=1)
    assert again["chunks"] == failed and set(again["chunk_keys"]) == {1}


def test_make_kwargs_reach_make(project: Project) -> None:
    schema = f"{project.prefix}_kw"
    (project.workdir / "kw.py").write_text(f'''
import datajoint as dj
schema = dj.Schema("{schema}")

@schema
class Number(dj.Lookup):
    definition = """
    n : int
    """
    contents = [(1,), (2,), (3,)]

@schema
class Scaled(dj.Computed):
    definition = """
    -> Number
    ---
    value : int
    """
    def make(self, key, factor=1):
        self.insert1(dict(key, value=key["n"] * factor))
''')
    try:
        sub = project.djhpc_json("submit", "kw.Scaled", "-e", "local", "--wait",
                                 "--make-kwargs", '{"factor": 10}')
        assert sub["status"]["state"] == "done"
        values = project.python("import json, kw; "
                                "print(json.dumps(sorted(kw.Scaled().fetch('value').tolist())))")
        assert values == [10, 20, 30]
    finally:
        drop_schema(schema)


def test_run_dir_itself_is_created_private(small: Project) -> None:
    import os
    import stat

    assert not small.run_dir.exists()
    small.djhpc_json("submit", "MyTable", "-e", "debug", "-r", "unit_id = 1")
    assert stat.S_IMODE(os.stat(small.run_dir).st_mode) == 0o700


@pytest.mark.usefixtures("slurm")
def test_status_says_why_queued_tasks_wait(small: Project) -> None:
    # Slow keys: the run's later tasks are still waiting for the first when we look.
    sub = small.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "4",
                           "--max-parallel", "1", env=small.env(EXAMPLE_MAKE_SECONDS="10"))
    try:
        report = small.djhpc_json("status", str(sub["run_id"]))
        waiting = [c["pending_reason"] for c in report["chunks"] if c["pending_reason"]]
        assert waiting, report["chunks"]
        assert any("pending (JobArrayTaskLimit): the run's --max-parallel limit" in hint
                   for hint in report["hints"]), report["hints"]
        text = small.djhpc("status", str(sub["run_id"])).stdout
        assert "JobArrayTaskLimit" in text
    finally:
        small.djhpc("cancel", str(sub["run_id"]), "-y")
