"""The `djhpc` command: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from djhpc import __version__, dj, lifecycle, render
from djhpc import doctor as doctor_checks
from djhpc.config import load
from djhpc.errors import DjhpcError, OutcomeError, UsageError
from djhpc.executors.slurm_tools import SlurmError
from djhpc.lifecycle import Context
from djhpc.status import Overview, RunDetail, SlurmPoll, TableView

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
log = logging.getLogger("djhpc")


def _configure_logging(verbose: int) -> None:
    level = os.environ.get("DJHPC_LOG_LEVEL", "").upper() or (
        "DEBUG" if verbose > 1 else "INFO" if verbose else "WARNING")
    logging.basicConfig(level=getattr(logging, level, logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")


def _fail(error: BaseException, verbose: bool) -> None:
    """One line on stderr and the contract's exit code; a traceback only with -v."""
    if verbose:
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__)
    if isinstance(error, DjhpcError):
        click.echo(f"Error: {error.message}", err=True)
        sys.exit(error.exit_code)
    if isinstance(error, SlurmError):
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    text = shorten(str(error), 500) or type(error).__name__
    click.echo(f"Error: {type(error).__name__}: {text}. Run again with -v for the traceback, "
               "and report it if it looks like a bug in djhpc.", err=True)
    sys.exit(1)


def handled(func: F) -> F:
    """Turn every failure into the contract's one-line error and exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(click.get_current_context().find_root().params.get("verbose"))
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as error:
            _fail(error, verbose)

    return wrapper  # type: ignore[return-value]


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Machine-readable output on stdout.")(func)


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _context(cli: dict[str, Any] | None = None, create: bool = True,
             require: bool = True) -> Context:
    dj.route_logs(bool(click.get_current_context().find_root().params.get("verbose")))
    settings, sources = load(cli)
    return Context.open(settings, sources, create=create, require=require)


def shorten(text: str, limit: int = 200) -> str:
    """A user's long input cut to `limit` characters for a one-line message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit - 1]}… ({len(text)} characters)"


