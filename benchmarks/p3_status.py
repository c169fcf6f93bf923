"""P3 status: `djhpc status RUN --json` for a run of N keys in 1,000 chunks.

The run is recorded through the ledger (`Ledger.record_run`, chunks of N/1,000
keys); then, on the server, half of its keys are made (inserted into the
target table directly), chunks get mixed states (done, running with part of
their keys made, failed, queued) and every chunk a Slurm array task id.

Slurm is replaced by fake `sbatch`/`squeue`/`sacct` on PATH that log every call
and print canned output for all 1,000 tasks, so Slurm's own speed is left out
and the calls can be counted. Timed in this process: `lifecycle.status_of` and the
JSON the CLI prints, with the fake Slurm and with no Slurm at all; the real
`djhpc status RUN --json` command runs too, for its wall time and its calls.
The same refresh is also timed right after the run is recorded, when every
chunk is still queued and nothing is made (no Slurm).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
from pathlib import Path
from typing import Any

from common import (
    BIN,
    Bench,
    Check,
    Outcome,
    child_env,
    configure_env,
    connect,
    djhpc_context,
    fill_source,
    med,
    q,
    record_run,
    rotated,
    run_process,
    sql,
    stopwatch,
    write_pipeline,
)

ARRAY = "900001"  # the fake Slurm array every chunk belongs to
MODES = ("fake_slurm", "no_slurm")


def _fake_slurm(folder: Path, chunks: int, states: dict[int, str]) -> tuple[Path, Path]:
    """A bin folder with sbatch/squeue/sacct that log their calls and print canned output."""
    bin_dir = folder / "fake-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = folder / "slurm-calls.log"
    stamp = "2026-01-01T10:00:00"
    squeue, sacct = [], []
    pending = [c for c in range(chunks) if states[c] == "queued"]
    for c in range(chunks):
        job = f"{ARRAY}_{c}"
        state = states[c]
        if state == "running":
            squeue.append(f"{job}|RUNNING|node-b|5:00|1:00:00|1|4G|{stamp}")
            sacct.append(f"{job}|RUNNING|0:0|node-b|300|1|00:00:00|300||4G|60|{stamp}|Unknown")
        elif state in ("done", "failed"):
            slurm_state, code = ("COMPLETED", "0:0") if state == "done" else ("FAILED", "1:0")
            sacct.append(f"{job}|{slurm_state}|{code}|node-b|300|1|04:50.120|300||4G|60|"
                         f"{stamp}|2026-01-01T10:05:00")
            sacct.append(f"{job}.batch|{slurm_state}|{code}|node-b|300|1|04:50.120|300|"
                         f"812345K||| {stamp}|2026-01-01T10:05:00")
    if pending:  # Slurm shows a pending array's tasks as one row
        squeue.append(f"{ARRAY}_[{pending[0]}-{pending[-1]}]|PENDING||0:00|1:00:00|1|4G|N/A")
        sacct.append(f"{ARRAY}_[{pending[0]}-{pending[-1]}]|PENDING|0:0|None assigned|0|1|"
                     f"00:00:00|0||4G|60|Unknown|Unknown")
    for name, lines in (("squeue", squeue), ("sacct", sacct), ("sbatch", [])):
        (folder / f"{name}.out").write_text("\n".join(lines) + ("\n" if lines else ""))
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\ncat {folder / (name + ".out")}\n')
        script.chmod(0o755)
    return bin_dir, log


def _calls(log: Path) -> dict[str, int]:
    lines = log.read_text().splitlines() if log.exists() else []
    return {name: sum(1 for line in lines if line.split(" ", 1)[0] == name)
            for name in ("squeue", "sacct")}


def _profile(action: Any) -> dict[str, float]:
    """Seconds spent in the parts of a status refresh (cProfile's cumulative times)."""
    profiler = cProfile.Profile()
    profiler.runcall(action)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    parts = {"ledger.chunks": ("ledger.py", "chunks"),
             "ledger.done_by_chunk": ("ledger.py", "done_by_chunk"),
             "status.slurm_tasks (squeue+sacct)": ("status.py", "slurm_tasks"),
             "status.live_connections": ("status.py", "live_connections"),
             "status.reconcile": ("status.py", "reconcile"),
             "RunReport.to_json": ("status.py", "to_json"),
             "json.dumps": ("__init__.py", "dumps")}
    found: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, _tt, cumulative, _callers) in stats.items():
        for label, (file_end, name) in parts.items():
            if function == name and filename.endswith(file_end):
                found[label] = round(found.get(label, 0.0) + cumulative, 4)
    return found


