"""P1 per-key overhead: a trivial make() (one insert1) over N keys, three ways.

- `direct`: DataJoint's own `Target.populate()`;
- `reserve`: DataJoint's `Target.populate(reserve_jobs=True)` (its jobs table,
  refreshed by that call, as a user would run it);
- `djhpc`: a djhpc worker (`djhpc.worker.run_chunk`) on one chunk holding the
  same N keys, recorded in a ledger by `Ledger.record_run` (not timed: that is
  planning, see P2).

All three run in this process on DataJoint's one shared connection, so the
server's per-session `Questions` counter on that connection counts exactly
their statements, whatever other clients do. Modes alternate, each repetition
starting with a different one; a warm-up round is not counted.
"""

from __future__ import annotations

import cProfile
import os
import pstats
from typing import Any

from common import (
    Bench,
    Check,
    Outcome,
    Statements,
    clear_ledger,
    configure_env,
    connect,
    djhpc_context,
    fill_source,
    med,
    record_run,
    reset_target,
    rotated,
    sql,
    stopwatch,
    write_pipeline,
)

MODES = ("direct", "reserve", "djhpc")


def _split(profiler: cProfile.Profile, n: int) -> dict[str, float]:
    """A worker's time (under cProfile, so slower) split into DataJoint's per-key step and the rest."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(name: str, file_end: str) -> float:
        return float(sum(v[3] for (f, _l, fn), v in stats.items()
                         if fn == name and f.endswith(file_end)))

    total = cumulative("run_chunk", "worker.py")
    populate1 = cumulative("_populate1", "autopopulate.py")
    make = cumulative("make", "djhpc_bench_p1.py")
    return {"run_chunk_s": round(total, 4), "datajoint_populate1_s": round(populate1, 4),
            "make_s": round(make, 4),
            "share_in_datajoint_populate1": round(populate1 / total, 3) if total else 0.0,
            "djhpc_own_us_per_key": round(1e6 * (total - populate1) / n, 1)}


def run(bench: Bench) -> Outcome:
    n = 500 if bench.quick else 2000
    reps = 3 if bench.quick else 7
    configure_env()
    from djhpc import lifecycle, worker

    folder = bench.tmp / "p1"
    pipeline = write_pipeline(folder, "djhpc_bench_p1", bench.schema("p1"))
    module = pipeline.load()
    conn = connect()
    fill_source(conn, pipeline, n)
    ledger_schema = bench.schema("p1_ledger")
    ctx = djhpc_context(ledger_schema, folder / "runs")
    prepared = lifecycle.prepare(ctx, pipeline.target, [])
    table = module.Target()
    counter = Statements(table.connection)

    def populate_direct() -> None:
        table.populate()

    def populate_reserved() -> None:
        table.populate(reserve_jobs=True)

    def djhpc_worker(profiler: cProfile.Profile | None = None) -> None:
        with stopwatch() as recorded:
            run_record, _ = record_run(ctx, prepared, chunk_size=n)  # one chunk of all keys
        record_s.append(recorded[0])
        task = worker.ChunkTask(ledger_schema=ledger_schema, run_id=run_record.run_id, chunk=0,
                                workdir=str(folder))
        cwd = os.getcwd()
        try:
            if profiler is not None:
                outcome = profiler.runcall(worker.run_chunk, task)
                return
            with counter.measure(), stopwatch() as took:
                outcome = worker.run_chunk(task)
        finally:
            os.chdir(cwd)  # the worker moves to the run's workdir
        assert outcome["done"] == n, outcome
        timings["djhpc"].append(took[0])
        statements["djhpc"].append(counter.count)

    timings: dict[str, list[float]] = {m: [] for m in MODES}
    record_s: list[float] = []
    statements: dict[str, list[int]] = {m: [] for m in MODES}
    actions = {"direct": populate_direct, "reserve": populate_reserved}
    for rep in range(-1, reps):  # -1: warm-up (creates the jobs table, fills caches)
        for mode in rotated(MODES, max(rep, 0)):
            reset_target(conn, pipeline)
            if mode == "reserve" and rep >= 0:  # the warm-up declared the jobs table
                sql(conn, f"DELETE FROM {table.jobs.full_table_name}")
            if mode == "djhpc":
                clear_ledger(conn, ledger_schema)
                djhpc_worker()
            else:
                with counter.measure(), stopwatch() as took:
                    actions[mode]()
                timings[mode].append(took[0])
                statements[mode].append(counter.count)
            made = int(sql(conn, f"SELECT COUNT(*) FROM {pipeline.target_table}")[0][0])
            assert made == n, f"{mode}: {made} of {n} keys made"
            if rep < 0:
                timings[mode].clear()
                statements[mode].clear()
            else:
                bench.log(f"  P1 rep {rep}: {mode:8s} {1000 * timings[mode][-1] / n:.3f} ms/key, "
                          f"{statements[mode][-1] / n:.2f} statements/key")
    # One more worker run under cProfile: how much of it is DataJoint's own per-key step.
    reset_target(conn, pipeline)
    clear_ledger(conn, ledger_schema)
    profiler = cProfile.Profile()
    djhpc_worker(profiler)
    conn.close()
    profile = _split(profiler, n)

    ms = {m: 1000 * med(timings[m]) / n for m in MODES}
    best = {m: 1000 * min(timings[m]) / n for m in MODES}
    per_key = {m: med(statements[m]) / n for m in MODES}
    ratio = ms["direct"] / ms["djhpc"]
    ratio_reserve = ms["direct"] / ms["reserve"]
    check = Check(
        "P1", "djhpc worker throughput ≥ 0.9x direct populate()",
        f"{ms['djhpc']:.3f} vs {ms['direct']:.3f} ms/key; "
        f"{per_key['djhpc']:.2f} vs {per_key['direct']:.2f} statements/key",
        round(ratio, 3), 0.9, higher_is_better=True)
    details: dict[str, Any] = {
        "keys": n, "repetitions": reps,
        "ms_per_key_median": {m: round(v, 4) for m, v in ms.items()},
        "ms_per_key_best": {m: round(v, 4) for m, v in best.items()},
        "statements_per_key": {m: round(v, 3) for m, v in per_key.items()},
        "statements_total": statements,
        "seconds": {m: [round(t, 4) for t in timings[m]] for m in MODES},
        "throughput_vs_direct": {"djhpc": round(ratio, 3), "reserve": round(ratio_reserve, 3),
                                 "djhpc_vs_reserve": round(ms["reserve"] / ms["djhpc"], 3)},
        "djhpc_record_run_s_median": round(med(record_s[1:]), 4),
        "djhpc_worker_profile": profile,
        "statement_counter": "SHOW SESSION STATUS LIKE 'Questions' on DataJoint's connection",
    }
    return Outcome("P1 per-key overhead", [check], details)
