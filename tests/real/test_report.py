"""`djhpc report` of a real run through the local Slurm, opened in a real headless browser.

The run has one key that always fails and a retry, so the page shows two
attempts, an error group, per-key timings and Slurm's resource figures. The
browser (Debian's chromium, driven through chromedriver) must load it with no
console error and no network request, draw one timeline bar per task, and
draw every plot.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import Project, q
from .test_lifecycle import wait_for

CHROMEDRIVER = "/usr/bin/chromedriver"


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists() or not shutil.which("chromium"):
        pytest.fail("chromium and chromium-driver are missing: run scripts/setup.sh")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2000", "--no-first-run"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or ""
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# What the page drew, read from the DOM plotly built (not from the figure data).
DRAWN = """
const count = (sel) => document.querySelectorAll(sel).length;
const drawn = (sel) => [...document.querySelectorAll(sel)]
    .filter((p) => (p.getAttribute('d') || '').length > 2).length;
return {
  plotly: typeof window.Plotly,
  timeline_bars: drawn('#timeline .barlayer .point path'),
  timeline_rows: count('#timeline .ytick'),
  progress_lines: drawn('#progress .scatterlayer .js-line'),
  throughput_bars: drawn('#progress .barlayer .point path'),
  duration_bars: drawn('#durations .barlayer .point path'),
  resource_boxes: drawn('#resources .boxlayer path.box'),
  resource_points: count('#resources .boxlayer .point'),
  errors: document.querySelectorAll('table.errors tbody tr').length,
  text: document.body.innerText,
};
"""


@pytest.mark.once
def accounted(project: Project, run_id: int) -> bool:
    """Whether sacct has every task of the run with its MaxRSS."""
    jobs = [str(j) for (j,) in project.sql(
        f"SELECT job_id FROM {q(project.ledger)}.{q('chunk')} WHERE run_id = {int(run_id)}")]
    out = subprocess.run(["sacct", "-n", "-P", "-j", ",".join(jobs), "--format=JobID,MaxRSS"],
                         capture_output=True, text=True).stdout
    measured = {row.split("|")[0].split(".")[0] for row in out.splitlines()
                if "|" in row and row.split("|")[1].strip()}
    return set(jobs) <= measured


def cpu_accounted(project: Project, run_id: int) -> int:
    """How many of the run's tasks sacct gives reserved CPU time (CPUTimeRAW > 0)."""
    jobs = [str(j) for (j,) in project.sql(
        f"SELECT job_id FROM {q(project.ledger)}.{q('chunk')} WHERE run_id = {int(run_id)}")]
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(jobs),
                          "--format=JobID,CPUTimeRAW"], capture_output=True, text=True).stdout
    return sum(1 for row in out.splitlines() if "|" in row and int(row.split("|")[1] or 0) > 0)


