"""Text for people: tables, progress bars and colours, drawn by rich.

Every function returns the finished text, which the CLI echoes. On a terminal
it carries colours (none when NO_COLOR is set); piped, it is plain text with
whitespace-aligned columns, for grep and awk. `watch` and `progress` redraw
in place on a terminal.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from djhpc.lifecycle import Submission
from djhpc.resources import format_duration
from djhpc.sizing import MIN_KEYS, Escalation, History, KeySeconds
from djhpc.status import ErrorGroup, Overview, RunDetail, RunReport, TableView

STATE_COLOURS = {"done": "green", "running": "cyan", "queued": "blue", "failed": "red",
                 "incomplete": "yellow", "cancelled": "magenta", "lost": "red",
                 "interrupted": "yellow"}
TASK_ABBREV = {"pending": "pend", "running": "run", "completed": "ok", "failed": "fail",
               "cancelled": "canc", "timeout": "time", "out_of_memory": "oom",
               "node_fail": "node", "preempted": "pre", "requeued": "req",
               "suspended": "susp", "unknown": "?"}
PIPED_WIDTH = 200  # piped output is not wrapped to a terminal's width


def terminal() -> bool:
    """Whether stdout, where the CLI echoes, is a terminal."""
    return sys.stdout.isatty()


def console(file: Any = None) -> Console:
    tty = terminal()
    width = shutil.get_terminal_size().columns if tty else PIPED_WIDTH
    # highlight=False: rich would colour numbers and paths in our text by itself.
    return Console(file=file if file is not None else io.StringIO(), force_terminal=tty,
                   width=width, highlight=False, no_color=bool(os.environ.get("NO_COLOR")))


def text(*renderables: RenderableType) -> str:
    out = console()
    for item in renderables:
        out.print(item)
    file = out.file
    assert isinstance(file, io.StringIO)
    # rich pads every line to the table's width; keep none of it past the text.
    return "\n".join(line.rstrip() for line in file.getvalue().rstrip("\n").splitlines())


def _state(name: str) -> Text:
    return Text(name, style=f"{'bold ' if name in ('failed', 'done') else ''}"
                f"{STATE_COLOURS.get(name, '')}".strip())


def state(name: str) -> str:
    return text(_state(name))


def _bar(done: int, total: int, width: int = 20) -> RenderableType:
    share = done / total if total else 1.0
    percent = Text(f" {share:4.0%}")
    if not terminal():
        return percent
    grid = Table.grid()
    grid.add_row(ProgressBar(total=max(total, 1), completed=done if total else 1, width=width,
                             complete_style="green", finished_style="green"), percent)
    return grid


def bar(done: int, total: int, width: int = 20) -> str:
    return text(_bar(done, total, width))


def duration(seconds: float | None) -> str:
    """H:MM:SS, as rich's progress columns show time."""
    if seconds is None:
        return "-"
    return str(timedelta(seconds=round(seconds)))


def _short(seconds: float) -> str:
    """Seconds to three figures under a minute (keys may take milliseconds), else H:MM:SS."""
    return f"{seconds:.3g}s" if seconds < 60 else duration(seconds)


def _add(grid: Table, *cells: RenderableType) -> None:
    """A row whose plain strings stay text: rich would read "[1-3]" in a job id as markup."""
    grid.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells))


