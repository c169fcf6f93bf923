"""A run's life: submit, follow, cancel, retry, and the views of it. The CLI's verbs, without the CLI.

A run is recorded (its keys and chunks, in one transaction) and then handed to
an executor; if the executor refuses it, every trace is removed again, so a run
is either recorded and submitted whole or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from djhpc import backoff, dj, escalation, executors, plan, quota, resources, sites, status
from djhpc import sizing as sizing_
from djhpc import target as targets
from djhpc.config import Settings, Sources, load_architectures, load_rules
from djhpc.errors import UsageError
from djhpc.executors import Launch, slurm_tools
from djhpc.ledger import ChunkRecord, Ledger, RunRecord, default_schema, now
from djhpc.resources import Resources
from djhpc.sizing import Sizing

if TYPE_CHECKING:
    from djhpc.report import ReportData
from djhpc.states import STOPPING_TASK_STATES, ChunkState, RunPhase
from djhpc.status import ErrorGroup, Overview, RunDetail, RunReport, SlurmPoll, TableView

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
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
        elif ledger.exists():
            ledger.upgrade()  # a ledger an earlier djhpc made: its chunks get the new columns
        elif require:
            raise UsageError(f"No djhpc ledger in schema {schema!r} yet",
                             "Submit a run first, or set ledger_schema: to the one you used")
        return cls(settings=settings, sources=sources, conn=conn, ledger=ledger)

    @property
    def project_dir(self) -> Path | None:
        return self.sources.project_file.parent if self.sources.project_file else None


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a run's tasks go and what each asks for."""

    executor: str
    resources: Resources
    max_parallel: int | None
    max_array_size: int | None
    chunk_size: int | None = None  # keys per chunk sized from history; None: the plan's default


