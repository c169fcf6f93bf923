"""Runs: submit, wait, cancel and retry. The CLI's verbs, without the CLI.

A run is recorded (its keys and chunks, in one transaction) and then handed to
an executor; if the executor refuses it, every trace is removed again, so a run
is either recorded and submitted whole or not at all.
"""

from __future__ import annotations

import logging
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from djhpc import dj, executors, plan, profile, slurm
from djhpc import target as targets
from djhpc.config import Settings, Sources
from djhpc.errors import UsageError
from djhpc.executors import Launch
from djhpc.ledger import (
    ACTIVE_STATES,
    CANCELLED,
    ChunkRecord,
    Ledger,
    RunRecord,
    default_schema,
    now,
)
from djhpc.status import RunReport, reports

log = logging.getLogger(__name__)


@dataclass
class Context:
    """A connection, the ledger, and the settings every verb needs."""

    settings: Settings
    sources: Sources
    conn: Any
    ledger: Ledger

    @classmethod
    def open(cls, settings: Settings, sources: Sources, create: bool = True,
             require: bool = True) -> Context:
        """`create`: make the ledger if missing; `require`: fail if it is missing."""
        dj.set_timeout(settings.db_timeout)
        conn = dj.connection()
        schema = settings.ledger_schema or default_schema(dj.db_user(conn))
        ledger = Ledger(conn, schema)
        if create:
            ledger.create()
        elif require and not ledger.exists():
            raise UsageError(f"No djhpc ledger in schema {schema!r} yet",
                             "Submit a run first, or set ledger_schema: to the one you used")
        return cls(settings, sources, conn, ledger)

    @property
    def project_dir(self) -> Path | None:
        return self.sources.project_file.parent if self.sources.project_file else None


@dataclass
class Submission:
    """What submit did (or, with --dry-run, would do)."""

    run_id: int | None
    target: str
    table: str
    keys: int
    held: int  # pending keys left out because another active run holds them
    chunks: list[plan.Chunk]
    executor: str
    jobs: list[str]
    resources: profile.Resources
    max_parallel: int | None
    arrays: int
    preview: str
    run_dir: str | None
    status: RunReport | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": self.run_id, "target": self.target, "table": self.table,
            "keys": self.keys, "held_by_other_runs": self.held, "chunks": len(self.chunks),
            "chunk_keys": [c.keys for c in self.chunks][:1000],
            "executor": self.executor, "jobs": self.jobs, "arrays": self.arrays,
            "max_parallel": self.max_parallel, "resources": self.resources.describe(),
            "run_dir": self.run_dir, "warnings": self.warnings,
        }
        if self.status is not None:
            data["status"] = self.status.to_json()
        return data


@dataclass
class Prepared:
    """A checked request: everything needed to record and submit the run."""

    target: targets.Target
    cls: Any
    table: Any
    restrictions: list[str]
    pending_sql: str
    key_attrs: list[str]
    executor: str
    resources: profile.Resources
    max_array_size: int | None
    warnings: list[str]


def prepare(ctx: Context, target_text: str, restrictions: Sequence[str]) -> Prepared:
    """Check everything that can be checked before anything is written."""
    settings = ctx.settings
    executor = executors.choose(settings.executor)
    rules = profile.load_rules(settings.profile, ctx.project_dir)
    target, cls = targets.resolve(target_text, settings.modules)
    resources = profile.resources(settings, cls.__name__, rules)
    table = cls()
    warnings = [w for w in (dj.version_warning(),) if w]
    collisions = dj.jobs_column_collisions(table)
    if collisions:
        warnings.append(
            f"{cls.__name__}'s key has {', '.join(collisions)}, named like columns of DataJoint "
            "2.x's jobs table, which breaks populate(reserve_jobs=True); djhpc does not use "
            "that table, so its runs are safe")
    _check_restrictions(restrictions)
    pending_sql = _checked_pending_sql(ctx, table, list(restrictions))
    max_array = _max_array_size(settings, executor)
    check_partition(resources, executor)
    return Prepared(target, cls, table, list(restrictions), pending_sql,
                    dj.key_attributes(table), executor, resources, max_array, warnings)


