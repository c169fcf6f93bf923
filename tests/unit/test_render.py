"""The terminal text: plain columns when piped, colours on a terminal unless NO_COLOR."""

from __future__ import annotations

import re

import pytest

from djhpc import render
from djhpc.status import ChunkView, ErrorGroup

from .test_report import run_report

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*9[0-7]m")


def detail() -> str:
    chunks = [ChunkView(chunk=0, attempt=1, state="failed", keys=4, done=3, error=1,
                        job="4242_[0-3%2]", host="c1", task_state="completed", elapsed_s=3725)]
    groups = [ErrorGroup(message="ValueError: bad [unit] <n>", example="ValueError: bad [unit] 3",
                         count=1, keys=[{"u": 3}], chunk=0, run_id=7, attempts=[1], log=None,
                         stack="")]
    return render.run_detail(run_report(chunks=chunks), groups)


@pytest.fixture
def piped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "terminal", lambda: False)


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "terminal", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.mark.usefixtures("piped")
def test_piped_text_is_plain_aligned_columns() -> None:
    text = detail()
    assert not ANSI.search(text)
    assert all(line == line.rstrip() for line in text.splitlines())
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("CHUNK"))
    row = lines[lines.index(header) + 1]
    assert row.split() == ["0", "failed", "4", "3", "1", "4242_[0-3%2]", "completed", "c1",
                           "1:02:05", "-"]
    assert header.index("JOB") == row.index("4242_")  # columns line up
    assert "1x  ValueError: bad [unit] <n>" in text  # brackets are text, not markup
    assert "11/12 done, 1 failed" in text and "92%" in text


@pytest.mark.usefixtures("piped")
def test_runs_listing_and_empty() -> None:
    assert render.runs([]) == "No runs yet. Start one with: djhpc submit MyTable"
    listing = render.runs([run_report()]).splitlines()
    assert listing[0].split()[:4] == ["RUN", "TARGET", "STATE", "KEYS"]
    assert listing[1].split()[:4] == ["7", "my_analysis:MyTable", "failed", "11/12"]


@pytest.mark.usefixtures("tty")
def test_a_terminal_gets_colours_and_a_drawn_bar() -> None:
    text = detail()
    assert COLOUR.search(text) and "━" in text


@pytest.mark.usefixtures("tty")
def test_no_color_keeps_the_bar_and_drops_the_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    text = detail()
    assert not COLOUR.search(text) and "failed" in text


def test_progress_line_is_redrawn_in_place() -> None:
    line = render.progress(run_report())
    assert line.startswith("\r") and line.endswith("\x1b[K") and "\n" not in line
    assert "11/12 done" in ANSI.sub("", line)


def test_durations() -> None:
    assert render.duration(None) == "-"
    assert render.duration(59.6) == "0:01:00"
    assert render.duration(90061) == "1 day, 1:01:01"


@pytest.mark.usefixtures("piped")
def test_run_detail_shows_split_chunks_and_key_times() -> None:
    from djhpc.sizing import KeySeconds

    chunks = [ChunkView(chunk=0, attempt=1, state="done", keys=3, done=3, error=0, job="9_0",
                        host="c1"),
              ChunkView(chunk=2, attempt=1, state="done", keys=2, done=2, error=0, job="9_1",
                        host="c1", split_from=0)]
    text = render.run_detail(run_report(chunks=chunks), [],
                             key_seconds=KeySeconds(p50=0.052, p95=3.1, max=125.0))
    assert "2 (split of 0)" in text
    assert "make() p50 0.052s, p95 3.1s, max 0:02:05" in text