def run(bench: Bench) -> Outcome:
    n = 100_000 if bench.quick else 1_000_000
    n_chunks = 1000
    reps = 9  # cheap, and the median of more shrugs off the machine's hiccups
    configure_env()
    from djhpc import lifecycle

    folder = bench.tmp / "p3"
    pipeline = write_pipeline(folder, "djhpc_bench_p3", bench.schema("p3"))
    pipeline.load()
    conn = connect()
    fill_source(conn, pipeline, n)
    ledger_schema = bench.schema("p3_ledger")
    ctx = djhpc_context(ledger_schema, folder / "runs", executor="local")
    prepared = lifecycle.prepare(ctx, pipeline.target, [])
    with stopwatch() as recorded:
        run_record, _ = record_run(ctx, prepared, chunk_size=n // n_chunks)
    run_id = run_record.run_id
    size = n // n_chunks
    chunk_count = len(ctx.ledger.chunks(run_id))
    assert chunk_count == n_chunks, chunk_count

    def refresh() -> str:
        return json.dumps(lifecycle.status_of(ctx, run_id).to_json(), indent=2, default=str)

    # Right after submission: every chunk queued, nothing made (Slurm left out).
    empty_bin = folder / "empty-bin"
    empty_bin.mkdir(exist_ok=True)
    path_before = os.environ.get("PATH", "")
    just_submitted: list[float] = []
    try:
        os.environ["PATH"] = str(empty_bin)
        for rep in range(-1, 3):
            with stopwatch() as took:
                refresh()
            if rep >= 0:
                just_submitted.append(took[0])
    finally:
        os.environ["PATH"] = path_before
    bench.log(f"  P3 just submitted (all queued): {med(just_submitted):.3f} s")

    # Chunk states: 50 % done, 10 % running (30 % of their keys made), 5 % failed, rest queued.
    states = {c: "done" if c < n_chunks // 2 else "running" if c < 6 * n_chunks // 10
              else "failed" if c < 65 * n_chunks // 100 else "queued" for c in range(n_chunks)}
    keys_table = f"{q(ledger_schema)}.{q(run_record.keys_table)}"
    chunk_table = f"{q(ledger_schema)}.{q('chunk')}"
    with stopwatch() as made:
        sql(conn, f"""INSERT INTO {pipeline.target_table} (subject, session_date, unit, value)
            SELECT subject, session_date, unit, 1 FROM {keys_table} WHERE djhpc_run=%s AND
            (djhpc_seq < %s OR (djhpc_seq < %s AND djhpc_seq MOD %s < %s))""",
            (run_id, n // 2, 6 * n // 10, size, 3 * size // 10))
    my_connection = int(sql(conn, "SELECT CONNECTION_ID()")[0][0])
    sql(conn, f"UPDATE {chunk_table} SET job_id=CONCAT(%s, '_', chunk), host='node-b' "
              "WHERE run_id=%s", (ARRAY, run_id))
    for state, (lo, hi) in {"done": (0, n_chunks // 2),
                            "running": (n_chunks // 2, 6 * n_chunks // 10),
                            "failed": (6 * n_chunks // 10, 65 * n_chunks // 100)}.items():
        done_keys = size if state == "done" else 3 * size // 10 if state == "running" else 0
        sql(conn, f"UPDATE {chunk_table} SET state=%s, started=NOW(), heartbeat=NOW(), "
                  "finished=IF(%s='running', NULL, NOW()), n_done=%s, n_error=%s, pid=1, "
                  "connection_id=%s WHERE run_id=%s AND chunk >= %s AND chunk < %s",
            (state, state, done_keys, size if state == "failed" else 0, my_connection,
             run_id, lo, hi))
    in_target = int(sql(conn, f"SELECT COUNT(*) FROM {pipeline.target_table}")[0][0])
    bench.log(f"  P3 run {run_id}: {n} keys in {n_chunks} chunks recorded in {recorded[0]:.1f} s;"
              f" {in_target} keys made in {made[0]:.1f} s")

    fake_bin, calls_log = _fake_slurm(folder, n_chunks, states)
    paths = {"fake_slurm": f"{fake_bin}:{path_before}", "no_slurm": str(empty_bin)}

    seconds: dict[str, list[float]] = {m: [] for m in (*MODES, "cli")}
    calls: list[dict[str, int]] = []
    report: dict[str, Any] = {}
    try:
        for rep in range(-1, reps):
            for mode in rotated(MODES, max(rep, 0)):
                os.environ["PATH"] = paths[mode]
                calls_log.unlink(missing_ok=True)
                with stopwatch() as took:
                    text = refresh()
                os.environ["PATH"] = path_before
                if mode == "fake_slurm":
                    calls.append(_calls(calls_log))
                    report = json.loads(text)
                if rep >= 0:
                    seconds[mode].append(took[0])
                    bench.log(f"  P3 rep {rep}: {mode:10s} {took[0]:.3f} s")
            if rep >= 0:
                calls_log.unlink(missing_ok=True)
                env = child_env(PATH=f"{fake_bin}:{BIN}:{path_before}",
                                DJHPC_LEDGER_SCHEMA=ledger_schema,
                                DJHPC_RUN_DIR=str(folder / "runs"),
                                XDG_CONFIG_HOME=str(folder / "xdg"))
                code, _out, err, wall, _rss = run_process(
                    [str(BIN / "djhpc"), "status", str(run_id), "--json"], env=env, cwd=folder)
                assert code == 0, err
                calls.append(_calls(calls_log))
                seconds["cli"].append(wall)
                bench.log(f"  P3 rep {rep}: cli        {wall:.3f} s (whole command)")
        os.environ["PATH"] = paths["fake_slurm"]
        breakdown = _profile(refresh)
    finally:
        os.environ["PATH"] = path_before

    # Nothing must have been marked lost: the fake Slurm says every running task runs.
    states_after = dict(sql(conn, f"SELECT state, COUNT(*) FROM {chunk_table} WHERE run_id=%s "
                                  "GROUP BY state", (run_id,)))
    conn.close()
    m = {k: med(v) for k, v in seconds.items()}
    max_calls = {name: max(c[name] for c in calls) for name in ("squeue", "sacct")}
    min_calls = {name: min(c[name] for c in calls) for name in ("squeue", "sacct")}
    checks = [
        Check("P3a", f"status RUN --json ({n:,} keys, {n_chunks:,} chunks) ≤ 1 s apart from Slurm",
              f"{m['no_slurm']:.3f} s without Slurm ({m['fake_slurm']:.3f} s with the fake "
              f"Slurm's two processes; whole command {m['cli']:.2f} s)",
              round(m["no_slurm"], 3), 1.0),
        Check("P3a'", "... right after submission: every chunk queued, nothing made",
              f"{med(just_submitted):.3f} s without Slurm", round(med(just_submitted), 3), 1.0),
        Check("P3b", f"one squeue and one sacct call per refresh ({n_chunks:,} tasks)",
              f"squeue {min_calls['squeue']}-{max_calls['squeue']}, sacct "
              f"{min_calls['sacct']}-{max_calls['sacct']} per refresh",
              max(max_calls.values()), 1.0),
    ]
    if min(min_calls.values()) < 1:
        checks[2].value = 99.0  # no call at all: the refresh did not ask Slurm
        checks[2].measured += " (a refresh made no call: Slurm was not asked)"
    details = {
        "keys": n, "chunks": n_chunks, "repetitions": reps,
        "record_run_s": round(recorded[0], 2),
        "keys_in_target": in_target,
        "seconds_median": {k: round(v, 4) for k, v in m.items()},
        "seconds": {k: [round(x, 4) for x in v] for k, v in seconds.items()},
        "just_submitted_s": [round(x, 4) for x in just_submitted],
        "slurm_calls_per_refresh": calls,
        "profile_of_one_refresh_s": breakdown,
        "report_keys": report.get("keys"), "report_tasks": report.get("tasks"),
        "report_state": report.get("state"),
        "chunk_states_after": {str(k): int(v) for k, v in states_after.items()},
    }
    return Outcome("P3 status", checks, details)
