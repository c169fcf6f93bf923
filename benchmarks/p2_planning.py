"""P2 planning: N pending keys of a 3-attribute key (varchar, date, int).

Three measurements, each in a fresh child process (its peak RSS is its own),
timed inside the child after the imports, alternating across repetitions:

- `bare`: DataJoint's own pending-key query, `(key_source - Target.proj()).keys()`
  (what `populate()` runs first);
- `dry_run`: `runs.prepare` + `runs.dry_run`, what `djhpc submit --dry-run` does;
- `record`: `runs.prepare` + `Ledger.record_run` with djhpc's default cluster
  plan (about 100 tasks, ≤ 1,000 keys per chunk), what `djhpc submit` does
  before it hands the run to an executor. Each recorded run is then marked
  done, so the ledger keeps a growing history of runs, as a real one does.

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
    Outcome,
    child_env,
    clear_ledger,
    configure_env,
    connect,
    djhpc_context,
    fill_source,
    med,
    record_run,
    q,
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


def _prepared(path: str, ledger: str, run_dir: str, executor: str) -> tuple[Any, Any, float]:
    from djhpc import runs

    _load(path)
    ctx = djhpc_context(ledger, Path(run_dir), executor=executor)
    started = time.perf_counter()
    prepared = runs.prepare(ctx, f"{path}:Target", [])
    return ctx, prepared, time.perf_counter() - started


def dry_run(path: str, ledger: str, run_dir: str, executor: str) -> dict[str, Any]:
    from djhpc import runs

    ctx, prepared, prepare_s = _prepared(path, ledger, run_dir, executor)
    with stopwatch() as took:
        submission = runs.dry_run(ctx, prepared)
    return {"seconds": prepare_s + took[0], "prepare_s": prepare_s, "dry_run_s": took[0],
            "keys": submission.keys, "chunks": len(submission.chunks)}


def record(path: str, ledger: str, run_dir: str, executor: str) -> dict[str, Any]:
    ctx, prepared, prepare_s = _prepared(path, ledger, run_dir, executor)
    with stopwatch() as took:
        run = record_run(ctx, prepared)
    chunks = len(ctx.ledger.chunks(run.run_id))
    return {"seconds": prepare_s + took[0], "prepare_s": prepare_s, "record_s": took[0],
            "keys": run.n_keys, "chunks": chunks}


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

    seconds: dict[str, list[float]] = {s: [] for s in (*STEPS, "cli_dry_run")}
    rss: dict[str, list[float]] = {s: [] for s in (*STEPS, "cli_dry_run")}
    extra: dict[str, list[dict[str, Any]]] = {s: [] for s in STEPS}
    first_record: dict[str, Any] = {}
    for rep in range(-1, reps):  # -1: warm-up; its `record` creates the keys table
        for step in rotated(STEPS, max(rep, 0)):
            result = run_child(f"p2_planning:{step}", args if step == "bare" else djhpc_args,
                               env=env, cwd=folder)
            if step == "record":  # the run ends: its keys stay in the ledger, held by no one
                sql(conn, f"UPDATE {q(ledger)}.{q('chunk')} SET state='done'")
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
            code, out, err, wall, peak = run_process(
                [str(BIN / "djhpc"), "submit", pipeline.target, "--dry-run", "--json",
                 "--executor", executor],
                env={**env, "DJHPC_LEDGER_SCHEMA": ledger, "DJHPC_RUN_DIR": str(run_dir)},
                cwd=folder)
            assert code == 0, err
            seconds["cli_dry_run"].append(wall)
            rss["cli_dry_run"].append(peak)
            bench.log(f"  P2 rep {rep}: cli dry-run {wall:.2f} s wall, peak {peak:.0f} MB")
    keys_in_ledger = sql(conn, f"SELECT SUM(n_keys) FROM {q(ledger)}.{q('run')}")[0][0]
    clear_ledger(conn, ledger)
    conn.close()

    m = {s: med(v) for s, v in seconds.items()}
    peak_mb = max(max(v) for s, v in rss.items() if s != "bare")
    checks = [
        Check("P2a", "submit --dry-run ≤ 2× bare (key_source − T) key query",
              f"{m['dry_run']:.2f} s vs {m['bare']:.2f} s", round(m["dry_run"] / m["bare"], 3),
              2.0),
        Check("P2b", "planning + recording in the ledger ≤ 3× bare query",
              f"{m['record']:.2f} s vs {m['bare']:.2f} s", round(m["record"] / m["bare"], 3), 3.0),
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
        "keys_in_ledger_at_the_end": int(keys_in_ledger or 0),
        "note": "bare/dry_run/record: timed inside a fresh child after its imports; "
                "cli_dry_run: the whole `djhpc submit --dry-run --json` process, wall time",
    }
    return Outcome("P2 planning", checks, details)
