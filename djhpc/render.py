"""Text for people: tables, progress bars and colours (colours only on a terminal).

click drops the colour codes by itself when output is piped, so the same text
serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from djhpc.lifecycle import Submission
from djhpc.resources import format_duration
from djhpc.status import ErrorGroup, Overview, RunDetail, RunReport, TableView

STATE_COLOURS = {"done": "green", "running": "cyan", "queued": "blue", "failed": "red",
                 "incomplete": "yellow", "cancelled": "magenta", "lost": "red",
                 "interrupted": "yellow"}
TASK_ABBREV = {"pending": "pend", "running": "run", "completed": "ok", "failed": "fail",
               "cancelled": "canc", "timeout": "time", "out_of_memory": "oom",
               "node_fail": "node", "preempted": "pre", "requeued": "req",
               "suspended": "susp", "unknown": "?"}


def state(text: str) -> str:
    return click.style(text, fg=STATE_COLOURS.get(text), bold=text in ("failed", "done"))


def bar(done: int, total: int, width: int = 20) -> str:
    share = done / total if total else 1.0
    filled = round(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {share:4.0%}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell (measured without colour codes)."""
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(click.unstyle(str(row[i]))) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [str(cell) + " " * (widths[i] - len(click.unstyle(str(cell))))
                 for i, cell in enumerate(row)]
        line = "  ".join(parts).rstrip()
        lines.append(click.style(line, bold=True) if n == 0 else line)
    return "\n".join(lines)


def tasks(counts: dict[str, int]) -> str:
    order = list(TASK_ABBREV)
    items = sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    return " ".join(f"{TASK_ABBREV.get(k, k)} {v}" for k, v in items) or "-"


def submission(sub: Submission, dry_run: bool) -> str:
    sizes = sorted({c.keys for c in sub.chunks})
    size_text = (f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}") if sizes else "0"
    lines = [f"{sub.target} → {sub.table}"]
    lines.append(f"  {sub.keys} pending keys in {len(sub.chunks)} chunks of {size_text} keys, "
                 f"executor {sub.executor}"
                 + (f", {sub.arrays} Slurm array{'s' * (sub.arrays != 1)}"
                    if sub.executor == "slurm" else ""))
    if sub.held:
        lines.append(f"  {sub.held} more keys are held by another active run and left out")
    lines.append(f"  resources per task: {sub.resources.describe()}")
    lines += allocation_lines(sub)
    if sub.max_parallel:
        lines.append(f"  at most {sub.max_parallel} tasks at once")
    for warning in sub.warnings:
        lines.append(click.style(f"  note: {warning}", fg="yellow"))
    if dry_run:
        lines.append("Dry run: nothing recorded, nothing submitted.")
        if sub.preview:
            lines.append("Task script (first array):" if sub.executor == "slurm" else "Tasks:")
            lines.append("  " + sub.preview.strip().replace("\n", "\n  "))
    elif sub.run_id is not None:
        jobs = f"Slurm job {', '.join(sub.jobs)}" if sub.jobs else f"{sub.executor} processes"
        lines.append(click.style(f"Submitted run {sub.run_id}", bold=True) + f": {jobs}.")
        lines.append(f"  follow it:  djhpc status {sub.run_id} --watch")
    return "\n".join(lines)


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


