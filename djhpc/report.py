"""`djhpc report`: one self-contained HTML file that shows how a run went.

Two steps, separately testable: `collect` gathers everything from the ledger
and Slurm (through the status machinery) into a plain `ReportData`, and
`build_html` turns that into the page, touching neither database nor Slurm.

The page carries plotly's JavaScript inside it (no CDN): it is copied from a
login node to a laptop and must open offline. plotly is the optional extra
`djhpc[report]`, as its wheel is big and compute nodes never need it.
"""

from __future__ import annotations

import html
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from djhpc import status
from djhpc.errors import UsageError
from djhpc.executors.slurm_tools import TaskInfo
from djhpc.ledger import ChunkRecord, KeyTime, Ledger, RunRecord, now

# End states of a task's chunk, in the colours the terminal uses for them.
STATE_COLOURS = {"done": "#2ca02c", "failed": "#d62728", "interrupted": "#ff7f0e",
                 "lost": "#8c2d04", "cancelled": "#9467bd", "running": "#1f77b4",
                 "queued": "#9e9e9e"}
SLOWEST = 10


@dataclass
class TaskRow:
    """One task (a chunk of one attempt) as the timeline and the resource plots need it."""

    run_id: int
    attempt: int
    chunk: int
    state: str
    keys: int
    done: int
    error: int
    first_key: int
    job: str | None = None
    host: str | None = None
    queued: datetime | None = None  # when it was submitted (approximate after a retry)
    started: datetime | None = None
    ended: datetime | None = None  # None while it runs
    elapsed_s: float | None = None
    cpu_efficiency: float | None = None  # CPU used / CPU reserved
    memory_efficiency: float | None = None  # MaxRSS / memory asked for
    max_rss_mb: float | None = None
    req_mem_mb: float | None = None
    slurm_state: str | None = None

    @property
    def label(self) -> str:
        return f"run {self.run_id} · try {self.attempt} · chunk {self.chunk}"


@dataclass
class SlowKey:
    run_id: int
    attempt: int
    chunk: int
    seconds: float
    ok: bool
    key: dict[str, Any]


@dataclass
class ReportData:
    """Everything the page shows, with no database or Slurm left in it."""

    title: str
    generated: datetime
    runs: list[status.RunReport]
    tasks: list[TaskRow]
    key_times: list[KeyTime]
    slowest: list[SlowKey]
    errors: list[status.ErrorGroup]
    billing_hours: dict[int, float | None] = field(default_factory=dict)


# --- gathering -------------------------------------------------------------------


def collect(ledger: Ledger, runs: Sequence[RunRecord], title: str,
            log_path: status.LogPath | None = None, ask_scheduler: bool = True) -> ReportData:
    """The report's data for these runs: one scheduler query for all of them."""
    if not runs:
        raise UsageError(f"No runs of {title} in ledger {ledger.schema}",
                         "Submit one first: djhpc submit TARGET")
    seen = status.snapshot(ledger, runs, ask_scheduler)
    rows = []
    for run in runs:
        for c in seen.chunks[run.run_id]:
            view = seen.views.get((run.run_id, c.chunk))
            rows.append(task_row(run, c, seen.chunks[run.run_id],
                                 view.accounting if view else None))
    times = ledger.key_times([r.run_id for r in runs])
    return ReportData(
        title=title, generated=now(), runs=seen.reports, tasks=rows, key_times=times,
        slowest=_slowest(ledger, runs, times),
        errors=status.error_groups(ledger, runs, log_path=log_path),
        billing_hours={r.run_id: r.billing_hours for r in seen.reports})