def check_partition(resources: profile.Resources, executor: str) -> None:
    """A task that the partition can never run is refused here, not left pending forever."""
    if executor != "slurm":
        return
    try:
        known = slurm.partitions()
    except slurm.SlurmError as error:
        log.debug("partition limits not checked: %s", error)
        return
    name = resources.partition
    part = known.get(name) if name else next((p for p in known.values() if p.default), None)
    if part is None:  # an unknown name: sbatch says so itself
        return
    problems = slurm.resource_problems(part, cpus=resources.cpus, mem_mb=resources.mem_mb,
                                       gpus=resources.gpus, time_s=resources.time_s)
    if problems:
        raise UsageError(f"The partition cannot run these tasks: {'; '.join(problems)}",
                         "Ask for less (--cpus, --mem, --gpus, --time) or choose another "
                         "--partition (sinfo lists them)")


def _max_array_size(settings: Settings, executor: str) -> int | None:
    """Tasks per Slurm array: the setting, else what the cluster allows."""
    if executor != "slurm" or settings.max_array_size is not None:
        return settings.max_array_size
    try:
        return slurm.max_array_size(slurm.show_config())
    except slurm.SlurmError as error:
        raise UsageError(f"Slurm does not answer: {error}",
                         "Check that Slurm runs here (sinfo), or use --executor local") from None


def _check_restrictions(restrictions: Sequence[str]) -> None:
    if any(not r.strip() for r in restrictions):
        raise UsageError("An empty restriction (-r \"\")",
                         "Give an SQL condition such as -r \"session_date > '2024-01-01'\", or "
                         "leave -r out for every pending key")


def _checked_pending_sql(ctx: Context, table: Any, restrictions: list[str]) -> str:
    try:
        sql = dj.pending_sql(table, restrictions)
    except Exception as error:
        raise UsageError(f"Invalid restriction: {_short(dj.server_message(error), 300)}",
                         "Restrictions are SQL conditions on the key_source, "
                         "e.g. -r \"session_date > '2024-01-01'\"") from None
    try:
        dj.query(ctx.conn, f"SELECT 1 FROM ({sql}) AS q LIMIT 0")
    except Exception as error:
        shown = _short("; ".join(restrictions)) or "(none)"
        raise UsageError(f"The database rejected the restriction {shown}: "
                         f"{_short(dj.server_message(error), 300)}",
                         "Fix the SQL condition (attribute names, quotes)") from None
    return sql


def count_pending(ctx: Context, prepared: Prepared) -> tuple[int, int]:
    """(keys a new run would take, keys held by other active runs)."""
    ledger = ctx.ledger
    keys_table = ledger.keys_table_name(prepared.table.full_table_name, prepared.key_attrs)
    held = "0"
    # No ledger, or no active run on this table (the usual case): nothing is held.
    if ledger.exists() and ledger.has_table(keys_table) and ledger.has_active_chunks(keys_table):
        in_held = ledger.held(keys_table, prepared.key_attrs, "q")
        held = f"COALESCE(SUM(CASE WHEN {in_held} THEN 1 ELSE 0 END), 0)"
    total, n_held = dj.query(
        ctx.conn, f"SELECT COUNT(*), {held} FROM ({prepared.pending_sql}) AS q").fetchone()
    return int(total) - int(n_held), int(n_held)


def run_dir_for(ctx: Context, run_id: int | str) -> Path:
    """Scripts and logs of one run; named by ledger too, as run numbers are per ledger."""
    return Path(ctx.settings.run_dir).expanduser() / f"{ctx.ledger.schema}-run-{run_id}"


def _plan(ctx: Context, prepared: Prepared) -> Callable[[int], list[plan.Chunk]]:
    s = ctx.settings
    local = prepared.executor in ("local", "debug")
    parallel_default = (s.max_parallel or executors.default_parallel()) if local else None

    def chunks(n_keys: int) -> list[plan.Chunk]:
        size = plan.chunk_size(n_keys, size=s.chunk_size, tasks=s.tasks,
                               parallel_default=parallel_default)
        return plan.split(n_keys, size)

    return chunks


def _launch(ctx: Context, prepared: Prepared, run: RunRecord,
            chunks: Sequence[ChunkRecord]) -> Launch:
    s = ctx.settings
    return Launch(run=run, chunks=chunks, ledger_schema=ctx.ledger.schema,
                  resources=prepared.resources, max_parallel=s.max_parallel,
                  max_array_size=prepared.max_array_size, python=s.python,
                  signal_delay=s.signal_delay, max_requeues=s.requeue)