@dataclass(frozen=True, kw_only=True)
class Submission:
    """What submit or retry did (or, with --dry-run, would do)."""

    run_id: int | None
    target: str
    table: str
    keys: int
    held: int = 0  # pending keys left out because another active run holds them
    chunks: list[plan.Chunk] = field(default_factory=list)
    placement: Placement
    jobs: list[str] = field(default_factory=list)
    preview: str = ""
    run_dir: str | None = None
    status: RunReport | None = None
    warnings: list[str] = field(default_factory=list)
    allocation: quota.Allocation | None = None  # the dry run's billing estimate and quota
    sizing: Sizing | None = None  # where the resources and chunk size came from

    @property
    def executor(self) -> str:
        return self.placement.executor

    @property
    def resources(self) -> Resources:
        return self.placement.resources

    @property
    def max_parallel(self) -> int | None:
        return self.placement.max_parallel

    @property
    def arrays(self) -> int:
        return len(plan.arrays(self.chunks, self.placement.max_array_size))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": self.run_id, "target": self.target, "table": self.table,
            "keys": self.keys, "held_by_other_runs": self.held, "chunks": len(self.chunks),
            "chunk_keys": [c.keys for c in self.chunks][:1000],
            "executor": self.executor, "jobs": self.jobs, "arrays": self.arrays,
            "max_parallel": self.placement.max_parallel,
            "resources": self.placement.resources.describe(), "run_dir": self.run_dir,
            "warnings": self.warnings,
        }
        if self.status is not None:
            data["status"] = self.status.to_json()
        if self.allocation is not None:
            data["billing"] = self.allocation.billing_json()
            data["quota"] = self.allocation.quota_json()
        if self.sizing is not None:
            data["sizing"] = self.sizing.to_json()
        return data


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A checked request: everything needed to record and submit the run."""

    target: targets.Target
    table: Any  # an instance of the target's class
    restrictions: list[str]
    pending_sql: str
    # The same before keys reserved in DataJoint's jobs table are left out: it differs
    # only while some are, and then says how many of the pending keys others hold.
    all_pending_sql: str
    key_attrs: list[str]
    placement: Placement
    warnings: list[str]
    sizing: Sizing
    max_time_s: float | None  # the profile's longest walltime, for escalations to keep to


# --- submit ------------------------------------------------------------------------


def prepare(ctx: Context, target_text: str, restrictions: Sequence[str]) -> Prepared:
    """Check everything that can be checked before anything is written."""
    settings = ctx.settings
    executor = executors.choose(settings.executor)
    rules = load_rules(settings.profile, ctx.project_dir)
    target, cls = targets.resolve(target_text, settings.modules)
    res = resources.resources(settings, cls.__name__, rules)
    table = cls()
    warnings = [w for w in (dj.version_warning(),) if w]
    collisions = dj.jobs_column_collisions(table)
    if collisions:
        warnings.append(
            f"{cls.__name__}'s key has {', '.join(collisions)}, named like columns of DataJoint "
            "2.x's jobs table, which breaks populate(reserve_jobs=True); djhpc does not use "
            "that table, so its runs are safe")
    arch = sites.architecture_warning(
        load_architectures(settings.profile, ctx.project_dir), res.partition)
    if arch:
        warnings.append(arch)
    _check_restrictions(restrictions)
    pending_sql = _checked_pending_sql(ctx, table, list(restrictions))
    all_pending_sql = dj.pending_sql(table, restrictions, leave_out_reserved=False)
    placement = Placement(executor=executor, resources=res, max_parallel=settings.max_parallel,
                          max_array_size=_max_array_size(settings, executor))
    key_attrs = dj.key_attributes(table)
    placement, sizing = _sized(ctx, placement, table, rules.max_time_s,
                               lambda: ctx.ledger.count_pending(
                                   pending_sql, table.full_table_name, key_attrs)[0])
    _check_partition(placement)
    return Prepared(target=target, table=table, restrictions=list(restrictions),
                    pending_sql=pending_sql, all_pending_sql=all_pending_sql,
                    key_attrs=key_attrs, placement=placement, warnings=warnings, sizing=sizing,
                    max_time_s=rules.max_time_s)


def _sized(ctx: Context, placement: Placement, table: Any, rule_max_time_s: float | None,
           count: Callable[[], int]) -> tuple[Placement, Sizing]:
    """The placement with memory, time and chunk size learned from the table's earlier runs.

    Only Slurm tasks are sized (local ones have no limits to fit). Measurements
    beat guesses: a profile's or a config file's memory, time and chunk size
    give way to the table's history, while what this command was told (a flag,
    a DJHPC_ variable) is kept; `--no-history` keeps everything as it is.
    """
    s = ctx.settings
    res = placement.resources
    target_s = _setting_amount(s.target_task_time, "target_task_time", slurm_tools.parse_walltime)
    max_mem = _setting_amount(s.max_mem, "max_mem", slurm_tools.parse_memory_mb)
    if not s.history:
        return placement, Sizing(source="profile", note="--no-history: sized from the settings")
    history = ctx.ledger.history(table.full_table_name) if ctx.ledger.exists() else None
    if placement.executor != "slurm":
        return placement, Sizing(
            source="profile", runs=history.runs if history else (),
            key_seconds=history.seconds if history else None,
            max_rss_mb=history.max_rss_mb if history else None,
            note="local runs have no time or memory limit to size")
    part = _partition(placement)
    caps = [t for t in (rule_max_time_s, part.max_time_s if part else None) if t]
    tasks = s.tasks if "tasks" in s.pinned else None
    chunk_size = s.chunk_size if "chunk_size" in s.pinned else None
    needs_count = bool(tasks) and history is not None and history.enough
    res, learned_chunk, sizing = sizing_.size(
        history, res, given=s.pinned, n_keys=count() if needs_count else 0,
        target_task_s=target_s or 3600.0, max_time_s=min(caps, default=None),
        max_mem_mb=max_mem, chunk_size=chunk_size, tasks=tasks)
    return replace(placement, resources=res, chunk_size=learned_chunk), sizing


def _partition(placement: Placement) -> Any:
    from djhpc.executors import slurm

    return slurm.partition_of(placement.resources)


def _setting_amount(value: str | None, name: str, parse: Callable[[str], float]) -> float | None:
    """A duration or size setting, checked; None when unset."""
    if value is None:
        return None
    return resources.positive_amount(parse, value, name, f"Set {name}: like "
                                     + ("64G" if name == "max_mem" else "1:00:00"))


def _check_partition(placement: Placement) -> None:
    """A task that the partition can never run is refused here, not left pending forever."""
    if placement.executor == "slurm":
        from djhpc.executors import slurm

        slurm.check_partition(placement.resources)


def _check_restrictions(restrictions: Sequence[str]) -> None:
    if any(not r.strip() for r in restrictions):
        raise UsageError("An empty restriction (-r \"\")",
                         "Give an SQL condition such as -r \"session_date > '2024-01-01'\", or "
                         "leave -r out for every pending key")


def _max_array_size(settings: Settings, executor: str) -> int | None:
    """Tasks per Slurm array: the setting, else what the cluster allows."""
    if executor != "slurm" or settings.max_array_size is not None:
        return settings.max_array_size
    from djhpc.executors import slurm

    try:
        # Every array task counts as a job against the user's MaxSubmitJobs.
        return _within_submit_limit(slurm.max_array_size(), sites.user_associations())
    except slurm.tools.SlurmError as error:
        raise UsageError(f"Slurm does not answer: {error}",
                         "Check that Slurm runs here (sinfo), or use --executor local") from None


def _within_submit_limit(size: int | None, assoc: sites.Association | None) -> int | None:
    limit = assoc.max_submit_jobs if assoc is not None else None
    if limit is None:
        return size
    return limit if size is None else min(size, limit)


def _checked_pending_sql(ctx: Context, table: Any, restrictions: list[str]) -> str:
    try:
        sql = dj.pending_sql(table, restrictions)
    except Exception as error:
        raise UsageError(f"Invalid restriction: {_short(dj.server_message(error), 300)}",
                         "Restrictions are SQL conditions on the key_source, "
                         "e.g. -r \"session_date > '2024-01-01'\"") from None
    try:
        ctx.ledger.check_pending(sql)
    except Exception as error:
        shown = _short("; ".join(restrictions)) or "(none)"
        raise UsageError(f"The database rejected the restriction {shown}: "
                         f"{_short(dj.server_message(error), 300)}",
                         "Fix the SQL condition (attribute names, quotes)") from None
    return sql


def run_dir_for(ctx: Context, run_id: int | str) -> Path:
    """Scripts and logs of one run; named by ledger too, as run numbers are per ledger."""
    return Path(ctx.settings.run_dir).expanduser() / f"{ctx.ledger.schema}-run-{run_id}"


def _chunking(settings: Settings, placement: Placement) -> Callable[[int], list[plan.Chunk]]:
    """How a number of keys is split into chunks, for this placement and these settings."""
    local = placement.executor in ("local", "debug")
    parallel_default = (placement.max_parallel or executors.default_parallel()) if local else None

    # From history: the most keys a task may take on at once within its time. Tasks
    # pull chunk after chunk, so smaller chunks than that cost little and balance.
    learned = placement.chunk_size

    def chunks(n_keys: int) -> list[plan.Chunk]:
        size = plan.chunk_size(n_keys, size=settings.chunk_size, tasks=settings.tasks,
                               parallel_default=parallel_default)
        return plan.split(n_keys, min(size, learned) if learned else size)

    return chunks


def _launch(ctx: Context, placement: Placement, run_id: int | None, run_dir: Path | str,
            workdir: str, chunks: Sequence[ChunkRecord],
            recorded: dict[str, Any] | None = None) -> Launch:
    """What the executor needs; `recorded`: the run's own settings, which win (a follow-up
    job on a compute node does not see the submitter's flags)."""
    s = ctx.settings
    kept = recorded or {}
    return Launch(run_id=run_id, run_dir=str(run_dir), workdir=workdir, chunks=chunks,
                  ledger_schema=ctx.ledger.schema, resources=placement.resources,
                  max_parallel=placement.max_parallel, max_array_size=placement.max_array_size,
                  python=kept.get("python", s.python),
                  signal_delay=int(kept.get("signal_delay", s.signal_delay)),
                  max_requeues=int(kept.get("requeue", s.requeue)),
                  follow_up=(int(kept.get("max_escalations", s.max_escalations))
                             + int(kept.get("max_continuations", s.max_continuations))) > 0)