def task_row(run: RunRecord, chunk: ChunkRecord, siblings: Sequence[ChunkRecord],
             task: TaskInfo | None) -> TaskRow:
    row = TaskRow(run_id=run.run_id, attempt=chunk.attempt, chunk=chunk.chunk, state=chunk.state,
                  keys=chunk.keys, done=chunk.n_done, error=chunk.n_error, first_key=chunk.lo,
                  job=chunk.job_id, host=chunk.host, queued=_queued(run, chunk, siblings),
                  started=chunk.started, ended=chunk.finished)
    if row.started and row.ended:
        row.elapsed_s = (row.ended - row.started).total_seconds()
    if task is not None:
        row.slurm_state = task.state.value
        row.host = row.host or task.node
        row.elapsed_s = task.elapsed_s if task.elapsed_s is not None else row.elapsed_s
        row.max_rss_mb, row.req_mem_mb = task.max_rss_mb, task.req_mem_mb
        if task.state.final and task.cpu_time_s:
            row.cpu_efficiency = (task.total_cpu_s or 0.0) / task.cpu_time_s
        if task.state.final and task.max_rss_mb is not None and task.req_mem_mb:
            row.memory_efficiency = task.max_rss_mb / task.req_mem_mb
    return row


def _queued(run: RunRecord, chunk: ChunkRecord,
            siblings: Sequence[ChunkRecord]) -> datetime | None:
    """When the task was submitted: the run's creation for the first attempt.

    The ledger keeps no submission time per attempt, so a retry's tasks are
    taken as queued from the end of the attempt before (the earliest a retry
    can have been asked for), never later than their own start.
    """
    if chunk.attempt == 1:
        return run.created
    before = [c.finished for c in siblings if c.attempt == chunk.attempt - 1 and c.finished]
    queued = max(before) if before else None
    if queued and chunk.started:
        queued = min(queued, chunk.started)
    return queued


def _slowest(ledger: Ledger, runs: Sequence[RunRecord], times: Sequence[KeyTime],
             n: int = SLOWEST) -> list[SlowKey]:
    top = sorted(times, key=lambda t: -t.seconds)[:n]
    by_run = {r.run_id: r for r in runs}
    keys: dict[tuple[int, int], dict[str, Any]] = {}
    for run_id in {t.run_id for t in top}:
        found = ledger.keys_at(by_run[run_id], [t.seq for t in top if t.run_id == run_id])
        keys.update({(run_id, seq): key for seq, key in found.items()})
    return [SlowKey(t.run_id, t.attempt, t.chunk, t.seconds, t.ok,
                    keys.get((t.run_id, t.seq), {"key number": t.seq})) for t in top]


# --- the page ----------------------------------------------------------------------


def default_path(what: str) -> Path:
    """djhpc-report-<run id or target>.html in the current directory."""
    return Path(f"djhpc-report-{re.sub(r'[^A-Za-z0-9_.-]+', '_', what).strip('_.')}.html")


def write(path: Path, page: str) -> None:
    """Write the page whole or not at all (a half-written report is worse than none)."""
    if not path.parent.is_dir():
        raise UsageError(f"No folder {path.parent} to write the report in",
                         "Create it, or pass another path with -o")
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UsageError(f"Cannot write the report to {path}: {error.strerror}",
                         "Pass a path you may write with -o") from None


def plotly_missing() -> UsageError:
    return UsageError("djhpc report needs plotly, which is not installed",
                      "Install it with: pip install djhpc[report]")


def require_plotly() -> None:
    import importlib.util

    if importlib.util.find_spec("plotly") is None:
        raise plotly_missing()


def build_html(data: ReportData) -> str:
    """The whole page: plotly's JavaScript once, then every section. Pure."""
    try:
        import plotly.io as pio
    except ImportError:  # pragma: no cover - depends on the environment
        raise plotly_missing() from None

    figures = [("timeline", "Timeline", timeline_figure(data),
                "One bar per task, from its start to its end, coloured by how it ended; "
                "the thin grey line before it is the time it was queued. "
                "Hover a bar for its keys, job, host and resources."),
               ("progress", "Progress", progress_figure(data),
                "Keys made and failed over time (left), and the throughput: keys finished "
                "per interval (right)."),
               ("durations", "make() durations", durations_figure(data),
                "How long each key's make() took."),
               ("resources", "Resources per task", resources_figure(data),
                "CPU and memory each finished Slurm task used, against what it asked for "
                "(from Slurm's accounting).")]
    parts: list[str] = []
    first = True
    for div_id, heading, figure, caption in figures:
        parts.append(f'<section><h2>{heading}</h2><p class="caption">{html.escape(caption)}</p>')
        if figure is None:
            parts.append('<p class="empty">Nothing recorded for this yet.</p>')
        else:
            parts.append(pio.to_html(
                figure, include_plotlyjs=first, full_html=False, div_id=div_id,
                config={"displaylogo": False, "responsive": True}))
            first = False
        if div_id == "durations":
            parts.append(_slowest_table(data.slowest))
        if div_id == "resources":
            parts.append(_hints(data.runs))
        parts.append("</section>")
    body = (_summary(data) + "\n".join(parts) + _errors(data.errors))
    return _PAGE.format(title=html.escape(f"djhpc report: {_plain(data.title)}"), style=_STYLE,
                        heading=html.escape(_plain(data.title)),
                        generated=data.generated.strftime("%Y-%m-%d %H:%M UTC"), body=body)