def dry_run(ctx: Context, prepared: Prepared) -> Submission:
    n_keys, held = count_pending(ctx, prepared)
    chunks = _plan(ctx, prepared)(n_keys)
    executor = executors.get(prepared.executor)
    placeholder = RunRecord(
        run_id=0, target=prepared.target.ref, paths=list(prepared.target.paths),
        workdir=str(Path.cwd()), table_name=prepared.table.full_table_name, keys_table="",
        key_attrs=prepared.key_attrs, executor=prepared.executor, n_keys=n_keys, attempts=1,
        state="dry-run", created=now(), finished=None, settings={},
        run_dir=str(run_dir_for(ctx, "N")), db_user="", host="")
    records = [ChunkRecord(0, c.chunk, 1, c.lo, c.hi, "queued") for c in chunks]
    preview = executor.preview(_launch(ctx, prepared, placeholder, records)) if chunks else ""
    return Submission(None, prepared.target.ref, prepared.table.full_table_name, n_keys, held,
                      chunks, prepared.executor, [], prepared.resources,
                      ctx.settings.max_parallel, len(plan.arrays(chunks, prepared.max_array_size)),
                      preview, None, warnings=prepared.warnings)


def submit(ctx: Context, prepared: Prepared) -> Submission:
    """Record the run and start its tasks; all or nothing."""
    s = ctx.settings
    ledger = ctx.ledger
    base_dir = Path(s.run_dir).expanduser()
    run_settings = {
        "restrictions": prepared.restrictions, "resources": asdict(prepared.resources),
        "max_parallel": s.max_parallel, "profile": s.profile, "requeue": s.requeue,
        "signal_delay": s.signal_delay, "python": s.python,
        "max_array_size": prepared.max_array_size,
        "make_kwargs": s.make_kwargs,
    }
    _check_before_recording(ctx, prepared, run_settings, base_dir)
    run, held = ledger.record_run(
        target=prepared.target.ref, paths=prepared.target.paths, workdir=str(Path.cwd()),
        table_name=prepared.table.full_table_name, key_attrs=prepared.key_attrs,
        executor=prepared.executor, settings=run_settings, run_dir=str(base_dir),
        db_user=dj.db_user(ctx.conn), pending_sql=prepared.pending_sql,
        plan=_plan(ctx, prepared))
    empty = Submission(None, prepared.target.ref, prepared.table.full_table_name, 0, held, [],
                       prepared.executor, [], prepared.resources, s.max_parallel, 0, "", None,
                       warnings=prepared.warnings)
    if run is None:
        return empty
    chunks = ledger.chunks(run.run_id)
    run_dir = run_dir_for(ctx, run.run_id)
    try:
        executors.make_run_dir(run_dir)
        run.run_dir = str(run_dir)
        ledger.set_run(run.run_id, run_dir=str(run_dir), state="active")
        jobs = _start(ctx, prepared, run, chunks)
    except BaseException:
        ledger.delete_run(run.run_id)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    plan_chunks = [plan.Chunk(c.chunk, c.lo, c.hi) for c in chunks]
    return Submission(run.run_id, prepared.target.ref, prepared.table.full_table_name,
                      run.n_keys, held, plan_chunks, prepared.executor,
                      slurm_jobs(jobs), prepared.resources,
                      s.max_parallel, len(plan.arrays(plan_chunks, prepared.max_array_size)),
                      "", str(run_dir), warnings=prepared.warnings)


# Column sizes of the ledger's run table (ledger.py): checked before a run is recorded.
_TEXT_BYTES = 65535  # MySQL's TEXT
_PATH_CHARS = 1024  # workdir, run_dir