class OneLineGroup(click.Group):
    """click's own usage errors in the contract's form: one `Error:` line, exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `djhpc`: its help, as click shows it
                error.show()
                sys.exit(error.exit_code)
            where = error.ctx.command_path if error.ctx else "djhpc"
            message = shorten(error.format_message().rstrip("."), 300)
            click.echo(f"Error: {message}. See {where} --help", err=True)
            sys.exit(2)
        except click.ClickException as error:
            click.echo(f"Error: {shorten(error.format_message(), 300)}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(context_settings=CONTEXT, cls=OneLineGroup)
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks on errors.")
@click.version_option(__version__, "-V", "--version")
def main(verbose: int) -> None:
    """Populate DataJoint tables on Slurm: pending keys → chunks → array tasks.

    \b
    Start with:   djhpc doctor
    Then:         djhpc submit my_pipeline.MyTable --dry-run
                  djhpc submit my_pipeline.MyTable
                  djhpc status
    See a run:    djhpc report RUN_ID
    """
    _configure_logging(verbose)


# --- submit --------------------------------------------------------------------


@main.command(context_settings=CONTEXT)
@click.argument("target")
@click.option("-r", "--restrict", "restrictions", multiple=True, metavar="SQL",
              help="SQL condition ANDed with the key_source; repeatable.")
@click.option("--chunk-size", type=int, help="Keys per chunk (one chunk per task).")
@click.option("--tasks", type=int, help="Number of chunks, instead of --chunk-size.")
@click.option("--max-parallel", type=int, help="At most N tasks of this run at once.")
@click.option("-e", "--executor", type=click.Choice(["auto", "slurm", "local", "debug"]),
              help="auto: slurm where sbatch is on PATH, else local.")
@click.option("-p", "--profile", help="Cluster profile (slurm_templates/ or your own).")
@click.option("--partition", help="Slurm partition.")
@click.option("--account", help="Slurm account (project).")
@click.option("--qos", help="Slurm QOS.")
@click.option("--time", help="Walltime per task, D-HH:MM:SS.")
@click.option("--mem", help="Memory per task, e.g. 4G.")
@click.option("--cpus", type=int, help="CPUs per task.")
@click.option("--gpus", type=int, help="GPUs per task.")
@click.option("--make-kwargs", metavar="JSON",
              help="Keyword arguments for make(), as populate(make_kwargs=) passes them.")
@click.option("--history/--no-history", default=None,
              help="Size memory, time and chunks from the table's earlier runs [default: on].")
@click.option("--max-mem", help="The most memory an automatic escalation may ask for.")
@click.option("--dry-run", is_flag=True, help="Plan only: write nothing, submit nothing.")
@click.option("--wait", is_flag=True, help="Block until the run ends; exit 1 if a key failed.")
@click.option("-y", "--yes", is_flag=True, help="No confirmation prompt.")
@json_option
@handled
def submit(target: str, restrictions: tuple[str, ...], dry_run: bool, wait: bool, yes: bool,
           as_json: bool, **options: Any) -> None:
    """Populate TARGET's pending keys as Slurm array tasks (or local processes).

    \b
    TARGET is one of:
      pkg.module.Table   pkg.module:Table   path/to/file.py:Table
      Table              (looked up in `modules:` of djhpc.yaml)
    """
    for name in ("chunk_size", "tasks", "max_parallel", "cpus"):
        if options.get(name) is not None and options[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1", "Give a positive number")
    if options.get("chunk_size") and options.get("tasks"):
        raise UsageError("--chunk-size and --tasks both given", "Use one of them")
    options["make_kwargs"] = _json_object(options.get("make_kwargs"), "--make-kwargs")
    ctx = _context(options, create=not dry_run, require=False)
    prepared = lifecycle.prepare(ctx, target, restrictions)
    if dry_run:
        sub = lifecycle.dry_run(ctx, prepared)
        _emit(sub.to_json()) if as_json else click.echo(render.submission(sub, dry_run=True))
        return
    if not yes and not as_json and sys.stdin.isatty():
        preview = lifecycle.dry_run(ctx, prepared)
        if preview.keys == 0:
            click.echo("Nothing to do: every key of the key_source is in the table"
                       + (f" or held by an active run ({preview.held})" if preview.held else "") + ".")
            return
        click.echo(render.submission(preview, dry_run=False))
        click.confirm(f"Submit {preview.keys} keys in {len(preview.chunks)} tasks?",
                      default=True, abort=True)
    warning = lifecycle.password_warning(ctx, prepared.placement.executor)
    if warning:
        click.echo(f"Warning: {warning}.", err=True)
    sub = lifecycle.submit(ctx, prepared)
    if sub.run_id is None:
        message = "Nothing to do: no pending keys" + (
            f" ({sub.held} are held by another active run)" if sub.held else "") + "."
        _emit(sub.to_json() | {"message": message}) if as_json else click.echo(message)
        return
    if not as_json:
        click.echo(render.submission(sub, dry_run=False))
    _follow(ctx, sub, sub.run_id, wait, as_json)


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object given on the command line, or a usage error saying what is wrong."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{option} is not valid JSON ({error.msg} at character {error.pos}): "
                         f"{shorten(text, 80)}",
                         f"Give a JSON object, e.g. {option} '{{\"window\": 5}}'") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option} must be a JSON object, not {type(value).__name__}",
                         f"Give a JSON object, e.g. {option} '{{\"window\": 5}}'")
    return value


def _follow(ctx: Context, sub: lifecycle.Submission, run_id: int, wait: bool,
            as_json: bool) -> None:
    """After a submit or retry: wait if asked, print, and exit 1 if keys are missing."""
    if wait:
        with render.ProgressLine(enabled=not as_json and sys.stdout.isatty()) as progress:
            final = lifecycle.wait(ctx, run_id, on_update=progress.update)
        sub = replace(sub, status=final)
        if not as_json:
            click.echo(render.run_detail(final, []))
    if as_json:
        _emit(sub.to_json())
    if sub.status is not None and sub.status.keys.remaining:
        raise OutcomeError(f"Run {run_id} ended {sub.status.state}: "
                           f"{sub.status.keys.remaining} of {sub.status.keys.total} keys are not "
                           "in the table",
                           f"See djhpc errors {run_id}, then djhpc retry {run_id}")


# --- status and friends --------------------------------------------------------------


@main.command(context_settings=CONTEXT)
@click.argument("what", required=False, metavar="[RUN_ID|TARGET]")
@click.option("--watch", is_flag=True, help="Refresh until the run ends (Ctrl-C to stop).")
@click.option("--interval", default=10.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds between refreshes (Slurm itself is asked at most every 30 s).")
@click.option("--all", "show_all", is_flag=True, help="Every run, not just active and recent.")
@json_option
@handled
def status(what: str | None, watch: bool, interval: float, show_all: bool, as_json: bool) -> None:
    """Where your runs stand: keys, tasks, errors, speed and cost.

    Without an argument: your active and recent runs. With a RUN_ID: that run
    and its chunks. With a TARGET: the table's progress and its runs.
    """
    ctx = _context(create=False, require=what is not None)
    # --watch reads the ledger every --interval, but asks Slurm at most every 30 s.
    poll = SlurmPoll() if watch else None
    if watch and render.terminal() and not as_json:
        render.watch(lambda: _status_once(ctx, what, show_all, as_json, poll), interval)
        return
    while True:
        output, final = _status_once(ctx, what, show_all, as_json, poll)
        if not watch:
            click.echo(output)
            return
        click.clear() if sys.stdout.isatty() and not as_json else None
        click.echo(output)
        if final:
            return
        time.sleep(interval)


def _status_once(ctx: Context, what: str | None, show_all: bool, as_json: bool,
                 poll: SlurmPoll | None = None) -> tuple[str, bool]:
    """One refresh of the status view asked for: its text (or JSON) and whether it is final."""
    view: Overview | RunDetail | TableView
    if what is None:
        view = lifecycle.overview(ctx, show_all, poll)
    elif what.isdigit():
        view = lifecycle.run_detail(ctx, int(what), poll)
    else:
        view = lifecycle.table_view(ctx, what, poll)
    if as_json:
        return json.dumps(view.to_json(), indent=2, default=str), view.final
    return render.status_view(view), view.final


@main.command(context_settings=CONTEXT)
@click.argument("target")
@json_option
@handled
def history(target: str, as_json: bool) -> None:
    """What TARGET's earlier runs measured: time per key, memory and CPU per task.

    The next submit sizes its tasks from this (see --no-history).
    """
    past = lifecycle.history(_context(create=False, require=False), target)
    _emit(past.to_json()) if as_json else click.echo(render.history(past))


@main.command(context_settings=CONTEXT)
@click.argument("what", metavar="RUN_ID|TARGET")
@json_option
@handled
def errors(what: str, as_json: bool) -> None:
    """Errors grouped by message: counts, example keys, the task and its log."""
    groups = lifecycle.errors(_context(create=False), what)
    if as_json:
        _emit({"groups": [g.to_json() for g in groups]})
    else:
        click.echo(render.errors(groups))


@main.command(context_settings=CONTEXT)
@click.argument("run_id", type=int)
@click.option("--chunk", type=int, help="Which chunk (default: the first that failed, else 0).")
@click.option("--stderr", "show_stderr", is_flag=True, help="The task's stderr instead of stdout.")
@handled
def logs(run_id: int, chunk: int | None, show_stderr: bool) -> None:
    """The output of one of the run's tasks (Slurm or local)."""
    path = lifecycle.log_path(_context(create=False), run_id, chunk, show_stderr)
    click.echo(f"==> {path} <==", err=True)
    click.echo(path.read_text(errors="replace"), nl=False)