def _summary(data: ReportData) -> str:
    rows = []
    for r in data.runs:
        wall = _wall(r.started, r.finished)
        billing = data.billing_hours.get(r.run_id)
        rows.append(
            f'<tr><td>{r.run_id}</td><td>{html.escape(_plain(r.table))}</td>'
            f'<td><span class="state {html.escape(r.state)}">{html.escape(r.state)}</span></td>'
            f"<td>{r.keys.done} / {r.keys.total}</td><td>{r.keys.error}</td>"
            f"<td>{r.attempts}</td><td>{html.escape(r.started or '-')}</td>"
            f"<td>{_duration(wall)}</td><td>{r.core_hours:.2f}</td>"
            f"<td>{'-' if billing is None else f'{billing:.2f}'}</td></tr>")
    tasks = Counter(t.state for t in data.tasks)
    counts = ", ".join(f"{n} {s}" for s, n in tasks.most_common())
    return ('<section><h2>Summary</h2><table class="summary"><thead><tr><th>run</th>'
            "<th>table</th><th>state</th><th>keys done</th><th>failed</th><th>attempts</th>"
            "<th>started (UTC)</th><th>wall time</th><th>core-hours</th><th>billing hours</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            f'<p class="caption">{len(data.tasks)} tasks: {html.escape(counts or "none")}; '
            f"{len(data.key_times)} make() calls timed.</p></section>")


