"""P2 planning: N pending keys of a 3-attribute key (varchar, date, int).

Three measurements, each in a fresh child process (its peak RSS is its own),
timed inside the child after the imports, alternating across repetitions:

- `bare`: DataJoint's own pending-key query, `(key_source - Target.proj()).keys()`
  (what `populate()` runs first);
- `dry_run`: `lifecycle.prepare` + `lifecycle.dry_run`, what `djhpc submit --dry-run` does;
- `record`: `lifecycle.prepare` + `Ledger.record_run` with djhpc's default cluster
  plan (about 100 tasks, ≤ 1,000 keys per chunk), what `djhpc submit` does
  before it hands the run to an executor.

Three ledgers: `fresh` (the table's first run: no earlier run in the ledger),
`history` (the ledger holds one earlier, finished run of the same N keys, as
after any earlier submit of the table) and `active` (an earlier run of half the
keys is still queued: its keys are held and left out of the new plan). The
fresh case alternates over several repetitions; the others run once each,
with a time limit.

The whole `djhpc submit --dry-run --json` command is also run once per
repetition, as a user would, for its wall time and peak memory.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from common import (
    BIN,
    Bench,
    Check,
    ChildResult,
    Outcome,
    TimedOut,
    child_env,
    clear_ledger,
    configure_env,
    connect,
    djhpc_context,
    fill_source,
    kill_queries,
    med,
    q,
    record_run,
    rotated,
    run_child,
    run_process,
    sql,
    stopwatch,
    write_pipeline,
)

STEPS = ("bare", "dry_run", "record")


# --- what the children run ----------------------------------------------------------


def _load(path: str) -> Any:
    import importlib
    import sys

    configure_env()
    folder = str(Path(path).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(Path(path).stem)


def bare(path: str) -> dict[str, Any]:
    module = _load(path)
    table = module.Target()
    with stopwatch() as took:
        pending = table.key_source - table.proj()
        keys = pending.keys() if hasattr(pending, "keys") else pending.fetch("KEY")
    return {"seconds": took[0], "keys": len(keys)}


def _prepared(path: str, ledger: str, run_dir: str, executor: str,
              restrictions: list[str]) -> tuple[Any, Any, float]:
    from djhpc import lifecycle

    _load(path)
    ctx = djhpc_context(ledger, Path(run_dir), executor=executor)
    started = time.perf_counter()
    prepared = lifecycle.prepare(ctx, f"{path}:Target", restrictions)
    return ctx, prepared, time.perf_counter() - started


def dry_run(path: str, ledger: str, run_dir: str, executor: str,
            restrictions: list[str] | None = None) -> dict[str, Any]:
    from djhpc import lifecycle

    ctx, prepared, prepare_s = _prepared(path, ledger, run_dir, executor, restrictions or [])
    with stopwatch() as took:
        submission = lifecycle.dry_run(ctx, prepared)
    return {"seconds": prepare_s + took[0], "prepare_s": prepare_s, "dry_run_s": took[0],
            "keys": submission.keys, "held": submission.held, "chunks": len(submission.chunks)}


def record(path: str, ledger: str, run_dir: str, executor: str,
           restrictions: list[str] | None = None) -> dict[str, Any]:
    ctx, prepared, prepare_s = _prepared(path, ledger, run_dir, executor, restrictions or [])
    with stopwatch() as took:
        run, held = record_run(ctx, prepared)
    chunks = len(ctx.ledger.chunks(run.run_id))
    return {"seconds": prepare_s + took[0], "prepare_s": prepare_s, "record_s": took[0],
            "keys": run.n_keys, "held": held, "chunks": chunks}


# --- the benchmark --------------------------------------------------------------------


def run(bench: Bench) -> Outcome:
    n = 100_000 if bench.quick else 1_000_000
    reps = 3
    configure_env()
    folder = bench.tmp / "p2"
    pipeline = write_pipeline(folder, "djhpc_bench_p2", bench.schema("p2"))
    pipeline.load()
    conn = connect()
    with stopwatch() as filled:
        fill_source(conn, pipeline, n)
    bench.log(f"  P2 {n} source rows in {filled[0]:.1f} s")
    ledger = bench.schema("p2_ledger")
    run_dir = folder / "runs"
    djhpc_context(ledger, run_dir)  # creates the ledger schema, as the first submit would
    executor = "slurm" if shutil.which("sbatch") else "local"
    args: dict[str, Any] = {"path": str(pipeline.path)}
    djhpc_args = {**args, "ledger": ledger, "run_dir": str(run_dir), "executor": executor}
    env = child_env(XDG_CONFIG_HOME=str(folder / "xdg"))

    def child(step: str, timeout: float = 3600, **more: Any) -> ChildResult:
        try:
            result = run_child(f"p2_planning:{step}",
                               args if step == "bare" else {**djhpc_args, **more},
                               env=env, cwd=folder, timeout=timeout)
        except TimedOut:
            kill_queries(ledger)  # the server would go on with the killed child's query
            raise
        return result

    seconds: dict[str, list[float]] = {s: [] for s in (*STEPS, "cli_dry_run")}
    rss: dict[str, list[float]] = {s: [] for s in (*STEPS, "cli_dry_run")}
    extra: dict[str, list[dict[str, Any]]] = {s: [] for s in STEPS}
    first_record: dict[str, Any] = {}
    for rep in range(-1, reps):  # -1: warm-up; its `record` creates the keys table
        for step in rotated(STEPS, max(rep, 0)):
            clear_ledger(conn, ledger)  # a fresh ledger: no earlier run of the table
            result = child(step)
            assert result.value["keys"] == n, (step, result.value)
            if rep < 0:
                if step == "record":
                    first_record = {**result.value, "max_rss_mb": round(result.max_rss_mb)}
                continue
            seconds[step].append(result.value["seconds"])
            rss[step].append(result.max_rss_mb)
            extra[step].append(result.value)
            bench.log(f"  P2 rep {rep}: {step:8s} {result.value['seconds']:.2f} s, "
                      f"peak {result.max_rss_mb:.0f} MB")
        if rep >= 0:
            clear_ledger(conn, ledger)
            code, _out, err, wall, peak = run_process(
                [str(BIN / "djhpc"), "submit", pipeline.target, "--dry-run", "--json",
                 "--executor", executor],
                env={**env, "DJHPC_LEDGER_SCHEMA": ledger, "DJHPC_RUN_DIR": str(run_dir)},
                cwd=folder)
            assert code == 0, err
            seconds["cli_dry_run"].append(wall)
            rss["cli_dry_run"].append(peak)
            bench.log(f"  P2 rep {rep}: cli dry-run {wall:.2f} s wall, peak {peak:.0f} MB")
    m = {s: med(v) for s, v in seconds.items()}

    # Other ledgers: `history`, one earlier run of all the keys, finished (it holds
    # nothing); `active`, an earlier run of half the keys (unit < 50) still queued:
    # the new plan must leave those out.
    limit = max(60.0, 25 * m["bare"])
    scenarios: dict[str, dict[str, Any]] = {"history": {}, "active": {}}
    for scenario, step in [(s, t) for s in scenarios for t in ("dry_run", "record")]:
        clear_ledger(conn, ledger)
        child("record", **({"restrictions": ["unit < 50"]} if scenario == "active" else {}))
        if scenario == "history":
            sql(conn, f"UPDATE {q(ledger)}.{q('chunk')} SET state='done'")
        try:
            result = child(step, timeout=limit)
            entry = {"seconds": round(result.value["seconds"], 3), "keys": result.value["keys"],
                     "held": result.value["held"], "peak_rss_mb": round(result.max_rss_mb),
                     "timed_out": False}
            assert entry["keys"] + entry["held"] == n, (scenario, step, entry)
        except TimedOut as stopped:
            entry = {"seconds": round(stopped.seconds, 1), "timed_out": True}
        scenarios[scenario][step] = entry
        bench.log(f"  P2 {scenario}: {step:8s} {entry['seconds']:.2f} s"
                  + (" (stopped at the time limit)" if entry["timed_out"] else ""))
    clear_ledger(conn, ledger)
    conn.close()

    def shown(scenario: str, step: str) -> str:
        entry = scenarios[scenario][step]
        return (">" if entry["timed_out"] else "") + f"{entry['seconds']:.1f} s"

    def ratio(scenario: str, step: str) -> float:
        return round(scenarios[scenario][step]["seconds"] / m["bare"], 3)

    peak_mb = max([*(max(v) for s, v in rss.items() if s != "bare"),
                   *(e["peak_rss_mb"] for sc in scenarios.values() for e in sc.values()
                     if "peak_rss_mb" in e)])
    checks = [
        Check("P2a", "submit --dry-run ≤ 2x bare (key_source - T) key query",
              f"{m['dry_run']:.2f} s vs {m['bare']:.2f} s", round(m["dry_run"] / m["bare"], 3),
              2.0),
        Check("P2a'", "... ledger holding an earlier, finished run of the keys",
              f"{shown('history', 'dry_run')} vs {m['bare']:.2f} s",
              ratio("history", "dry_run"), 2.0),
        Check("P2a''", "... an earlier run of half the keys still active",
              f"{shown('active', 'dry_run')} vs {m['bare']:.2f} s",
              ratio("active", "dry_run"), 2.0),
        Check("P2b", "planning + recording in the ledger ≤ 3x bare query",
              f"{m['record']:.2f} s vs {m['bare']:.2f} s", round(m["record"] / m["bare"], 3), 3.0),
        Check("P2b'", "... ledger holding an earlier, finished run of the keys",
              f"{shown('history', 'record')} vs {m['bare']:.2f} s",
              ratio("history", "record"), 3.0),
        Check("P2b''", "... an earlier run of half the keys still active",
              f"{shown('active', 'record')} vs {m['bare']:.2f} s",
              ratio("active", "record"), 3.0),
        Check("P2c", "peak memory of djhpc's planning ≤ 1 GB",
              f"{peak_mb:.0f} MB (bare DataJoint query: {max(rss['bare']):.0f} MB)",
              round(peak_mb / 1024, 3), 1.0),
    ]
    details = {
        "keys": n, "repetitions": reps, "executor_for_planning": executor,
        "source_fill_s": round(filled[0], 1),
        "seconds_median": {s: round(v, 3) for s, v in m.items()},
        "seconds": {s: [round(x, 3) for x in v] for s, v in seconds.items()},
        "peak_rss_mb": {s: [round(x) for x in v] for s, v in rss.items()},
        "steps": extra,
        "first_record_on_a_fresh_ledger": first_record,
        "other_ledgers": {**scenarios, "time_limit_s": round(limit)},
        "note": "bare/dry_run/record: timed inside a fresh child after its imports; "
                "cli_dry_run: the whole `djhpc submit --dry-run --json` process, wall time",
    }
    return Outcome("P2 planning", checks, details)