@main.command(context_settings=CONTEXT)
@click.argument("run_id", type=int)
@click.option("-y", "--yes", is_flag=True, help="No confirmation prompt.")
@json_option
@handled
def cancel(run_id: int, yes: bool, as_json: bool) -> None:
    """Cancel every task of the run; its unfinished keys stay pending."""
    ctx = _context(create=False)
    lifecycle.find_run(ctx, run_id)  # an unknown run fails before any prompt
    if not yes and not as_json and sys.stdin.isatty():
        click.confirm(f"Cancel run {run_id}?", default=True, abort=True)
    report, stopped = lifecycle.cancel(ctx, run_id)
    if not stopped:
        message = (f"Run {run_id} had already ended ({report.state}): nothing to cancel. "
                   f"{report.keys.done}/{report.keys.total} keys done.")
        _emit(report.to_json() | {"message": message}) if as_json else click.echo(message)
        return
    if as_json:
        _emit(report.to_json())
    else:
        click.echo(f"Cancelled run {run_id}: {report.keys.done}/{report.keys.total} keys done; "
                   f"the rest can be picked up with djhpc retry {run_id}.")


@main.command(context_settings=CONTEXT)
@click.argument("run_id", type=int)
@click.option("--wait", is_flag=True, help="Block until the new attempt ends.")
@click.option("-e", "--executor", type=click.Choice(["auto", "slurm", "local", "debug"]),
              help="Run the new attempt elsewhere (default: as before).")