def timeline_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go

    tasks = sorted((t for t in data.tasks if t.started or t.queued),
                   key=lambda t: (t.run_id, t.attempt, t.chunk))
    if not tasks:
        return None
    stamp = data.generated
    figure = go.Figure()
    # The queued stretch: one thin line per task, drawn as one trace (None breaks it).
    xs: list[Any] = []
    ys: list[Any] = []
    for t in tasks:
        if t.queued:
            xs += [t.queued, t.started or stamp, None]
            ys += [t.label, t.label, None]
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="queued", hoverinfo="skip",
                                line={"color": STATE_COLOURS["queued"], "width": 2}))
    for state in STATE_COLOURS:
        group = [t for t in tasks if t.state == state and t.started]
        if not group:
            continue
        figure.add_trace(go.Bar(
            name=state, orientation="h", marker_color=STATE_COLOURS[state],
            y=[t.label for t in group], base=[t.started for t in group],
            x=[_bar_ms(t, stamp) for t in group],
            text=[f"{t.done}/{t.keys} keys" + (f", {t.error} failed" if t.error else "")
                  for t in group],
            textposition="inside", insidetextanchor="middle",
            marker_pattern_shape=["/" if t.attempt > 1 else "" for t in group],
            hovertext=[_task_hover(t) for t in group], hoverinfo="text"))
    labels = [t.label for t in tasks]
    figure.update_layout(
        barmode="overlay", height=max(260, 28 * len(labels) + 120), bargap=0.25,
        xaxis={"type": "date", "title": "time (UTC)"},
        yaxis={"categoryorder": "array", "categoryarray": list(reversed(labels)),
               "title": None},
        legend={"orientation": "h", "y": -0.2}, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return figure


def _bar_ms(t: TaskRow, stamp: datetime) -> float:
    """The bar's length; the ledger keeps whole seconds, so a task that ran
    under one still gets a visible second."""
    assert t.started is not None
    return max((t.ended or stamp) - t.started, timedelta(seconds=1)).total_seconds() * 1000


def _task_hover(t: TaskRow) -> str:
    lines = [f"<b>{html.escape(t.label)}</b>", f"state: {t.state}",
             f"keys {t.first_key} to {t.first_key + t.keys - 1}: {t.done} made, {t.error} failed",
             f"job {html.escape(t.job or '-')} on {html.escape(t.host or '-')}",
             f"ran {_duration(t.elapsed_s)}"]
    if t.cpu_efficiency is not None:
        lines.append(f"CPU {t.cpu_efficiency:.0%}")
    if t.max_rss_mb is not None and t.req_mem_mb:
        lines.append(f"memory {t.max_rss_mb:.0f} of {t.req_mem_mb:.0f} MB")
    return "<br>".join(lines)


def progress_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ends = sorted((t.started + timedelta(seconds=t.seconds), t.ok) for t in data.key_times)
    if not ends:
        return None
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for ok, name, colour in ((True, "keys made", STATE_COLOURS["done"]),
                             (False, "keys failed", STATE_COLOURS["failed"])):
        points = [when for when, good in ends if good is ok]
        if not points:
            continue
        figure.add_trace(go.Scatter(x=[points[0], *points], y=[0, *range(1, len(points) + 1)],
                                    mode="lines", line_shape="hv", name=name,
                                    line={"color": colour, "width": 2}), secondary_y=False)
    start, stop = ends[0][0], ends[-1][0]
    step = _bin_seconds((stop - start).total_seconds())
    bins: Counter[int] = Counter(int((when - start).total_seconds() // step) for when, _ in ends)
    figure.add_trace(go.Bar(
        x=[start + timedelta(seconds=(i + 0.5) * step) for i in sorted(bins)],
        y=[bins[i] / step * 3600 for i in sorted(bins)], name="throughput (keys/h)",
        marker_color="rgba(31,119,180,0.25)", width=step * 1000 * 0.9), secondary_y=True)
    figure.update_layout(height=340, legend={"orientation": "h", "y": -0.25},
                         margin={"l": 10, "r": 10, "t": 10, "b": 10},
                         xaxis={"title": "time (UTC)"})
    figure.update_yaxes(title_text="keys", secondary_y=False, rangemode="tozero")
    figure.update_yaxes(title_text="keys per hour", secondary_y=True, rangemode="tozero",
                        showgrid=False)
    return figure


def _bin_seconds(span: float) -> float:
    """About 30 bins over the span, on a round number of seconds."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400):
        if span / step <= 30:
            return float(step)
    return 86400.0


def durations_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go

    if not data.key_times:
        return None
    figure = go.Figure()
    for ok, name, colour in ((True, "made", STATE_COLOURS["done"]),
                             (False, "failed", STATE_COLOURS["failed"])):
        seconds = [t.seconds for t in data.key_times if t.ok is ok]
        if seconds:
            figure.add_trace(go.Histogram(x=seconds, name=name, marker_color=colour,
                                          opacity=0.8, nbinsx=40))
    figure.update_layout(barmode="stack", height=300, xaxis={"title": "seconds per key"},
                         yaxis={"title": "keys"}, legend={"orientation": "h", "y": -0.3},
                         margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return figure


def resources_figure(data: ReportData) -> Any:
    import plotly.graph_objects as go

    measured = [t for t in data.tasks
                if t.cpu_efficiency is not None or t.memory_efficiency is not None]
    if not measured:
        return None
    figure = go.Figure()
    for attr, name, colour in (("cpu_efficiency", "CPU used / reserved", "#1f77b4"),
                               ("memory_efficiency", "memory used / asked", "#ff7f0e")):
        group = [t for t in measured if getattr(t, attr) is not None]
        if group:
            figure.add_trace(go.Box(
                x=[name] * len(group), y=[getattr(t, attr) * 100 for t in group], name=name,
                boxpoints="all", jitter=0.4, pointpos=0, marker_color=colour,
                hovertext=[_task_hover(t) for t in group], hoverinfo="text+y"))
    figure.update_layout(height=320, showlegend=False, yaxis={"title": "% of what was asked",
                                                              "rangemode": "tozero"},
                         margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return figure


def _slowest_table(slowest: Sequence[SlowKey]) -> str:
    if not slowest:
        return ""
    rows = "".join(
        f"<tr><td>{_duration(s.seconds)}</td><td><code>{html.escape(_key(s.key))}</code></td>"
        f"<td>{s.run_id}</td><td>{s.attempt}</td><td>{s.chunk}</td>"
        f"<td>{'made' if s.ok else 'failed'}</td></tr>" for s in slowest)
    return ("<h3>Slowest keys</h3><table><thead><tr><th>make()</th><th>key</th><th>run</th>"
            "<th>try</th><th>chunk</th><th>outcome</th></tr></thead><tbody>"
            + rows + "</tbody></table>")


def _hints(runs: Sequence[status.RunReport]) -> str:
    hints = [f"Run {r.run_id}: {h}" for r in runs for h in r.hints]
    if not hints:
        return ""
    return ('<h3>Right-sizing hints</h3><ul class="hints">'
            + "".join(f"<li>{html.escape(h)}</li>" for h in hints) + "</ul>")


def _errors(groups: Sequence[status.ErrorGroup]) -> str:
    if not groups:
        return "<section><h2>Errors</h2><p>No errors recorded.</p></section>"
    rows = []
    for g in groups:
        keys = "<br>".join(f"<code>{html.escape(_key(k))}</code>" for k in g.keys)
        rows.append(
            f'<tr><td class="count">{g.count}</td><td><b>{html.escape(g.message)}</b>'
            f'<div class="example">{html.escape(g.example.strip().splitlines()[0] if g.example.strip() else "")}</div>'
            f"<details><summary>traceback</summary><pre>{html.escape(g.stack.strip() or '-')}</pre>"
            f"</details></td><td>{keys or '-'}</td>"
            f"<td>run {g.run_id}, chunk {g.chunk}, try {', '.join(map(str, g.attempts))}</td>"
            f"<td><code>{html.escape(g.log or '-')}</code></td></tr>")
    return ('<section><h2>Errors</h2><table class="errors"><thead><tr><th>count</th>'
            "<th>message</th><th>example keys</th><th>where</th><th>log</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></section>")


def _plain(name: str) -> str:
    """`schema`.`table` (or "schema"."table") as people write it."""
    return name.replace("`", "").replace('"', "")


def _key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items()) or "(no key: the task itself failed)"


def _wall(started: str | None, finished: str | None) -> float | None:
    if not started:
        return None
    end = datetime.fromisoformat(finished) if finished else now()
    return (end - datetime.fromisoformat(started)).total_seconds()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#263238;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:1.4em}header p{margin:4px 0 0;color:#cfd8dc;font-size:.9em}
main{padding:10px 28px 40px;max-width:1300px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px 18px;
margin:16px 0}
h2{font-size:1.15em;margin:6px 0}h3{font-size:1em;margin:14px 0 6px}
.caption{color:#666;font-size:.9em;margin:2px 0 8px}.empty{color:#999}
table{border-collapse:collapse;font-size:.9em}th,td{text-align:left;padding:4px 10px;
border-bottom:1px solid #eee;vertical-align:top}th{background:#f5f5f5}
.state{padding:1px 8px;border-radius:10px;color:#fff;background:#9e9e9e}
.state.done{background:#2ca02c}.state.failed{background:#d62728}
.state.running{background:#1f77b4}.state.incomplete{background:#ff7f0e}
.state.cancelled{background:#9467bd}
.errors .count{font-weight:bold;color:#d62728}.example{color:#666;font-size:.9em}
pre{white-space:pre-wrap;font-size:.85em;background:#f5f5f5;padding:6px}
.hints li{color:#8a6d00}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{heading}</h1><p>djhpc report, made {generated}</p></header>
<main>
{body}
</main>
</body>
</html>
"""