def dry_run(ctx: Context, prepared: Prepared) -> Submission:
    n_keys, held = ctx.ledger.count_pending(prepared.pending_sql, prepared.table.full_table_name,
                                            prepared.key_attrs, prepared.all_pending_sql)
    placement = prepared.placement
    chunks = _chunking(ctx.settings, placement)(n_keys)
    preview = ""
    if chunks:
        records = [ChunkRecord(run_id=0, chunk=c.chunk, attempt=1, lo=c.lo, hi=c.hi,
                               state=ChunkState.QUEUED) for c in chunks]
        launch = _launch(ctx, placement, None, run_dir_for(ctx, "N"), str(Path.cwd()), records)
        preview = executors.get(placement.executor).preview(launch)
    cost = quota.for_plan(placement.resources, len(chunks), placement.executor,
                          ctx.settings.quota_warn)
    return Submission(run_id=None, target=prepared.target.ref,
                      table=prepared.table.full_table_name, keys=n_keys, held=held,
                      chunks=chunks, placement=placement, preview=preview,
                      warnings=[*prepared.warnings, *cost.warnings,
                                *_submit_limit_warnings(placement.executor, len(chunks))],
                      allocation=cost, sizing=prepared.sizing)


def _submit_limit_warnings(executor: str, n_tasks: int) -> list[str]:
    """A run with more tasks than the user may queue would be refused by sbatch."""
    if executor != "slurm" or not n_tasks:
        return []
    assoc = sites.user_associations()
    limit = assoc.max_submit_jobs if assoc else None
    if limit is None or n_tasks <= limit:
        return []
    return [f"this run has {n_tasks} tasks; " + (sites.submit_limit_note(assoc) or "")]