def _check_before_recording(ctx: Context, prepared: Prepared, run_settings: dict[str, Any],
                            base_dir: Path) -> None:
    """What the ledger or the filesystem would refuse, refused before anything is written."""
    import json

    workdir = str(Path.cwd())
    if len(workdir) > _PATH_CHARS:
        raise UsageError(f"The working directory's path is {len(workdir)} characters long "
                         f"(djhpc keeps at most {_PATH_CHARS})",
                         "Run djhpc from a directory with a shorter path (a symlink helps)")
    longest_run_dir = str(run_dir_for(ctx, 10**12))
    if len(longest_run_dir) > _PATH_CHARS:
        raise UsageError(f"run_dir {_short(str(base_dir))} is too long for the ledger "
                         f"({len(longest_run_dir)} > {_PATH_CHARS} characters)",
                         "Set run_dir: to a shorter path")
    size = len(json.dumps(run_settings, default=str).encode())
    if size > _TEXT_BYTES:
        raise UsageError(f"The run's restrictions and settings take {size:,} bytes; the ledger "
                         f"keeps at most {_TEXT_BYTES:,}",
                         "Shorten the restriction (e.g. a range instead of a long IN list, or "
                         "a lookup table to join)")
    paths = len(json.dumps(list(prepared.target.paths)).encode())
    if paths > _TEXT_BYTES:
        raise UsageError(f"The target's import paths take {paths:,} bytes",
                         "Import the target from fewer, shorter paths")
    make_run_base(base_dir)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit - 1]}… ({len(text)} characters)"


