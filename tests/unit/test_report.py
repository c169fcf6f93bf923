"""The report's page, built from plain data: no database, no Slurm, no browser."""

from __future__ import annotations

import builtins
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from djhpc import report
from djhpc.errors import UsageError
from djhpc.ledger import KeyTime
from djhpc.status import Efficiency, ErrorGroup, KeyCounts, RunReport

T0 = datetime(2026, 11, 26, 9, 0, 0)


def run_report(**more: Any) -> RunReport:
    values: dict[str, Any] = dict(
        run_id=7, target="my_analysis:MyTable", table="`lab_analysis`.`__my_table`",
        executor="slurm", state="failed",
        keys=KeyCounts(total=12, done=11, error=1, reserved=0, remaining=1),
        tasks={"completed": 4}, core_hours=0.0123, created=str(T0),
        started=str(T0 + timedelta(seconds=5)), finished=str(T0 + timedelta(seconds=65)),
        attempts=2, keys_per_hour=660.0, eta_s=None, efficiency=Efficiency(cpu=0.5, memory=0.2),
        hints=["Tasks used at most 20% of the memory they asked for: ask for less (--mem)."])
    values.update(more)
    return RunReport(**values)


def task(chunk: int, attempt: int = 1, state: str = "done", start: int = 5, end: int | None = 25,
         **more: Any) -> report.TaskRow:
    return report.TaskRow(
        run_id=7, attempt=attempt, chunk=chunk, state=state, keys=4, done=4 if state == "done" else 3,
        error=0 if state == "done" else 1, first_key=4 * chunk, job=f"100_{chunk}", host="c1",
        queued=T0, started=T0 + timedelta(seconds=start),
        ended=None if end is None else T0 + timedelta(seconds=end), **more)