def _table(header: Sequence[str]) -> Table:
    boxed = terminal()  # piped: no rule under the header, only columns for grep and awk
    grid = Table(box=box.SIMPLE_HEAD if boxed else None, show_edge=False, pad_edge=False,
                 header_style="bold", padding=(0, 1 if boxed else 2, 0, 0))
    for name in header:
        grid.add_column(name, overflow="fold")  # a narrow terminal wraps a job id, never cuts it
    return grid


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Columns aligned to their widest cell; cells may carry colour codes."""
    grid = _table(header)
    for row in rows:
        grid.add_row(*(Text.from_ansi(str(cell)) for cell in row))
    return text(grid)


def tasks(counts: dict[str, int]) -> str:
    order = list(TASK_ABBREV)
    items = sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    return " ".join(f"{TASK_ABBREV.get(k, k)} {v}" for k, v in items) or "-"


def submission(sub: Submission, dry_run: bool) -> str:
    sizes = sorted({c.keys for c in sub.chunks})
    size_text = (f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}") if sizes else "0"
    lines: list[RenderableType] = [Text(f"{sub.target} → {sub.table}", style="bold")]
    lines.append(Text(f"  {sub.keys} pending keys in {len(sub.chunks)} chunks of {size_text} "
                      f"keys, executor {sub.executor}"
                      + (f", {sub.arrays} Slurm array{'s' * (sub.arrays != 1)}"
                         if sub.executor == "slurm" else "")))
    if sub.held:
        lines.append(Text(f"  {sub.held} more keys are held by another active run and left out"))
    lines.append(Text(f"  resources per task: {sub.resources.describe()}"))
    if sub.sizing is not None and (sub.sizing.source == "history" or sub.sizing.note):
        lines.append(Text(f"  sizing: {sub.sizing.describe()}"))
    lines += [Text(line) for line in allocation_lines(sub)]
    if sub.max_parallel:
        lines.append(Text(f"  at most {sub.max_parallel} tasks at once"))
    for warning in sub.warnings:
        lines.append(Text(f"  note: {warning}", style="yellow"))
    if dry_run:
        lines.append(Text("Dry run: nothing recorded, nothing submitted."))
        if sub.preview:
            lines.append(Text("Task script (first array):" if sub.executor == "slurm"
                              else "Tasks:"))
            lines.append(Text("  " + sub.preview.strip().replace("\n", "\n  "), style="dim"))
    elif sub.run_id is not None:
        jobs = f"Slurm job {', '.join(sub.jobs)}" if sub.jobs else f"{sub.executor} processes"
        lines.append(Text.assemble((f"Submitted run {sub.run_id}", "bold"), f": {jobs}."))
        lines.append(Text(f"  follow it:  djhpc status {sub.run_id} --watch"))
    return text(*lines)


def allocation_lines(sub: Submission) -> list[str]:
    """The dry run's billing estimate and the quota left, where they can be known."""
    cost = sub.allocation
    if cost is None or sub.executor != "slurm" or not sub.chunks:
        return []
    est = cost.estimate
    if est is None:
        lines = [f"  billing: unknown (partition {sub.resources.partition or '(default)'} cannot "
                 "be read here)"]
    else:
        per = f"{est.rate:g} billing units per task" + (
            "" if est.source == "partition" else " (no weights: billed per CPU)")
        lines = [f"  billing: at most {est.at_most:.2f} billing hours "
                 f"({est.tasks} tasks x {per} x the full --time; quota for that much is "
                 "reserved as tasks start)"]
        if est.expected is not None:
            lines[-1] += f", about {est.expected:.2f} expected from earlier runs"
    q = cost.quota
    if q is not None and q.remaining is not None:
        lines.append(f"  quota:   {q.remaining:.1f} billing hours left on {q.account} "
                     f"(of {q.total:.1f}; from {'`cost`' if q.source.value == 'cost' else 'Slurm'})")
    elif sub.resources.account:
        lines.append(f"  quota:   unknown for {sub.resources.account}")
    return lines



def _count(n: int, style: str = "red") -> Text:
    return Text(str(n), style=style if n else "")


def _run_row(r: RunReport) -> list[RenderableType]:
    return [str(r.run_id), r.target, _state(r.state), f"{r.keys.done}/{r.keys.total}",
            _bar(r.keys.done, r.keys.total, 12), _count(r.keys.error), tasks(r.tasks),
            f"{r.keys_per_hour:.0f}" if r.keys_per_hour else "-",
            duration(r.eta_s) if r.state in ("running", "queued") else "-",
            f"{r.core_hours:.2f}", billing(r.billing_hours), str(r.attempts)]


RUN_HEADER = ["RUN", "TARGET", "STATE", "KEYS", "PROGRESS", "ERR", "TASKS", "KEYS/H", "ETA",
              "CORE-H", "BILL-H", "TRY"]


def billing(hours: float | None) -> str:
    return "-" if hours is None else f"{hours:.2f}"


def billing_totals(totals: dict[str, dict[str, float]]) -> str:
    """Billing hours per table and per account, below the list of runs."""
    lines = []
    for label, sums in (("table", totals.get("by_table", {})),
                        ("account", totals.get("by_account", {}))):
        if len(sums) > 0:
            parts = ", ".join(f"{name} {hours:.2f}" for name, hours in sorted(sums.items()))
            lines.append(f"billing hours by {label}: {parts}")
    return "\n".join(lines)


def _runs(reports: Sequence[RunReport]) -> RenderableType:
    if not reports:
        return Text("No runs yet. Start one with: djhpc submit MyTable")
    grid = _table(RUN_HEADER)
    for r in reports:
        _add(grid, *_run_row(r))
    return grid


def runs(reports: Sequence[RunReport]) -> str:
    from djhpc.status import billing_totals as totals

    summary = billing_totals(totals(reports)) if reports else ""
    return text(_runs(reports)) + ("\n\n" + summary if summary else "")