def run_line(r: RunReport) -> list[str]:
    return [str(r.run_id), r.target, state(r.state), f"{r.keys.done}/{r.keys.total}",
            bar(r.keys.done, r.keys.total, 12),
            click.style(str(r.keys.error), fg="red") if r.keys.error else "0",
            tasks(r.tasks),
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


def runs(reports: Sequence[RunReport]) -> str:
    if not reports:
        return "No runs yet. Start one with: djhpc submit MyTable"
    from djhpc.status import billing_totals as totals

    text = table([run_line(r) for r in reports], RUN_HEADER)
    summary = billing_totals(totals(reports))
    return text + ("\n\n" + summary if summary else "")


def run_detail(r: RunReport, groups: Sequence[ErrorGroup], max_chunks: int = 50) -> str:
    k = r.keys
    lines = [
        click.style(f"Run {r.run_id}", bold=True) + f"  {r.target} → {r.table}  " + state(r.state),
        f"  keys     {bar(k.done, k.total)}  {k.done}/{k.total} done, {k.error} failed, "
        f"{k.reserved} in progress, {k.remaining} not yet in the table",
        f"  tasks    {tasks(r.tasks)}   (executor {r.executor}, attempt {r.attempts})",
        f"  time     created {r.created}, started {r.started or '-'}, "
        f"finished {r.finished or '-'}",
        f"  speed    {r.keys_per_hour:.0f} keys/h" if r.keys_per_hour else "  speed    -",
    ]
    if r.eta_s is not None and not r.final:
        lines[-1] += f", ETA {duration(r.eta_s)}"
    eff = r.efficiency
    cost = f"  cost     {r.core_hours:.2f} core-hours" + (
        f", {r.billing_hours:.2f} billing hours" if r.billing_hours is not None else "")
    parts = [f"{label} {value:.0%}" for label, value in
             (("CPU", eff.cpu), ("memory", eff.memory), ("time", eff.time)) if value is not None]
    if parts:
        cost += " (efficiency: " + ", ".join(parts) + ")"
    lines.append(cost)
    for hint in r.hints:
        lines.append(click.style(f"  hint: {hint}", fg="yellow"))
    shown = r.chunks if len(r.chunks) <= max_chunks else [
        c for c in r.chunks if c.state not in ("done",)][:max_chunks]
    if shown:
        rows = [[str(c.chunk), state(c.state), str(c.keys), str(c.done),
                 click.style(str(c.error), fg="red") if c.error else "0",
                 c.job or "-", c.task_state or "-", c.host or "-", duration(c.elapsed_s),
                 f"{c.max_rss_mb:.0f}M" if c.max_rss_mb else "-"] for c in shown]
        lines.append("")
        lines.append(table(rows, ["CHUNK", "STATE", "KEYS", "DONE", "ERR", "JOB", "TASK", "HOST",
                                  "ELAPSED", "MAXRSS"]))
        if len(shown) < len(r.chunks):
            lines.append(f"  ({len(r.chunks) - len(shown)} more chunks, all done: --json shows all)")
    if groups:
        lines.append("")
        lines.append(click.style("Top errors", bold=True) + f"  (details: djhpc errors {r.run_id})")
        for g in groups[:5]:
            lines.append(f"  {g.count:>5}x  {_first_line(g.message)}")
    return "\n".join(lines)


def errors(groups: Sequence[ErrorGroup]) -> str:
    if not groups:
        return "No errors recorded."
    lines = []
    for g in groups:
        lines.append(click.style(f"{g.count}x ", fg="red", bold=True) + _first_line(g.message))
        if g.count > 1 and g.example.strip() != g.message:
            lines.append(f"   e.g. {_first_line(g.example)}")
        lines.append(f"   run {g.run_id}, chunk {g.chunk}, attempt(s) "
                     f"{', '.join(map(str, g.attempts))}; log: {g.log or '-'}")
        for key in g.keys:
            lines.append(f"   key {_key(key)}")
        stack = [line for line in g.stack.strip().splitlines() if line.strip()]
        if stack:
            lines.append("   " + "\n   ".join(stack[-6:]))
        lines.append("")
    return "\n".join(lines).rstrip()


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items()) or "(no key: the task itself failed)"


def doctor(checks: Sequence[dict[str, Any]]) -> str:
    lines = []
    for check in checks:
        mark = click.style("ok  ", fg="green") if check["ok"] else click.style("FAIL", fg="red")
        lines.append(f"{mark}  {check['name']:<10} {check['detail']}")
    return "\n".join(lines)


def status_view(view: Overview | RunDetail | TableView) -> str:
    if isinstance(view, Overview):
        return runs(view.runs)
    if isinstance(view, RunDetail):
        return run_detail(view.report, view.errors)
    return target_view(view.target, view.remaining, view.total, view.runs)


class ProgressLine:
    """One line that redraws itself while a run is followed; ended cleanly however we leave."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.open = False  # drawn, without its newline yet

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.open:
            click.echo()

    def update(self, report: RunReport) -> None:
        if not self.enabled:
            return
        k = report.keys
        line = f"\r  {bar(k.done, k.total)} {k.done}/{k.total} done, {k.error} failed, {tasks(report.tasks)}"
        click.echo(line.ljust(100), nl=False)
        self.open = True


def target_view(name: str, remaining: int, total: int, reports: Sequence[RunReport]) -> str:
    done = total - remaining
    lines = [click.style(name, bold=True),
             f"  DataJoint progress: {bar(done, total)}  {done}/{total} in the table, "
             f"{remaining} remaining",
             ""]
    lines.append(runs(reports) if reports else "No djhpc runs on this table yet.")
    return "\n".join(lines)


__all__ = ["ProgressLine", "bar", "doctor", "duration", "errors", "format_duration",
           "run_detail", "runs", "status_view", "submission", "target_view"]