def submit(ctx: Context, prepared: Prepared) -> Submission:
    """Record the run and start its tasks; all or nothing."""
    s = ctx.settings
    ledger = ctx.ledger
    placement = prepared.placement
    run_settings = {
        "restrictions": prepared.restrictions, "resources": placement.resources.to_json(),
        "max_parallel": placement.max_parallel, "profile": s.profile, "requeue": s.requeue,
        "signal_delay": s.signal_delay, "python": s.python,
        "max_array_size": placement.max_array_size, "submitter_pid": os.getpid(),
        "make_kwargs": s.make_kwargs, "sizing": prepared.sizing.to_json(),
        "max_escalations": s.max_escalations, "max_mem": s.max_mem,
        "max_continuations": s.max_continuations,
        "max_time_s": prepared.max_time_s,
    }
    _check_before_recording(ctx, prepared, run_settings)
    run, held = ledger.record_run(
        target=prepared.target.ref, paths=prepared.target.paths, workdir=str(Path.cwd()),
        table_name=prepared.table.full_table_name, key_attrs=prepared.key_attrs,
        executor=placement.executor, settings=run_settings,
        run_dir=str(Path(s.run_dir).expanduser()), db_user=dj.db_user(ctx.conn),
        pending_sql=prepared.pending_sql, all_pending_sql=prepared.all_pending_sql,
        plan=_chunking(s, placement))
    base = Submission(run_id=None, target=prepared.target.ref,
                      table=prepared.table.full_table_name, keys=0, held=held,
                      placement=placement, warnings=prepared.warnings, sizing=prepared.sizing)
    if run is None:
        return base
    chunks = ledger.chunks(run.run_id)
    run_dir = run_dir_for(ctx, run.run_id)
    try:
        executors.make_run_dir(run_dir)
        ledger.set_run(run.run_id, run_dir=str(run_dir))
        jobs = _start(ctx, placement, replace(run, run_dir=str(run_dir)), chunks)
    except BaseException:
        ledger.delete_run(run.run_id)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return replace(base, run_id=run.run_id, keys=run.n_keys, chunks=_plan_chunks(chunks),
                   jobs=jobs, run_dir=str(run_dir))