def _run_detail(r: RunReport, groups: Sequence[ErrorGroup], max_chunks: int = 50,
                key_seconds: KeySeconds | None = None) -> list[RenderableType]:
    k = r.keys
    head = Text.assemble((f"Run {r.run_id}", "bold"), f"  {r.target} → {r.table}  ",
                         _state(r.state))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    keys = Table.grid(padding=(0, 2))
    _add(keys, _bar(k.done, k.total),
                 Text.assemble(f"{k.done}/{k.total} done, ", _count(k.error), " failed, "
                               f"{k.reserved} in progress, {k.remaining} not yet in the table"))
    _add(facts, "keys", keys)
    _add(facts, "tasks", f"{tasks(r.tasks)}   (executor {r.executor}, attempt {r.attempts})")
    _add(facts, "time", f"created {r.created}, started {r.started or '-'}, "
                          f"finished {r.finished or '-'}")
    speed = f"{r.keys_per_hour:.0f} keys/h" if r.keys_per_hour else "-"
    if r.eta_s is not None and not r.final:
        speed += f", ETA {duration(r.eta_s)}"
    _add(facts, "speed", speed)
    if key_seconds is not None:
        _add(facts, "per key", f"make() p50 {_short(key_seconds.p50)}, p95 "
                               f"{_short(key_seconds.p95)}, max {_short(key_seconds.max)}")
    eff = r.efficiency
    cost = f"{r.core_hours:.2f} core-hours" + (
        f", {r.billing_hours:.2f} billing hours" if r.billing_hours is not None else "")
    parts = [f"{label} {value:.0%}" for label, value in
             (("CPU", eff.cpu), ("memory", eff.memory), ("time", eff.time)) if value is not None]
    if parts:
        cost += " (efficiency: " + ", ".join(parts) + ")"
    _add(facts, "cost", cost)
    for raised in r.escalations:
        facts.add_row(Text("escalated", style="cyan"),
                      Text(Escalation.from_json(raised).describe(), style="cyan"))
    for hint in r.hints:
        facts.add_row(Text("hint", style="yellow"), Text(hint, style="yellow"))
    out: list[RenderableType] = [head, facts]
    shown = r.chunks if len(r.chunks) <= max_chunks else [
        c for c in r.chunks if c.state not in ("done",)][:max_chunks]
    if shown:
        grid = _table(["CHUNK", "STATE", "KEYS", "DONE", "ERR", "JOB", "TASK", "HOST", "ELAPSED",
                       "MAXRSS"])
        for c in shown:
            _add(grid, f"{c.chunk}" + (f" (split of {c.split_from})" if c.split_from is not None
                                      else ""), _state(c.state), str(c.keys), str(c.done), _count(c.error),
                         c.job or "-", c.task_state or "-", c.host or "-", duration(c.elapsed_s),
                         f"{c.max_rss_mb:.0f}M" if c.max_rss_mb else "-")
        out += [Text(""), grid]
        if len(shown) < len(r.chunks):
            out.append(Text(f"  ({len(r.chunks) - len(shown)} more chunks, all done: "
                            "--json shows all)"))
    if groups:
        out.append(Text(""))
        out.append(Text.assemble(("Top errors", "bold"), f"  (details: djhpc errors {r.run_id})"))
        for g in groups[:5]:
            out.append(Text.assemble((f"  {g.count:>5}x  ", "red"), _first_line(g.message)))
    return out


def run_detail(r: RunReport, groups: Sequence[ErrorGroup], max_chunks: int = 50,
               key_seconds: KeySeconds | None = None) -> str:
    return text(*_run_detail(r, groups, max_chunks, key_seconds))


def errors(groups: Sequence[ErrorGroup]) -> str:
    if not groups:
        return "No errors recorded."
    lines: list[RenderableType] = []
    for g in groups:
        lines.append(Text.assemble((f"{g.count}x ", "bold red"), _first_line(g.message)))
        if g.count > 1 and g.example.strip() != g.message:
            lines.append(Text(f"   e.g. {_first_line(g.example)}"))
        lines.append(Text(f"   run {g.run_id}, chunk {g.chunk}, attempt(s) "
                          f"{', '.join(map(str, g.attempts))}; log: {g.log or '-'}", style="dim"))
        for key in g.keys:
            lines.append(Text(f"   key {_key(key)}"))
        stack = [line for line in g.stack.strip().splitlines() if line.strip()]
        if stack:
            lines.append(Text("   " + "\n   ".join(stack[-6:])))
        lines.append(Text(""))
    return text(*lines).rstrip()


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items()) or "(no key: the task itself failed)"


