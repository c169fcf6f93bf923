"""No key is made twice and none is stranded, under the faults that broke that before.

Each test counts how often a key's make() starts (the example's EXAMPLE_MAKE_LOG).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BIN, POSTGRES, Project, drop_schema, q
from .test_lifecycle import chunks, wait_for


def makes(log: Path) -> list[tuple[str, int]]:
    """Each make() the example started: (its key, the process that ran it)."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [(json.dumps(m["key"], sort_keys=True), m["pid"]) for m in map(json.loads, lines)]


def latest_run(project: Project) -> int | None:
    try:
        return project.sql(f"SELECT MAX(run_id) FROM {q(project.ledger)}.{q('run')}")[0][0]
    except Exception:  # no ledger yet
        return None


@pytest.mark.once  # 90 s of one slow key; djhpc and Slurm alone decide it
@pytest.mark.usefixtures("slurm")
def test_a_long_make_whose_connection_drops_is_never_lost(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "1")
    log = project.tmp / "makes.log"
    env = project.env(EXAMPLE_MAKE_SECONDS="75", EXAMPLE_MAKE_LOG=str(log))
    one_key = ("-r", "animal_name = 26230")
    waiting = subprocess.Popen(
        [str(BIN / "djhpc"), "submit", "MyTable", "-e", "slurm", *one_key, "--wait", "--json"],
        cwd=project.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = wait_for(lambda: latest_run(project), timeout=60)
        victim = wait_for(lambda: next((c for c in chunks(project, run_id)
                                        if c["state"] == "running"), None), timeout=120)
        project.sql(("SELECT pg_terminate_backend({})" if POSTGRES else "KILL {}")
                    .format(int(victim["connection_id"])))
        time.sleep(66)  # silent for more than a minute, its connection gone, make() running
        report = project.djhpc_json("status", str(run_id), env=env)
        assert [c["state"] for c in report["chunks"]] == ["running"], report
        again = project.djhpc_json("submit", "MyTable", "-e", "slurm", *one_key, "--dry-run",
                                   env=env)
        assert again["keys"] == 0  # held by the run (and reserved in DataJoint's jobs table)
        out, err = waiting.communicate(timeout=180)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"]["state"] == "done"
    # One task made the key. If the connection dropped inside the key's transaction,
    # that task rolled back and made it again itself: a retry, not a second maker.
    assert len({pid for _, pid in makes(log)}) == 1 and project.table_rows() == 1


PIECES = """
import os, time
import datajoint as dj
schema = dj.Schema("{schema}")

@schema
class Piece(dj.Manual):
    definition = "piece : int"

@schema
class Cut(dj.Computed):
    definition = "-> Piece"

    def make(self, key):
        with open(os.environ["EXAMPLE_MAKE_LOG"], "a") as log:
            log.write(str(key["piece"]) + "\\n")
        stuck = os.environ["EXAMPLE_MAKE_LOG"] + ".stuck"
        # Only the array task whose job id is the array's own outlives its time limit.
        if os.environ.get("SLURM_JOB_ID") == os.environ.get("SLURM_ARRAY_JOB_ID"):
            open(stuck, "w").close()
            time.sleep(600)
        # Tasks pull chunks: a sibling done before the stuck task has started would take
        # the key it is meant to hold. So the siblings end only once it holds one.
        waited = time.monotonic()
        while not os.path.exists(stuck) and time.monotonic() - waited < 20:
            time.sleep(0.5)
        self.insert1(key)
"""


@pytest.fixture
def pieces(project: Project) -> Iterator[Project]:
    schema = f"{project.prefix}_pieces"
    (project.workdir / "pieces.py").write_text(PIECES.format(schema=schema))
    project.python("import json, pieces; pieces.Piece.insert([(i,) for i in range(4)]); "
                   "print(json.dumps(0))")
    yield project
    drop_schema(schema)


def sacct_states(array: str) -> dict[str, list[str]]:
    """Every record of every task of the array (-D: requeued runs too), by task."""
    out = subprocess.run(["sacct", "-D", "-X", "-P", "-n", "-j", array,
                          "--format=JobID,JobIDRaw,State"], capture_output=True, text=True,
                         check=True).stdout
    states: dict[str, list[str]] = {}
    for line in out.splitlines():
        job, raw, state = line.split("|")
        states.setdefault(f"{job}|{raw}", []).append(state.split()[0])
    return states


@pytest.mark.once  # five minutes of Slurm's clock; nothing in it depends on DataJoint
@pytest.mark.usefixtures("slurm")
def test_the_task_holding_the_arrays_own_id_requeues_only_itself(pieces: Project) -> None:
    log = pieces.tmp / "makes.log"
    # Requeues alone: no follow-up job giving the stuck key more time or going on with it.
    env = pieces.env(EXAMPLE_MAKE_LOG=str(log), DJHPC_REQUEUE="1", DJHPC_MAX_ESCALATIONS="0",
                     DJHPC_MAX_CONTINUATIONS="0")
    # Three minutes: Slurm warns 90 s before the end, but may warn up to 60 s early
    # (sbatch(1), --signal), and the siblings must have ended their keys by then.
    out = pieces.djhpc_json("submit", "pieces.Cut", "-e", "slurm", "--chunk-size", "1",
                            "--time", "3", env=env)
    (array,) = out["jobs"]
    report = wait_for(lambda: (r := pieces.djhpc_json("status", str(out["run_id"]), env=env))
                      ["state"] not in ("queued", "running") and r, timeout=720, every=3)
    states = sacct_states(array)
    own = [k for k in states if k.split("|")[1] == array]
    assert len(own) == 1, states
    for task, seen in states.items():
        if task in own:
            assert seen.count("REQUEUED") == 1, states  # by itself, once (DJHPC_REQUEUE=1)
        else:
            assert "REQUEUED" not in seen and seen[-1] == "COMPLETED", states
    made = log.read_text().splitlines()  # the piece of each make()
    siblings = [m for m in made if made.count(m) == 1]
    history = pieces.djhpc("errors", str(out["run_id"]), env=env).stdout
    assert len(siblings) == 3, (made, history)  # each sibling's key made once, never run again
    assert report["keys"]["done"] == 3 and report["state"] == "incomplete"
    assert [c["state"] for c in report["chunks"]].count("interrupted") == 1, report


@pytest.mark.once  # djhpc and Slurm alone
@pytest.mark.usefixtures("slurm")
def test_ctrl_c_during_a_multi_array_submit_leaves_nothing_running(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "3")  # 12 keys: 12 arrays of one task
    slow = project.tmp / "slowbin"
    slow.mkdir()
    (slow / "sbatch").write_text("#!/bin/sh\nsleep 2\nexec /usr/bin/sbatch \"$@\"\n")
    (slow / "sbatch").chmod(0o755)
    env = project.env(PATH=f"{slow}:{BIN}:/usr/bin:/bin", EXAMPLE_MAKE_SECONDS="60",
                      DJHPC_MAX_ARRAY_SIZE="1")
    # Its own session, so that SIGINT reaches it and its sbatch as a terminal's Ctrl-C would.
    submit = subprocess.Popen([str(BIN / "djhpc"), "submit", "MyTable", "-e", "slurm",
                               "--chunk-size", "1", "-y"], cwd=project.workdir, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        def accepted() -> list[str]:
            try:
                return [str(c["job_id"]) for c in chunks(project, 1) if c["job_id"]]
            except Exception:  # no ledger yet
                return []

        jobs = wait_for(lambda: len(accepted()) >= 3 and accepted(), timeout=120)
        os.killpg(submit.pid, signal.SIGINT)
        _, err = submit.communicate(timeout=60)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
    assert submit.returncode == 130, err
    assert project.ledger_runs() == 0  # the run is gone...
    alive = subprocess.run(["squeue", "-h", "-j", ",".join(jobs), "-o", "%i %T"],
                           capture_output=True, text=True).stdout.split()
    assert not [s for s in alive if s in ("PENDING", "RUNNING")], alive  # ...and so are its arrays
    assert project.table_rows() == 0


def test_two_ledgers_and_datajoints_own_workers_make_every_key_once(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "4")  # 16 keys
    log = project.tmp / "makes.log"
    env = project.env(EXAMPLE_MAKE_SECONDS="0.5", EXAMPLE_MAKE_LOG=str(log))
    other = project.env(EXAMPLE_MAKE_SECONDS="0.5", EXAMPLE_MAKE_LOG=str(log),
                        DJHPC_LEDGER_SCHEMA=f"{project.prefix}_ledger2")
    submit = [str(BIN / "djhpc"), "submit", "MyTable", "-e", "local", "--tasks", "2", "--wait",
              "--json"]
    lab_worker = ("import my_analysis as m\n"
                  "m.MyTable.populate(reserve_jobs=True, suppress_errors=True)\n")
    # DataJoint 2.x races on fresh schemas' lineage when several processes import them
    # first at once (its own bug, not the one under test); a dry run writes nothing and
    # settles it, as a user's first look at the plan would.
    assert project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")["keys"] == 16
    everyone = [
        subprocess.Popen(submit, cwd=project.workdir, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True),
        subprocess.Popen(submit, cwd=project.workdir, env=other, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-c", lab_worker], cwd=project.workdir, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    try:
        results = [(p.communicate(timeout=300), p.returncode) for p in everyone]
        for (_, err), code in results:
            assert code in (0, 1), err  # 1: a run whose keys others made meanwhile
        made = [key for key, _ in makes(log)]
        assert project.table_rows() == 16
        assert len(made) == len(set(made)) == 16, sorted(made)  # each key's make() once
    finally:
        drop_schema(project.prefix + '_ledger2')


def test_planning_leaves_out_keys_reserved_by_datajoints_own_workers(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")  # 8 keys
    # A lab worker holds one key, the way populate(reserve_jobs=True) reserves it.
    project.python(
        "import json, datajoint as dj, my_analysis as m\n"
        "key = (m.MyTable.key_source - m.MyTable).fetch('KEY', limit=1)[0]\n"
        "if dj.__version__.startswith('0.'):\n"
        "    m.schema.jobs.reserve(m.MyTable.table_name, key)\n"
        "else:\n"
        "    m.MyTable.jobs.refresh(); assert m.MyTable.jobs.reserve(key)\n"
        "print(json.dumps(0))")
    plan = project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")
    assert plan["keys"] == 7