# Column sizes of the ledger's run table (ledger.py): checked before a run is recorded.
_TEXT_BYTES = 65535  # MySQL's TEXT
_PATH_CHARS = 1024  # workdir, run_dir


def _check_before_recording(ctx: Context, prepared: Prepared,
                            run_settings: dict[str, Any]) -> None:
    """What the ledger or the filesystem would refuse, refused before anything is written."""
    base_dir = Path(ctx.settings.run_dir).expanduser()
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


def _plan_chunks(chunks: Sequence[ChunkRecord]) -> list[plan.Chunk]:
    return [plan.Chunk(chunk=c.chunk, lo=c.lo, hi=c.hi) for c in chunks]


def _start(ctx: Context, placement: Placement, run: RunRecord,
           chunks: Sequence[ChunkRecord]) -> list[str]:
    """Hand the chunks to the executor; the scheduler's job ids back.

    Job ids are recorded as the scheduler accepts each array, and the run is
    `submitting` until the last one is: a status meanwhile never takes a
    chunk still waiting for its array for one whose submit died.
    """
    executor = executors.get(placement.executor)

    def accepted(jobs: dict[int, str], last: bool) -> None:
        ctx.ledger.set_jobs(run.run_id, jobs)
        # The run's jobs (Slurm: its arrays), for the task that cancels those not needed.
        kept = ctx.ledger.run(run.run_id).settings
        ctx.ledger.set_run(run.run_id, settings={
            **kept, "jobs": sorted({*kept.get("jobs", []), *executor.job_ids(jobs)})})
        if last:
            ctx.ledger.set_run(run.run_id, state=RunPhase.ACTIVE)

    launch = _launch(ctx, placement, run.run_id, run.run_dir, run.workdir, chunks,
                     run.settings)
    jobs = executor.submit(launch, accepted)
    follow_up = executor.follow_up(launch, jobs)
    if follow_up:
        attempt = max(c.attempt for c in chunks)
        ctx.ledger.set_run(run.run_id, settings={
            **ctx.ledger.run(run.run_id).settings,
            "follow_up": {"attempt": attempt, "job_id": follow_up}})
    return executor.job_ids(jobs)


# --- following a run -------------------------------------------------------------


def password_warning(ctx: Context, executor: str) -> str | None:
    """Before a user's first Slurm run: a password only in DJ_PASS ends up in Slurm's records."""
    from djhpc import credentials

    if executor != "slurm" or (ctx.ledger.exists() and ctx.ledger.runs(limit=1)):
        return None
    return credentials.environment_warning()


def find_run(ctx: Context, run_id: int) -> RunRecord:
    """The run's record, or a one-line error naming the ledger."""
    return ctx.ledger.run(run_id)


def status_of(ctx: Context, run_id: int, ask_slurm: bool = True,
              poll: SlurmPoll | None = None) -> RunReport:
    return status.refresh(ctx.ledger, [ctx.ledger.run(run_id)], ask_slurm, poll)[0]


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
    started = time.monotonic()
    while True:
        # Runs of hours are asked about less often (backoff.slurm_interval).
        every = backoff.slurm_interval(time.monotonic() - started, slurm_every)
        ask = time.monotonic() - asked >= every
        asked = time.monotonic() if ask else asked
        current = status_of(ctx, run_id, ask_slurm=ask)
        if current.final and not ask:
            current = status_of(ctx, run_id)  # Slurm's word on cost for the final report
        if current.final and ctx.ledger.run(run_id).attempts != current.attempts:
            current = status_of(ctx, run_id)  # a follow-up job started another attempt
        if on_update:
            on_update(current)
        if current.final:
            return current
        if deadline is not None and time.monotonic() > deadline:
            return current
        time.sleep(poll)


LOCAL_POLL = 0.25  # seconds between ledger reads while waiting for a local run