def doctor(checks: Sequence[dict[str, Any]]) -> str:
    grid = Table.grid(padding=(0, 2))
    for check in checks:
        _add(grid, Text("ok", style="green") if check["ok"] else Text("FAIL", style="bold red"),
                     check["name"], Text(str(check["detail"])))
    return text(grid)


def status_view(view: Overview | RunDetail | TableView) -> str:
    if isinstance(view, Overview):
        return runs(view.runs)
    if isinstance(view, RunDetail):
        return run_detail(view.report, view.errors, key_seconds=view.key_seconds)
    shown = target_view(view.target, view.remaining, view.total, view.runs)
    measured = view.history.seconds if view.history else None
    if view.history is None or measured is None:
        return shown
    peak = view.history.max_rss_mb
    return shown + (f"\nhistory: make() p50 {measured.p50:.3g}s, p95 {measured.p95:.3g}s per key"
                    + (f", task peak memory {peak:.0f} MB" if peak else "")
                    + f" (djhpc history {view.target})")


class ProgressLine:
    """One line that redraws itself while a run is followed; ended cleanly however we leave."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.open = False  # drawn, without its newline yet

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.open:
            print()

    def update(self, report: RunReport) -> None:
        if not self.enabled:
            return
        print(progress(report), end="", flush=True)
        self.open = True


def target_view(name: str, remaining: int, total: int, reports: Sequence[RunReport]) -> str:
    done = total - remaining
    progress = Table.grid(padding=(0, 2))
    _add(progress, "  DataJoint progress:", _bar(done, total),
                     f"{done}/{total} in the table, {remaining} remaining")
    return text(Text(name, style="bold"), progress, Text(""),
                _runs(reports) if reports else Text("No djhpc runs on this table yet."))


# --- redrawn in place --------------------------------------------------------------


def watch(frame: Callable[[], tuple[str, bool]], interval: float) -> None:
    """Redraw `frame()` in place until it says it is final; Ctrl-C stops it quietly.

    On a terminal only: piped output gets one frame after another.
    """
    screen = console(file=sys.stdout)
    try:
        with Live(console=screen, auto_refresh=False, redirect_stdout=False,
                  vertical_overflow="visible") as live:
            while True:
                output, final = frame()
                live.update(Group(Text.from_ansi(output), Text(
                    "" if final else f"refreshed {time.strftime('%H:%M:%S')}, every "
                    f"{interval:g} s; Ctrl-C to stop", style="dim")), refresh=True)
                if final:
                    return
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def progress(report: RunReport) -> str:
    """The `--wait` line: the CLI redraws it in place with a carriage return."""
    k = report.keys
    line = Table.grid(padding=(0, 1))
    _add(line, " ", _bar(k.done, k.total),
         Text.assemble(f"{k.done}/{k.total} done, ", _count(k.error), " failed, "
                       f"{tasks(report.tasks)}"))
    return "\r" + text(line) + "\x1b[K"  # the rest of a longer earlier line is cleared


__all__ = ["ProgressLine", "bar", "doctor", "duration", "errors", "format_duration",
           "progress", "run_detail", "runs", "status_view", "submission", "target_view", "watch"]


def history(past: History) -> str:
    """`djhpc history`: what earlier runs of a table measured."""
    head = Text(past.table, style="bold")
    if not past.runs:
        return text(head, Text("  no measured runs yet: the first submit sizes from the "
                               "profile or your flags"))
    data = past.to_json()
    runs = ", ".join(map(str, past.runs))
    lines: list[RenderableType] = [head, Text(f"  runs {runs}: {past.measured} keys timed"
                                              + (f", {past.failed_keys} failed" if
                                                 past.failed_keys else ""))]
    grid = Table(box=None, pad_edge=False, padding=(0, 2))
    for column in ("", "p50", "p95", "max"):
        grid.add_column(column, justify="left" if not column else "right")
    for label, key, unit in (("make() per key", "key_seconds", "s"),
                             ("task elapsed", "task_elapsed_s", "s"),
                             ("task CPU", "task_cpu_s", "s"),
                             ("task peak memory", "task_rss_mb", " MB")):
        spread = data.get(key)
        if spread:
            grid.add_row(f"  {label}", *(f"{spread[p]:g}{unit}" for p in ("p50", "p95", "max")))
    lines.append(grid)
    lines.append(Text("  the next submit sizes memory, time and chunks from these" if past.enough
                      else f"  {past.measured} of the {MIN_KEYS} timed keys sizing needs",
                      style="dim"))
    return text(*lines)