def make_run_base(base_dir: Path) -> None:
    """run_dir itself, created private (0700) if missing, and writable; else a usage error."""
    import os

    try:
        if not base_dir.exists():
            base_dir.mkdir(parents=True, mode=0o700)
            base_dir.chmod(0o700)  # mkdir's mode is cut by the umask
        if not base_dir.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        if not os.access(base_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise UsageError(f"Cannot create a run directory in run_dir {_short(str(base_dir))}: "
                         f"{error.strerror or error}",
                         "Set run_dir: to a writable directory on a filesystem the compute "
                         "nodes share") from None


def slurm_jobs(jobs: dict[int, str]) -> list[str]:
    """The Slurm job ids (arrays) among chunks' job ids; local runs have none."""
    return sorted({j.split("_")[0] for j in jobs.values() if not j.startswith("local-")},
                  key=int)


def _start(ctx: Context, prepared: Prepared, run: RunRecord,
           chunks: Sequence[ChunkRecord]) -> dict[int, str]:
    executor = executors.get(run.executor)
    jobs = executor.submit(_launch(ctx, prepared, run, chunks))
    ctx.ledger.set_jobs(run.run_id, jobs)
    return jobs


# --- following a run -------------------------------------------------------------


def status_of(ctx: Context, run_id: int, ask_slurm: bool = True) -> RunReport:
    return reports(ctx.ledger, [ctx.ledger.run(run_id)], ask_slurm)[0]


def wait(ctx: Context, run_id: int, poll: float = 2.0, slurm_every: float = 30.0,
         on_update: Callable[[RunReport], None] | None = None,
         timeout: float | None = None) -> RunReport:
    """Block until the run ends; polls the ledger, never submitit's results.

    Tasks report their end to the ledger, so the ledger (cheap) is read every
    `poll` seconds; Slurm (squeue + sacct, which weigh on a big cluster) only
    every `slurm_every` seconds, to find tasks that died without reporting.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    if ctx.ledger.run(run_id).executor in ("local", "debug"):
        poll = min(poll, LOCAL_POLL)  # no Slurm to spare: notice the end at once
    asked = -slurm_every
    while True:
        ask = time.monotonic() - asked >= slurm_every
        asked = time.monotonic() if ask else asked
        current = status_of(ctx, run_id, ask_slurm=ask)
        if current.final and not ask:
            current = status_of(ctx, run_id)  # Slurm's word on cost for the final report
        if on_update:
            on_update(current)
        if current.final:
            return current
        if deadline is not None and time.monotonic() > deadline:
            return current
        time.sleep(poll)


LOCAL_POLL = 0.25  # seconds between ledger reads while waiting for a local run


def cancel(ctx: Context, run_id: int) -> RunReport:
    """Stop every task of the run and mark it cancelled; no key stays reserved."""
    ledger = ctx.ledger
    run = ledger.run(run_id)
    before = status_of(ctx, run_id)
    if before.final:
        return before  # nothing runs: a finished run keeps its state
    if run.executor == "local" and run.host != socket.gethostname():
        raise UsageError(f"Run {run_id}'s processes run on {run.host}",
                         f"Cancel it there: djhpc cancel {run_id}")
    active = [c for c in ledger.chunks(run_id) if c.state in ACTIVE_STATES]
    # The ledger first, so that no task requeues itself or claims a chunk once
    # it is told to stop; a running task still rolls back its current key.
    ledger.set_run(run_id, state=CANCELLED, finished=now())
    ledger.set_chunk_states(run_id, [c.chunk for c in active], CANCELLED)
    executors.of(run.executor).cancel(run, active)
    return status_of(ctx, run_id)


def retry(ctx: Context, run_id: int) -> Submission:
    """A new attempt for the run's keys not yet in the table (failed, interrupted, lost)."""
    ledger = ctx.ledger
    run = ledger.run(run_id)
    current = status_of(ctx, run_id)  # marks lost chunks first
    if current.state in ("queued", "running"):
        raise UsageError(f"Run {run_id} is still {current.state}",
                         f"Wait for it (djhpc status {run_id} --watch) or cancel it first")
    stopping = [c for c in current.chunks if c.task_state in STOPPING]
    if stopping:
        raise UsageError(f"{len(stopping)} tasks of run {run_id} are still stopping",
                         "Try again in a minute (djhpc status shows them)")
    settings = ctx.settings
    if "max_parallel" not in settings.pinned and run.settings.get("max_parallel"):
        ctx.settings = settings = settings.replace(max_parallel=run.settings["max_parallel"])
    size = _run_chunk_size(ledger, run)
    if size and not {"chunk_size", "tasks"} & set(settings.pinned):
        ctx.settings = settings = settings.replace(chunk_size=size, tasks=None)
    target = targets.Target.from_ref(run.target, run.paths)
    cls = target.load()
    executor = run.executor if settings.executor == "auto" else executors.choose(settings.executor)
    prepared = Prepared(target, cls, cls(), run.settings.get("restrictions", []), "",
                        run.key_attrs, executor, _retry_resources(run, settings), None, [])
    prepared.max_array_size = _max_array_size(settings, executor)
    check_partition(prepared.resources, executor)
    attempt = run.attempts + 1
    chunks = ledger.repend(run, attempt, _plan(ctx, prepared))
    base = Submission(run_id, run.target, run.table_name, 0, 0, [], prepared.executor, [],
                      prepared.resources, settings.max_parallel, 0, "", run.run_dir)
    if not chunks:
        return base
    if prepared.executor != run.executor:
        ledger.set_run(run_id, executor=prepared.executor)
        run.executor = prepared.executor
    run.attempts = attempt
    try:
        jobs = _start(ctx, prepared, run, chunks)
    except BaseException:
        ledger.undo_repend(run, attempt)
        raise
    plan_chunks = [plan.Chunk(c.chunk, c.lo, c.hi) for c in chunks]
    base.keys = sum(c.keys for c in chunks)
    base.chunks = plan_chunks
    base.jobs = slurm_jobs(jobs)
    base.arrays = len(plan.arrays(plan_chunks, prepared.max_array_size))
    return base


def _run_chunk_size(ledger: Ledger, run: RunRecord) -> int | None:
    """The keys per chunk the run was planned with: its first attempt's largest chunk."""
    first = [c.keys for c in ledger.chunks(run.run_id) if c.attempt == 1]
    return max(first) if first else None


def _retry_resources(run: RunRecord, settings: Settings) -> profile.Resources:
    """The run's own resources, with what this retry's flags (or env) change."""
    stored = run.settings.get("resources")
    if not isinstance(stored, dict):  # a run recorded before resources were kept
        return profile.resources(settings)
    res = profile.Resources(**{**stored, "setup": tuple(stored.get("setup") or ())})
    changed = {k: getattr(settings, k) for k in profile.RESOURCE_KEYS if k in settings.pinned}
    if not changed:
        return res
    merged = {"partition": res.partition, "account": res.account, "qos": res.qos,
              "time": profile.format_duration(res.time_s),
              "mem": f"{res.mem_mb}M", "cpus": res.cpus, "gpus": res.gpus,
              "setup": list(res.setup), "slurm": res.extra, **changed}
    return profile.resources(settings.replace(**merged, tables={}))


# Task states of a task that may still make keys.
STOPPING = ("pending", "running", "requeued", "suspended")