def recent_runs(ctx: Context, show_all: bool = False) -> list[RunRecord]:
    """The runs `djhpc status` shows: this week's (at most 20, else the last 5), and any
    older run still active."""
    ledger = ctx.ledger
    if not ledger.exists():
        return []
    if show_all:
        return ledger.runs()
    recent = ledger.runs(since=now() - timedelta(days=7), limit=20) or ledger.runs(limit=5)
    shown = {r.run_id for r in recent}
    older = [ledger.run(i) for i in ledger.active_run_ids() if i not in shown]
    return sorted([*recent, *older], key=lambda r: -r.run_id)


def overview(ctx: Context, show_all: bool = False, poll: SlurmPoll | None = None) -> Overview:
    return Overview(runs=status.refresh(ctx.ledger, recent_runs(ctx, show_all), poll=poll))


def run_detail(ctx: Context, run_id: int, poll: SlurmPoll | None = None) -> RunDetail:
    report = status_of(ctx, run_id, poll=poll)
    return RunDetail(report=report, errors=status.error_groups(ctx.ledger, [ctx.ledger.run(run_id)]),
                     key_seconds=sizing_.percentiles(ctx.ledger.key_seconds([run_id])))


def table_view(ctx: Context, target_text: str, poll: SlurmPoll | None = None) -> TableView:
    _, cls = targets.resolve(target_text, ctx.settings.modules)
    remaining, total = status.table_progress(cls)
    table = cls().full_table_name
    return TableView(target=target_text, table=table, remaining=remaining, total=total,
                     runs=status.refresh(ctx.ledger, ctx.ledger.runs(table_name=table), poll=poll),
                     history=ctx.ledger.history(table))


def history(ctx: Context, target_text: str) -> sizing_.History:
    """What the target table's latest runs measured, as the next submit would size from it."""
    _, cls = targets.resolve(target_text, ctx.settings.modules)
    table = cls().full_table_name
    return ctx.ledger.history(table) if ctx.ledger.exists() else sizing_.History(table=table)


def runs_of(ctx: Context, what: str) -> list[RunRecord]:
    """A RUN_ID's run, or every run of a TARGET's table."""
    if what.isdigit():
        return [ctx.ledger.run(int(what))]
    _, cls = targets.resolve(what, ctx.settings.modules)
    return ctx.ledger.runs(table_name=cls().full_table_name)


def _stderr_logs(ctx: Context, runs: Sequence[RunRecord]) -> status.LogPath:
    """Where a chunk's task wrote its stderr; None for in-process (debug) runs."""
    by_id = {r.run_id: r for r in runs}

    def log_path(run_id: int, chunk: int) -> Path | None:
        run = by_id[run_id]
        try:
            return executors.of(run.executor).log_paths(run, ctx.ledger.chunk(run_id, chunk))[1]
        except UsageError:  # the debug executor keeps no log file
            return None

    return log_path


def errors(ctx: Context, what: str) -> list[ErrorGroup]:
    """Errors of a run or a table's runs, grouped, each with its task's log file."""
    selected = runs_of(ctx, what)
    return status.error_groups(ctx.ledger, selected, log_path=_stderr_logs(ctx, selected))


def report_data(ctx: Context, what: str) -> ReportData:
    """What `djhpc report` draws, for a run or every run of a table."""
    from djhpc.report import collect

    selected = sorted(runs_of(ctx, what), key=lambda r: r.run_id)
    title = (f"run {what}: {selected[0].table_name}" if what.isdigit()
             else selected[0].table_name if selected else what)
    return collect(ctx.ledger, selected, title, log_path=_stderr_logs(ctx, selected))


def log_path(ctx: Context, run_id: int, chunk: int | None, stderr: bool) -> Path:
    """A task's log: the given chunk's, else the first that went wrong, else the first."""
    run = ctx.ledger.run(run_id)
    chunks = ctx.ledger.chunks(run_id)
    if chunk is None:
        bad = [c for c in chunks if c.state in
               (ChunkState.FAILED, ChunkState.LOST, ChunkState.INTERRUPTED)]
        record = (bad or chunks)[0] if chunks else None
    else:
        record = next((c for c in chunks if c.chunk == chunk), None)
    if record is None:
        raise UsageError(f"Run {run_id} has no chunk {chunk}", f"See djhpc status {run_id}")
    out, err = executors.of(run.executor).log_paths(run, record)
    path = err if stderr else out
    if not path.exists():
        raise UsageError(f"No log yet at {path}",
                         "The task may not have started; see djhpc status " + str(run_id))
    return path


