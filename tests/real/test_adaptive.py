"""Tasks pull chunks no task has started, and the run's surplus tasks are cancelled."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from djhpc.executors.slurm_tools import expand_array_ids

from .conftest import Project, q


def makes(log: Path) -> list[str]:
    return [json.dumps(json.loads(line)["key"], sort_keys=True)
            for line in log.read_text().splitlines()]


def chunk_rows(project: Project, run_id: int) -> list[dict[str, Any]]:
    rows = project.sql(f"SELECT chunk, job_id, pid, state FROM {q(project.ledger)}.{q('chunk')} "
                       f"WHERE run_id = {int(run_id)} ORDER BY chunk")
    return [dict(zip(("chunk", "job_id", "pid", "state"), r, strict=True)) for r in rows]


def final_states(array: str, tasks: int) -> dict[str, str]:
    """Each task's state as sacct has it, once every one of them has ended."""
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", array, "--format=JobID,State"],
                             capture_output=True, text=True).stdout
        # Tasks cancelled before they started stay one row ("410_[2-15%2]").
        states = {task: state for line in out.splitlines() if "|" in line
                  for task in expand_array_ids(line.split("|")[0])
                  for state in [line.split("|")[1]]}
        if len(states) >= tasks and not {"PENDING", "RUNNING"} & set(states.values()):
            return states
        assert time.monotonic() < deadline, out
        time.sleep(1)


def pulled_run(project: Project, executor: str, seconds: str) -> tuple[Any, dict[str, str]]:
    """16 keys in chunks of one, two tasks at once, to the end; each key's make() once."""
    project.make_data("--sessions", "1", "--units", "4")  # 16 keys
    log = project.tmp / "makes.log"
    env = project.env(EXAMPLE_MAKE_SECONDS=seconds, EXAMPLE_MAKE_LOG=str(log))
    out = project.djhpc_json("submit", "MyTable", "-e", executor, "--chunk-size", "1",
                             "--max-parallel", "2", "--wait", env=env)
    assert out["status"]["state"] == "done" and project.table_rows() == 16
    made = makes(log)
    assert len(made) == len(set(made)) == 16  # each key's make() once
    return out, env


@pytest.mark.usefixtures("slurm")
def test_tasks_pull_chunks_and_cancel_the_tasks_not_needed(project: Project) -> None:
    out, env = pulled_run(project, "slurm", "0.5")
    (array,) = out["jobs"]
    rows = chunk_rows(project, out["run_id"])
    assert {r["state"] for r in rows} == {"done"}
    makers = {r["job_id"] for r in rows}
    assert makers <= {f"{array}_0", f"{array}_1"}  # the two tasks let run made every chunk
    assert any(r["job_id"] != f"{array}_{r['chunk']}" for r in rows)
    states = final_states(array, 16)
    cancelled = [t for t, s in states.items() if s.startswith("CANCELLED")]
    assert len(cancelled) >= 12, states  # never started: cancelled as not needed
    assert all(states[m] == "COMPLETED" for m in makers), states
    status = project.djhpc_json("status", str(out["run_id"]), env=env)
    assert status["state"] == "done" and "failed" not in status["tasks"], status


def test_the_local_executor_pulls_chunks_the_same_way(project: Project) -> None:
    out, env = pulled_run(project, "local", "0.3")
    pids = {r["pid"] for r in chunk_rows(project, out["run_id"])}
    assert len(pids) <= 3, pids  # two processes (a third if one started as the other ended)
    logs = project.djhpc("logs", str(out["run_id"]), "--chunk", "15", env=env)
    assert logs.returncode == 0 and "task-" in logs.stderr


STEPS = """
import json, os, time
import datajoint as dj
schema = dj.Schema("{schema}")

@schema
class Step(dj.Manual):
    definition = "step : int"

@schema
class Cut(dj.Computed):
    definition = "-> Step"

    def make(self, key):
        with open(os.environ["EXAMPLE_MAKE_LOG"], "a") as log:
            log.write(json.dumps({{"key": key, "pid": os.getpid()}}) + "\\n")
        time.sleep(3 if key["step"] < 6 else 0.1)  # the first chunk's keys are the slow ones
        self.insert1(key)
"""


@pytest.mark.usefixtures("slurm")
def test_an_idle_task_splits_a_straggling_chunk(project: Project) -> None:
    from tests.real.conftest import drop_schema

    schema = f"{project.prefix}_steps"
    (project.workdir / "steps.py").write_text(STEPS.format(schema=schema))
    try:
        project.python("import json, steps; steps.Step.insert([(i,) for i in range(12)]); "
                       "print(json.dumps(0))")
        log = project.tmp / "makes.log"
        env = project.env(EXAMPLE_MAKE_LOG=str(log))
        # Two chunks of six keys: chunk 0 takes 18 s, chunk 1 under a second.
        out = project.djhpc_json("submit", "steps.Cut", "-e", "slurm", "--tasks", "2", "--wait",
                                 env=env)
        assert out["status"]["state"] == "done", out
        made = [json.loads(line) for line in log.read_text().splitlines()]
        steps = sorted(m["key"]["step"] for m in made)
        assert steps == list(range(12)), steps  # each key made once
        status = project.djhpc_json("status", str(out["run_id"]), env=env)
        chunks = status["chunks"]
        split = [c for c in chunks if c["split_from"] is not None]
        assert split, chunks  # the idle task took keys off the straggler...
        assert {c["state"] for c in chunks} == {"done"} and status["keys"]["done"] == 12
        owner = next(m["pid"] for m in made if m["key"]["step"] == 0)
        by_other = [m["key"]["step"] for m in made if m["pid"] != owner and m["key"]["step"] < 6]
        assert by_other, made  # ...and made some of the slow keys itself
        assert sum(c["keys"] for c in chunks) == 12  # the halves still cover each key once
        assert 2.5 < status["key_seconds"]["max"] < 10 and status["key_seconds"]["p50"] < 3.5
        text = project.djhpc("status", str(out["run_id"]), env=env).stdout
        assert f"(split of {split[0]['split_from']})" in text and "make() p50" in text
        left = project.python("import json, steps; from djhpc import dj; "
                              "print(json.dumps(len(dj.reserved_keys(steps.Cut()))))")
        assert left == 0  # no reservation left behind in DataJoint's jobs table
    finally:
        drop_schema(schema)