@click.option("--max-parallel", type=int, help="At most N tasks at once.")
@click.option("--time", help="Walltime per task for the new attempt.")
@click.option("--mem", help="Memory per task for the new attempt.")
@json_option
@handled
def retry(run_id: int, wait: bool, as_json: bool, **options: Any) -> None:
    """Re-pend the run's failed, interrupted and lost keys and submit them again."""
    ctx = _context(options, create=False)
    sub = lifecycle.retry(ctx, run_id)
    if not sub.chunks:
        message = f"Nothing to retry: every key of run {run_id} is in the table."
        _emit(sub.to_json() | {"message": message}) if as_json else click.echo(message)
        return
    if not as_json:
        click.echo(f"Run {run_id}, new attempt: {sub.keys} keys in {len(sub.chunks)} chunks"
                   + (f" (Slurm job {', '.join(sub.jobs)})" if sub.jobs else "") + ".")
    _follow(ctx, sub, run_id, wait, as_json)


@main.command(context_settings=CONTEXT)
@json_option
@handled
def doctor(as_json: bool) -> None:
    """Check database, credentials, ledger schema, Slurm and profile."""
    dj.route_logs(bool(click.get_current_context().find_root().params.get("verbose")))
    checks = doctor_checks.run_checks()
    data = [c.to_json() for c in checks]
    _emit({"checks": data}) if as_json else click.echo(render.doctor(data))
    if not all(c.ok for c in checks):
        sys.exit(1)


@main.command(context_settings=CONTEXT)
@click.argument("what", metavar="RUN_ID|TARGET")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the page (default: djhpc-report-<run or table>.html here).")
@handled
def report(what: str, output: Path | None) -> None:
    """One self-contained HTML file showing a run (or every run of a TARGET).

    Timeline of the tasks, progress over time, per-key make() durations,
    CPU and memory per task, and errors. It works offline: copy it anywhere.
    Needs plotly: pip install djhpc[report].
    """
    from djhpc import report as reports

    reports.require_plotly()  # before any database or Slurm work
    data = lifecycle.report_data(_context(create=False), what)
    path = output or reports.default_path(what)
    reports.write(path, reports.build_html(data))
    click.echo(f"Wrote {path.resolve()}")