# --- stopping and trying again ------------------------------------------------------


def cancel(ctx: Context, run_id: int) -> tuple[RunReport, bool]:
    """Stop every task of the run and mark it cancelled; no key stays reserved.

    Returns the run's report and whether anything was stopped: a run that had
    already ended keeps its state.
    """
    ledger = ctx.ledger
    run = ledger.run(run_id)
    before = status_of(ctx, run_id)
    if before.final:
        return before, False
    if run.executor == "local" and run.host != socket.gethostname():
        raise UsageError(f"Run {run_id}'s processes run on {run.host}",
                         f"Cancel it there: djhpc cancel {run_id}")
    active = [c for c in ledger.chunks(run_id) if c.state.active]
    # The ledger first, so that no task requeues itself or claims a chunk once
    # it is told to stop; a running task still rolls back its current key.
    ledger.set_run(run_id, state=RunPhase.CANCELLED, finished=now())
    ledger.set_chunk_states(run_id, [c.chunk for c in active], ChunkState.CANCELLED)
    executors.of(run.executor).cancel(run, active)
    for c in active:  # at once: a stopping task may take a moment to drop them itself
        ledger.release_reservations(run, c)
    return status_of(ctx, run_id), True


def retry(ctx: Context, run_id: int) -> Submission:
    """A new attempt for the run's keys not yet in the table (failed, interrupted, lost)."""
    ledger = ctx.ledger
    run = ledger.run(run_id)
    current = status_of(ctx, run_id)  # observes and reconciles: lost chunks are marked first
    if not current.final:
        raise UsageError(f"Run {run_id} is still {current.state}",
                         f"Wait for it (djhpc status {run_id} --watch) or cancel it first")
    stopping = [c for c in current.chunks if c.task_state in STOPPING_TASK_STATES]
    if stopping:
        raise UsageError(f"{len(stopping)} tasks of run {run_id} are still stopping",
                         "Try again in a minute (djhpc status shows them)")
    settings = ctx.settings
    size = _run_chunk_size(ledger, run)
    if size and not {"chunk_size", "tasks"} & set(settings.pinned):
        settings = settings.replace(chunk_size=size, tasks=None)  # as the run was planned
    placement = _retry_placement(run, settings)
    _check_partition(placement)
    attempt = run.attempts + 1
    chunks = ledger.repend(run, attempt, _chunking(settings, placement))
    base = Submission(run_id=run_id, target=run.target, table=run.table_name, keys=0,
                      placement=placement, run_dir=run.run_dir)
    if not chunks:
        return base
    settings_now = {**run.settings, "submitter_pid": os.getpid()}
    ledger.set_run(run_id, executor=placement.executor, settings=settings_now)
    try:
        jobs = _start(ctx, placement, replace(run, attempts=attempt, executor=placement.executor,
                                              settings=settings_now), chunks)
    except BaseException:
        ledger.undo_repend(run, attempt)
        raise
    return replace(base, keys=sum(c.keys for c in chunks), chunks=_plan_chunks(chunks), jobs=jobs)