@pytest.mark.usefixtures("slurm")
def test_report_of_a_real_run_in_a_real_browser(project: Project, tmp_path: Path) -> None:
    project.make_data("--sessions", "1", "--units", "3", "--empty-units", "1")  # 12 keys
    env = project.env(EXAMPLE_MAKE_SECONDS="0.3")
    first = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "3", "--wait",
                               expect=1, env=env)
    run_id = first["run_id"]
    again = project.djhpc_json("retry", str(run_id), "--wait", expect=1, env=env)
    assert again["status"]["attempts"] == 2 and again["status"]["keys"]["error"] == 1

    # Per-key timings: one row per make(), written by the tasks themselves.
    timed = project.sql(f"SELECT attempt, ok, seconds FROM {q(project.ledger)}.{q('key_time')} "
                        f"WHERE run_id = {int(run_id)}")
    assert len(timed) == 13  # 12 keys, then the failed one again
    assert sorted((a, ok) for a, ok, _ in timed).count((1, 0)) == 1
    assert {(a, ok) for a, ok, _ in timed} == {(1, 1), (1, 0), (2, 0)}
    assert all(s >= 0.3 for _, _, s in timed)

    # sacct records a task's memory a little after it ends: the report draws it once it has.
    wait_for(lambda: accounted(project, run_id), timeout=90, every=2)
    page = tmp_path / "report.html"
    result = project.djhpc("report", str(run_id), "-o", str(page))
    assert result.returncode == 0, result.stderr
    assert str(page) in result.stdout and page.stat().st_size > 1_000_000  # plotly inside
    text = page.read_text()
    assert "<script src=" not in text and "<link" not in text  # every script and style inside

    driver = browser()
    try:
        driver.get(page.as_uri())
        driver.implicitly_wait(2)
        seen = driver.execute_script(DRAWN)
        console = driver.get_log("browser")
        network = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    finally:
        driver.quit()

    assert seen["plotly"] == "object"
    assert console == [], console
    urls = [m["params"]["request"]["url"] for m in network
            if m["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    assert seen["timeline_bars"] == 4 and seen["timeline_rows"] == 4, seen  # 3 tasks + 1 retry
    assert seen["progress_lines"] == 2 and seen["throughput_bars"] >= 1, seen
    assert seen["duration_bars"] >= 1, seen
    # Each task's memory, and its CPU use where Slurm accounted whole CPU-seconds (a task of
    # under a second has CPUTimeRAW 0, and no efficiency to draw).
    assert seen["resource_boxes"] == 2, seen
    assert seen["resource_points"] == 4 + cpu_accounted(project, run_id), seen
    assert seen["errors"] == 1, seen
    body = seen["text"]
    assert "empty spike train" in body and "Slowest keys" in body
    assert "try 2" in body  # the retry is on the timeline


def test_key_times_an_older_ledger_and_report_errors(project: Project, tmp_path: Path) -> None:
    """On every database and DataJoint line: timings recorded, an older ledger keeps working."""
    project.make_data("--sessions", "1", "--units", "2", "--empty-units", "1")  # 8 keys
    run_id = project.djhpc_json("submit", "MyTable", "-e", "local", "--tasks", "2", "--wait",
                                expect=1)["run_id"]
    key_time = f"{q(project.ledger)}.{q('key_time')}"
    rows = project.sql(f"SELECT seq, ok FROM {key_time} WHERE run_id = {int(run_id)} ORDER BY seq")
    assert [seq for seq, _ in rows] == list(range(8)) and sum(ok for _, ok in rows) == 7

    # A ledger from before key_time: a retry's tasks keep no timings but work,
    # and the report says it has none; the next submit adds the table.
    project.sql(f"DROP TABLE {key_time}")
    retried = project.djhpc_json("retry", str(run_id), "--wait", expect=1)
    assert retried["status"]["attempts"] == 2 and retried["status"]["keys"]["done"] == 7
    page = tmp_path / "old.html"
    old = project.djhpc("report", str(run_id), "-o", str(page))
    assert old.returncode == 0, old.stderr
    assert "0 make() calls timed" in page.read_text()
    project.djhpc_json("submit", "MyTable", "-e", "local", "--wait", expect=1)
    assert project.sql(f"SELECT COUNT(*) FROM {key_time}")[0][0] == 1  # the failing key again

    missing = project.djhpc("report", "999999")
    assert missing.returncode == 2 and missing.stderr.startswith("Error: No run 999999")
    nowhere = project.djhpc("report", "MyTable", "-o", str(tmp_path / "no" / "r.html"))
    assert nowhere.returncode == 2 and "Error: No folder" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr and not (tmp_path / "no").exists()
    table = project.djhpc("report", "MyTable", "-o", str(tmp_path / "r.html"))
    assert table.returncode == 0, table.stderr
    text = (tmp_path / "r.html").read_text()
    assert text.count('<span class="state ') == 2 and "Plotly.newPlot" in text  # both runs