def data(**more: Any) -> report.ReportData:
    times = [KeyTime(seq=i, started=T0 + timedelta(seconds=5 + 2 * i), seconds=1.0 + i / 10,
                     ok=i != 3, run_id=7, attempt=1, chunk=i // 4) for i in range(12)]
    times.append(KeyTime(seq=12, started=T0 + timedelta(seconds=50), seconds=0.4, ok=False,
                         run_id=7, attempt=2, chunk=3))
    values: dict[str, Any] = dict(
        title="run 7: MyTable", generated=T0 + timedelta(minutes=2), runs=[run_report()],
        tasks=[task(0, cpu_efficiency=0.5, memory_efficiency=0.2),
               task(1, state="failed", cpu_efficiency=0.4, memory_efficiency=0.25),
               task(2, cpu_efficiency=0.6, memory_efficiency=0.2),
               task(3, attempt=2, state="failed", start=50, end=50)],
        key_times=times,
        slowest=[report.SlowKey(7, 1, 2, 2.1, True, {"animal": 1, "unit": "<b>11</b>"})],
        errors=[ErrorGroup(message="ValueError: Unit {…} has an empty <spike> train",
                           example="ValueError: Unit {'unit': 3} has an empty <spike> train",
                           count=2, keys=[{"unit": 3}], chunk=1, run_id=7, attempts=[1, 2],
                           log="/runs/7/100_1_0_log.err", stack="Traceback ...\nValueError")],
        billing_hours={7: 0.5})
    values.update(more)
    return report.ReportData(**values)


def test_the_page_is_self_contained() -> None:
    page = report.build_html(data())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and not [s for s in scripts if "src=" in s]  # every script inside
    assert "<link" not in page and "@import" not in page
    assert page.count("Plotly.newPlot") == 4  # four plots, plotly's code once
    assert page.count("plotly.js v") <= 2  # the bundle's own banner, not repeated per plot


def test_summary_errors_and_slowest_keys_are_escaped_and_complete() -> None:
    page = report.build_html(data())
    assert "&lt;spike&gt;" in page and "<spike>" not in page
    assert "unit=&lt;b&gt;11&lt;/b&gt;" in page
    assert "/runs/7/100_1_0_log.err" in page and "try 1, 2" in page
    summary = page[page.index("<h2>Summary</h2>"):page.index("<h2>Timeline</h2>")]
    cells = re.findall(r"<td>(.*?)</td>", summary)
    assert cells[:6] == ["7", "lab_analysis.__my_table",
                         '<span class="state failed">failed</span>', "11 / 12", "1", "2"]
    assert cells[-3:] == ["60 s", "0.01", "0.50"]  # wall time, core-hours, billing hours
    assert "ask for less (--mem)" in page  # the right-sizing hint


def test_billing_hours_unknown_is_a_dash() -> None:
    page = report.build_html(data(billing_hours={}))
    summary = page[page.index("<h2>Summary</h2>"):page.index("<h2>Timeline</h2>")]
    assert re.findall(r"<td>(.*?)</td>", summary)[-1] == "-"


def test_timeline_one_bar_per_task_coloured_by_end_state() -> None:
    figure = report.timeline_figure(data())
    bars = [t for t in figure.data if t.type == "bar"]
    assert sum(len(t.y) for t in bars) == 4
    by_state = {t.name: list(t.y) for t in bars}
    assert by_state == {"done": ["run 7 · try 1 · chunk 0", "run 7 · try 1 · chunk 2"],
                        "failed": ["run 7 · try 1 · chunk 1", "run 7 · try 2 · chunk 3"]}
    failed = next(t for t in bars if t.name == "failed")
    assert failed.marker.color == report.STATE_COLOURS["failed"]
    assert list(failed.marker.pattern.shape) == ["", "/"]  # the retry stands out
    assert list(failed.x) == [20_000, 1_000]  # a task shorter than a second still shows
    assert "3/4 keys, 1 failed" in failed.text
    queued = next(t for t in figure.data if t.type == "scatter")
    assert [x for x in queued.x if x is not None][:2] == [T0, T0 + timedelta(seconds=5)]


def test_a_running_task_reaches_to_when_the_report_was_made() -> None:
    d = data(tasks=[task(0, state="running", end=None)])
    bar = next(t for t in report.timeline_figure(d).data if t.type == "bar")
    assert list(bar.x) == [(d.generated - (T0 + timedelta(seconds=5))).total_seconds() * 1000]


def test_progress_counts_every_key_once() -> None:
    figure = report.progress_figure(data())
    lines = {t.name: t for t in figure.data if t.type == "scatter"}
    assert max(lines["keys made"].y) == 11 and max(lines["keys failed"].y) == 2
    throughput = next(t for t in figure.data if t.type == "bar")
    step = report._bin_seconds(47)
    assert sum(throughput.y) * step / 3600 == pytest.approx(13)


def test_durations_and_resources() -> None:
    d = data()
    hist = report.durations_figure(d)
    assert sorted(len(t.x) for t in hist.data) == [2, 11]
    boxes = report.resources_figure(d).data
    assert [list(b.y) for b in boxes] == [[50, 40, 60], [20, 25, 20]]


def test_nothing_measured_says_so_instead_of_an_empty_plot() -> None:
    d = data(tasks=[task(0, state="queued", start=0, end=None)], key_times=[], slowest=[],
             errors=[])
    d.tasks[0].started = None
    assert report.resources_figure(d) is None and report.durations_figure(d) is None
    page = report.build_html(d)
    assert page.count("Nothing recorded for this yet.") == 3  # progress, durations, resources
    assert "No errors recorded." in page and page.count("Plotly.newPlot") == 1


def test_without_plotly_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_plotly(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("plotly"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_plotly)
    with pytest.raises(UsageError) as raised:
        report.build_html(data())
    assert "pip install djhpc[report]" in raised.value.message


def test_the_command_says_so_before_touching_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from click.testing import CliRunner

    from djhpc.cli import main

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "plotly" else real_find(name, *a))
    monkeypatch.setenv("DJ_HOST", "192.0.2.1")  # unreachable: never asked
    result = CliRunner().invoke(main, ["report", "1"])
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: djhpc report needs plotly, which is not installed. "
                                     "Install it with: pip install djhpc[report]")


def test_default_path_and_whole_file_writes(tmp_path: Path) -> None:
    assert report.default_path("12") == Path("djhpc-report-12.html")
    assert report.default_path("lab/pipe.py:My Table") == Path("djhpc-report-lab_pipe.py_My_Table.html")
    target = tmp_path / "r.html"
    report.write(target, "<html></html>")
    assert target.read_text() == "<html></html>" and [p.name for p in tmp_path.iterdir()] == ["r.html"]
    with pytest.raises(UsageError, match="No folder"):
        report.write(tmp_path / "missing" / "r.html", "x")
