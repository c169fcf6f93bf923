"""P5 task start: import + connect + claim of a chunk, inside a real task.

Measured in real tasks: `djhpc submit FILE.py:Target --tasks 5 --max-parallel 1
--wait` on the local Slurm (one task at a time, so none shares the CPU; the
local executor where there is no Slurm). The generated pipeline module, which
every task imports right after it has claimed its chunk, notes when its
process started and when the import began: that interval is the Python start,
submitit's launcher, importing djhpc and DataJoint, connecting, reading the run,
claiming the chunk (one UPDATE) and reading it back.

For the parts of that interval, a small harness (`task_start`, below) repeats
the same steps with a timestamp after each, in plain processes. When P4 ran
in the same session, its tasks' starts are reported too.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

from common import (
    BIN,
    Bench,
    Check,
    Outcome,
    child_env,
    clear_ledger,
    configure_env,
    connect,
    djhpc_context,
    fill_source,
    med,
    process_started,
    read_timings,
    record_run,
    reset_target,
    run_child,
    run_process,
    write_pipeline,
)

TASKS = 5


def task_start(ledger: str, run_id: int, chunk: int, workdir: str) -> dict[str, Any]:
    """What a task does before its first key, with a timestamp after each step."""
    import os
    import socket

    marks: list[tuple[str, float]] = [("process", process_started()),
                                      ("interpreter ready", time.time())]
    import submitit  # noqa: F401  (the launcher of every Slurm task imports it)

    marks.append(("import submitit", time.time()))
    from djhpc import worker  # unpickling the task imports this

    marks.append(("import djhpc.worker", time.time()))
    from djhpc import dj
    from djhpc.ledger import Ledger

    os.chdir(workdir)
    conn = dj.connection()
    marks.append(("import datajoint + connect", time.time()))
    book = Ledger(conn, ledger)
    run = book.run(run_id)
    id_sql = book.d.connection_id  # an expression, or a whole SELECT in older djhpc
    id_sql = id_sql if id_sql.lstrip().upper().startswith("SELECT") else f"SELECT {id_sql}"
    connection_id = int(dj.query(conn, id_sql).fetchone()[0])
    claimed = book.claim(run_id, chunk, job_id=worker.slurm_job_id(), host=socket.gethostname(),
                         pid=os.getpid(), connection_id=connection_id)
    book.chunk(run_id, chunk)
    marks.append(("read run + claim + read chunk", time.time()))
    from djhpc.target import Target

    Target.from_ref(run.target, run.paths).load()
    marks.append(("import the user's module (not counted)", time.time()))
    steps = {name: marks[i][1] - marks[i - 1][1] for i, (name, _) in enumerate(marks) if i}
    claim_done = dict(marks)["read run + claim + read chunk"]
    return {"claimed": claimed, "total_s": claim_done - marks[0][1], "steps_s": steps,
            "djhpc": worker.__file__}


def run(bench: Bench) -> Outcome:
    configure_env()
    from djhpc import lifecycle

    folder = bench.tmp / "p5"
    pipeline = write_pipeline(folder, "djhpc_bench_p5", bench.schema("p5"))
    pipeline.load()
    conn = connect()
    fill_source(conn, pipeline, 10 * TASKS)
    ledger = bench.schema("p5_ledger")
    env = child_env(XDG_CONFIG_HOME=str(folder / "xdg"), DJHPC_LEDGER_SCHEMA=ledger,
                    DJHPC_RUN_DIR=str(folder / "runs"))

    # The parts, in plain processes: each claims a queued chunk of a recorded run.
    ctx = djhpc_context(ledger, folder / "runs", executor="local")
    prepared = lifecycle.prepare(ctx, pipeline.target, [])
    harness_run, _ = record_run(ctx, prepared, chunk_size=10)
    harness = []
    for chunk in range(TASKS):
        value = run_child("p5_task_start:task_start",
                          {"ledger": ledger, "run_id": harness_run.run_id, "chunk": chunk,
                           "workdir": str(folder)}, env=env, cwd=folder).value
        assert value["claimed"], value
        harness.append(value)
        bench.log(f"  P5 harness {chunk}: {value['total_s']:.3f} s to claim")
    clear_ledger(conn, ledger)  # the harness's claimed chunks would hold the keys
    reset_target(conn, pipeline)

    # The real thing: a run of TASKS tasks, one at a time.
    slurm = shutil.which("sbatch") is not None and not subprocess.run(
        ["sinfo"], capture_output=True).returncode
    executor = ["--executor", "slurm", "--profile", "local"] if slurm else ["--executor", "local"]
    timing = folder / "timing"
    timing.mkdir()
    code, _out, err, _wall, _rss = run_process(
        [str(BIN / "djhpc"), "submit", pipeline.target, *executor, "--tasks", str(TASKS),
         "--max-parallel", "1", "--wait", "--json", "--yes"],
        env={**env, "DJHPC_BENCH_TIMING": str(timing)}, cwd=folder, timeout=1200)
    if code != 0:
        raise RuntimeError(f"djhpc submit exited {code}: {err[-2000:]}")
    conn.close()
    tasks = read_timings(timing)
    starts = [t["import"][0] - t["process"] for t in tasks]
    assert len(starts) == TASKS, starts
    for i, start in enumerate(starts):
        bench.log(f"  P5 task {i}: {start:.3f} s from process start to claimed")

    value = med(starts)
    where = "Slurm task" if slurm else "local task"
    steps = {name: round(med([r["steps_s"][name] for r in harness]), 4)
             for name in harness[0]["steps_s"]}
    p4_starts = bench.shared.get("p4_task_starts_s")
    checks = [Check("P5", "task start: import + connect + claim ≤ 1.5 s",
                    f"{value:.2f} s median in a {where} (max {max(starts):.2f} s)",
                    round(value, 3), 1.5)]
    details: dict[str, Any] = {
        "tasks": TASKS, "measured_in": where,
        "task_start_s": [round(x, 3) for x in starts],
        "harness_total_s": [round(r["total_s"], 3) for r in harness],
        "harness_median_steps_s": steps,
        "harness_djhpc": harness[0]["djhpc"],
        "note": "task_start_s: process start to the import of the user's module, which "
                "run_chunk does right after claiming; the harness repeats the steps in "
                "plain processes",
    }
    if p4_starts:
        ordered = sorted(p4_starts)
        details["p4_tasks"] = {
            "count": len(ordered), "median_s": round(ordered[len(ordered) // 2], 3),
            "max_s": round(ordered[-1], 3),
            "median_by_config": bench.shared.get("p4_task_starts_by_config"),
            "note": "the same interval in P4's tasks; up to 8 tasks at once on this "
                    "machine's 2 real cores share the CPU",
        }
    return Outcome("P5 task start", checks, details)
