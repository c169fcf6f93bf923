"""P7 time limit: 80 keys x 20 s in chunks of 12, with `--time 00:03:00` and a 30 s
signal delay, on the local Slurm's 8 slots.

A task can make about 7 keys in its 3 minutes, so no chunk fits in one task:
the run must finish by itself (tasks that stop before a key they cannot end,
continuation by the run's follow-up job) with `--wait` exiting 0, every key
made once, and little make() time thrown away on keys started too late.
"""

from __future__ import annotations

from collections import Counter

from adaptive_run import require_slurm, submit
from common import (
    Bench,
    Check,
    Outcome,
    child_env,
    configure_env,
    connect,
    fill_source,
    reset_target,
    write_pipeline,
)

KEYS, SECONDS, CHUNK, TIME, SIGNAL_DELAY = 80, 20.0, 12, "00:03:00", 30
LOST_LIMIT = 0.02


def run(bench: Bench) -> Outcome:
    require_slurm()
    configure_env()
    n = 24 if bench.quick else KEYS
    folder = bench.tmp / "p7"
    pipeline = write_pipeline(folder, "djhpc_bench_p7", bench.schema("p7"), sleep=SECONDS)
    pipeline.load()
    conn = connect()
    fill_source(conn, pipeline, n)
    reset_target(conn, pipeline)
    env = child_env(XDG_CONFIG_HOME=str(folder / "xdg"),
                    DJHPC_LEDGER_SCHEMA=bench.schema("p7_ledger"),
                    DJHPC_RUN_DIR=str(folder / "runs"), DJHPC_SIGNAL_DELAY=str(SIGNAL_DELAY),
                    DJHPC_HISTORY="false")
    flags = ["--max-parallel", "8", "--chunk-size", str(CHUNK), "--time", TIME]
    timed = submit(pipeline, folder, "p7", flags, env)
    conn.close()
    status = timed.result.get("status", {})
    made = Counter(round(s, 6) for s in timed.made())
    cut = timed.cut_short()
    lost = sum(min(end - begin, SECONDS) for begin, end in cut)
    share = lost / max(timed.make_s + lost, 1e-9)
    done = status.get("keys", {}).get("done")
    bench.log(f"  P7: exit {timed.code}, state {status.get('state')}, {done}/{n} keys in "
              f"{timed.wall_s:.0f} s, {status.get('attempts')} attempts; {len(cut)} makes cut "
              f"short ({lost:.0f} s, {share:.1%} of make time)")
    checks = [
        Check("P7", "time limit too short: `--wait` exits 0 with every key made (1 = yes)",
              f"exit {timed.code}, {status.get('state')}, {done}/{n} keys, "
              f"{status.get('attempts')} attempts",
              float(timed.code == 0 and done == n and status.get("state") == "done"), 1.0,
              higher_is_better=True),
        Check("P7'", f"make() time thrown away on keys started too late ≤ {LOST_LIMIT:.0%}",
              f"{lost:.0f} s of {timed.make_s + lost:.0f} s ({len(cut)} makes cut short)",
              round(share, 4), LOST_LIMIT),
    ]
    return Outcome("P7 time limit", checks, {
        "keys": n, "make_s": SECONDS, "chunk_size": CHUNK, "time": TIME,
        "signal_delay_s": SIGNAL_DELAY, "exit": timed.code, "state": status.get("state"),
        "attempts": status.get("attempts"), "escalations": status.get("escalations"),
        "command_wall_s": round(timed.wall_s, 1), "makes_ended": sum(made.values()),
        "cut_short": len(cut), "lost_s": round(lost, 1), "lost_share": round(share, 4),
        "task_processes": len(timed.tasks)})