def escalate(ctx: Context, run: RunRecord, stopped: Sequence[escalation.Stopped]) -> dict[str, Any]:
    """A new attempt, with more memory or time, for the keys of tasks Slurm stopped;
    keys that needed more than the caps allow become their errors. Run by the
    follow-up job (see `escalation`)."""
    ledger = ctx.ledger
    kept = run.settings
    res = Resources.from_json(kept["resources"])
    part = _partition(Placement(executor="slurm", resources=res, max_parallel=None,
                                max_array_size=None))
    max_mem = _setting_amount(kept.get("max_mem"), "max_mem", slurm_tools.parse_memory_mb)
    part_mem = [m for m in (part.max_mem_per_node_mb, part.node_mem_mb) if m] if part else []
    times = [t for t in (kept.get("max_time_s"), part.max_time_s if part else None) if t]
    done = kept.get("escalations") or []
    decision = escalation.decide(
        res, stopped, attempt=run.attempts,
        escalated=sum(1 for e in done if e["reason"] != sizing_.CONTINUED),
        max_escalations=int(kept.get("max_escalations", 2)),
        max_mem_mb=max_mem or min(part_mem, default=None), max_time_s=min(times, default=None),
        continuations_left=int(kept.get("max_continuations", 10)) - (run.attempts - 1))
    chunks = {c.chunk: c for c in ledger.chunks(run.run_id, attempt=run.attempts)}
    for chunk, seq, why in decision.culprits:
        ledger.fail_key(run, chunks[chunk], seq, why)
    if not decision.ranges:
        return {"escalated": False, "failed_keys": len(decision.culprits)}
    settings_now = {**kept, "resources": decision.resources.to_json(),
                    "escalations": [*done, *(e.to_json() for e in decision.escalations)]}
    placement = Placement(executor="slurm", resources=decision.resources,
                          max_parallel=kept.get("max_parallel"),
                          max_array_size=kept.get("max_array_size"))
    attempt = run.attempts + 1
    size = _fitting_chunk_size(ledger, run, decision.resources)
    plan_settings = ctx.settings.replace(chunk_size=size, tasks=None)
    new = ledger.repend(run, attempt, _chunking(plan_settings, placement), decision.ranges)
    if not new:
        return {"escalated": False, "failed_keys": len(decision.culprits)}
    ledger.set_run(run.run_id, settings=settings_now)
    current = replace(run, attempts=attempt, settings=settings_now)
    try:
        jobs = _start(ctx, placement, current, new)
    except BaseException:
        ledger.undo_repend(run, attempt)
        ledger.set_run(run.run_id, settings=kept)
        raise
    for e in decision.escalations:
        log.warning("Run %s, %s", run.run_id, e.describe())
    return {"escalated": True, "attempt": attempt, "jobs": jobs,
            "escalations": [e.to_json() for e in decision.escalations]}


def _fitting_chunk_size(ledger: Ledger, run: RunRecord, res: Resources) -> int | None:
    """Keys per chunk of an attempt the run adds by itself: no more than it was planned
    with, and no more than a task can make before its time limit at the p95 key time
    measured so far."""
    planned = _run_chunk_size(ledger, run)
    seconds = ledger.history(run.table_name).seconds
    if seconds is None or seconds.p95 <= 0:
        return planned
    usable = res.time_s - resources.warning_delay(res, int(run.settings.get("signal_delay", 120)))
    fits = max(1, int((usable - START_S) // (seconds.p95 * sizing_.KEY_MARGIN)))
    return min(planned, fits) if planned else fits


START_S = 15.0  # a task's start: Python, imports, connecting, claiming


def _run_chunk_size(ledger: Ledger, run: RunRecord) -> int | None:
    """The keys per chunk the run was planned with: its first attempt's largest chunk."""
    first = [c.keys for c in ledger.chunks(run.run_id, attempt=1)]
    return max(first) if first else None


def _retry_placement(run: RunRecord, settings: Settings) -> Placement:
    """The run's own executor and resources, with what this retry's flags (or env) change."""
    executor = run.executor if settings.executor == "auto" else executors.choose(settings.executor)
    stored = run.settings.get("resources")
    if isinstance(stored, dict):
        res = resources.with_changes(Resources.from_json(stored), settings)
    else:  # a run recorded before resources were kept
        res = resources.resources(settings)
    max_parallel = settings.max_parallel
    if "max_parallel" not in settings.pinned and run.settings.get("max_parallel"):
        max_parallel = int(run.settings["max_parallel"])
    return Placement(executor=executor, resources=res, max_parallel=max_parallel,
                     max_array_size=_max_array_size(settings, executor))
