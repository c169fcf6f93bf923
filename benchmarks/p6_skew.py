"""P6 skewed keys: 400 keys whose first tenth (in key order, as recent sessions often
are) take 3 s and the rest 0.2 s, on the local Slurm's 8 slots.

The ideal is the run's total make() time spread evenly over the 8 slots. The
makespan runs from the first task's start to the last key's end (the command's
own start, planning and sbatch, are P2's and P5's). Measured with one chunk per
slot (`--tasks 8`: the first chunk holds every slow key, so idle tasks must split
it) and at the default chunking (`--max-parallel 8` only).
"""

from __future__ import annotations

from typing import Any

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

KEYS, SLOW_KEYS, SLOW_S, FAST_S, SLOTS = 400, 40, 3.0, 0.2, 8
LIMIT = 1.35


def run(bench: Bench) -> Outcome:
    require_slurm()
    configure_env()
    folder = bench.tmp / "p6"
    pipeline = write_pipeline(folder, "djhpc_bench_p6", bench.schema("p6"), sleep=FAST_S)
    pipeline.load()
    conn = connect()
    fill_source(conn, pipeline, KEYS)
    env = child_env(XDG_CONFIG_HOME=str(folder / "xdg"),
                    DJHPC_LEDGER_SCHEMA=bench.schema("p6_ledger"),
                    DJHPC_RUN_DIR=str(folder / "runs"), BENCH_SLOW=f"{SLOW_KEYS}:{SLOW_S}",
                    DJHPC_HISTORY="false")  # each configuration starts from nothing learned
    points: list[dict[str, Any]] = []
    checks = []
    for label, flags in (("tasks-8", ["--max-parallel", str(SLOTS), "--tasks", str(SLOTS)]),
                         ("default", ["--max-parallel", str(SLOTS)])):
        reset_target(conn, pipeline)
        timed = submit(pipeline, folder, label, flags, env)
        if timed.code != 0:
            raise RuntimeError(f"djhpc submit ({label}) exited {timed.code}: {timed.stderr[-2000:]}")
        status = timed.result["status"]
        assert status["keys"]["done"] == KEYS, status["keys"]
        ideal = timed.make_s / SLOTS
        ratio = timed.makespan_s / ideal
        splits = sum(1 for c in status["chunks"] if c.get("split_from") is not None)
        bench.log(f"  P6 {label:8s}: makespan {timed.makespan_s:.1f} s, ideal {ideal:.1f} s "
                  f"({ratio:.2f}x); {len(status['chunks'])} chunks, {splits} split off; "
                  f"command {timed.wall_s:.1f} s")
        points.append({"config": label, "flags": flags, "makespan_s": round(timed.makespan_s, 2),
                       "ideal_s": round(ideal, 2), "ratio": round(ratio, 3),
                       "command_wall_s": round(timed.wall_s, 2), "chunks": len(status["chunks"]),
                       "splits": splits, "made": len(timed.made()),
                       "task_processes": len(timed.tasks)})
        checks.append(Check(f"P6{'' if label == 'tasks-8' else chr(39)}",
                            f"skewed keys, {' '.join(flags)}: makespan ≤ {LIMIT}x ideal",
                            f"{timed.makespan_s:.1f} s vs {ideal:.1f} s ({splits} splits)",
                            round(ratio, 3), LIMIT))
    conn.close()
    return Outcome("P6 skewed keys", checks, {
        "keys": KEYS, "slow_keys": SLOW_KEYS, "slow_s": SLOW_S, "fast_s": FAST_S,
        "slots": SLOTS, "points": points,
        "note": "ideal: the run's make() time / slots; makespan: first task start to last "
                "key end"})
