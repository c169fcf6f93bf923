"""Sizing from experience, through the real local Slurm, whose --mem is a real limit.

The local Slurm confines each task to its --mem with cgroups (scripts/local-slurm.sh),
as the clusters do, so a make() that needs more ends its task OUT_OF_MEMORY.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from djhpc import sizing

from .conftest import Project, q

pytestmark = pytest.mark.usefixtures("slurm")


def sacct_peak_mb(jobs: list[str], tasks: int) -> float:
    """The largest MaxRSS of these jobs' tasks, once sacct has every one's."""
    deadline = time.monotonic() + 90
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-j", ",".join(jobs), "--format=JobID,MaxRSS"],
                             capture_output=True, text=True).stdout
        peaks: dict[str, float] = {}
        for row in out.splitlines():
            job, _, rss = row.partition("|")
            if rss.strip() and "follow" not in job:
                task = job.split(".")[0]
                peaks[task] = max(peaks.get(task, 0.0), float(rss.rstrip("K")) / 1024)
        if len(peaks) >= tasks:
            return max(peaks.values())
        assert time.monotonic() < deadline, out
        time.sleep(2)


def test_local_slurm_ends_a_task_over_its_memory_out_of_memory(tmp_path: Any) -> None:
    script = tmp_path / "big.py"
    script.write_text("import numpy as np, time\n"
                      "a = np.ones(400 * 2**20, dtype=np.uint8)\ntime.sleep(3)\n")
    job = subprocess.run(["sbatch", "--parsable", "--mem=200M", "-t", "2", "-o", "/dev/null",
                          "--wrap", f"srun {sys.executable} {script}"], capture_output=True,
                         text=True, check=True).stdout.strip()
    deadline = time.monotonic() + 90
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-j", job, "--format=JobID,State"],
                             capture_output=True, text=True).stdout
        if f"{job}.0|OUT_OF_MEMORY" in out:
            break
        assert time.monotonic() < deadline, out
        time.sleep(1)


def test_a_second_submit_is_sized_from_the_first_run(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "6")  # 24 keys
    env = project.env(EXAMPLE_MAKE_SECONDS="0.4", EXAMPLE_MAKE_MB="150")
    fresh = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--dry-run", env=env)
    assert fresh["sizing"]["source"] == "profile" and fresh["sizing"]["runs"] == []
    first = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "3", "--mem", "1G",
                               "--wait", env=env)
    assert first["status"]["state"] == "done"
    peak = sacct_peak_mb(first["jobs"], tasks=3)
    project.djhpc_json("status", str(first["run_id"]), env=env)  # keeps Slurm's accounting

    history = project.djhpc_json("history", "MyTable", env=env)
    assert history["runs"] == [first["run_id"]] and history["keys_measured"] == 24
    assert history["tasks"] == 3 and history["enough"]

    plan = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--dry-run", env=env)
    learned = plan["sizing"]
    assert learned["source"] == "history" and learned["runs"] == [first["run_id"]]
    assert 0.4 <= learned["key_seconds"]["p50"] <= 0.4 * 1.3  # what make() took
    assert peak / 1.3 <= learned["max_rss_mb"] <= peak * 1.3  # what Slurm measured
    assert learned["from"] == {"mem": "history", "chunk_size": "history", "time": "history"}
    mem = sizing.learned_mem_mb(learned["max_rss_mb"])
    assert f"mem {mem / 1024:g}G" in plan["resources"] or f"mem {mem:g}M" in plan["resources"]
    assert mem < 1024  # closer to what a task uses than the first run's guess
    text = project.djhpc("submit", "MyTable", "-e", "slurm", "--dry-run", env=env).stdout
    assert "sizing: mem from history" in text
    table = project.djhpc_json("status", "MyTable", env=env)
    assert table["history"]["key_seconds"] == learned["key_seconds"]
    assert "history: make() p50" in project.djhpc("status", "MyTable", env=env).stdout

    flags = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--dry-run", "--mem", "2G",
                               "--time", "0:30:00", "--chunk-size", "5", env=env)
    assert flags["sizing"]["source"] == "flags" and "mem 2G" in flags["resources"]
    off = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--dry-run", "--no-history",
                             env=env)
    assert off["sizing"]["source"] == "profile" and "mem 512M" in off["resources"]  # the file's


def test_a_make_that_needs_more_memory_completes_after_an_escalation(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")  # 8 keys, 4 of them of unit 2
    env = project.env(EXAMPLE_MAKE_SECONDS="1", EXAMPLE_MAKE_MB="500", EXAMPLE_MAKE_MB_UNIT="2")
    out = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "2", "--mem", "400M",
                             "--wait", env=env)
    status = out["status"]
    assert status["state"] == "done" and status["keys"]["done"] == 8, status
    assert project.table_rows() == 8
    assert status["attempts"] == 2, status
    (raised,) = status["escalations"]
    assert (raised["reason"], raised["before"], raised["after"]) == (
        "out_of_memory", "400M", "800M")
    text = project.djhpc("status", str(out["run_id"]), env=env).stdout
    assert "out of memory at 400M → 800M (attempt 2)" in text
    # A retry would ask for what the escalation learned.
    (settings,) = project.sql(f"SELECT settings FROM {q(project.ledger)}.{q('run')}")[0]
    assert json.loads(settings)["resources"]["mem_mb"] == 800.0


def test_a_key_beyond_the_cap_is_an_error_naming_the_memory(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")  # 8 keys, 4 of them of unit 2
    env = project.env(EXAMPLE_MAKE_SECONDS="1", EXAMPLE_MAKE_MB="900", EXAMPLE_MAKE_MB_UNIT="2")
    out = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--chunk-size", "1", "--mem",
                             "400M", "--max-mem", "600M", "--wait", expect=1, env=env)
    status = out["status"]
    assert status["state"] == "failed" and status["keys"]["done"] == 4, status
    assert [e["after"] for e in status["escalations"]] == ["600M"]
    groups = project.djhpc_json("errors", str(out["run_id"]), env=env)["groups"]
    (group,) = [g for g in groups if g["message"].startswith("Out of memory")]
    assert group["count"] == 4 and "more than 600M" in group["example"]
    assert {k["unit_id"] for k in group["keys"]} == {2}
