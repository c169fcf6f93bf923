"""Billing hours, the dry run's estimate, and profiles against the real local cluster.

The local Slurm bills like Saga's normal partition (scripts/local-slurm.sh:
TRESBillingWeights="CPU=1.0,Mem=0.2577031G", PriorityFlags=MAX_TRES). The
expectations are Slurm's own figures (sacct's AllocTRES, a held probe job's
billing), so they also hold on a cluster started with an older slurm.conf.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from djhpc import allocation

from .conftest import Project

pytestmark = pytest.mark.usefixtures("slurm")


def _sacct_billing_hours(jobs: list[str], tasks: int) -> tuple[float, set[float]]:
    """Billing hours of these jobs' tasks by sacct's own figures, once every task has ended."""
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["sacct", "-X", "-P", "-n", f"--jobs={','.join(jobs)}",
                              "--format=JobID,AllocTRES,ElapsedRaw,State"],
                             capture_output=True, text=True, check=True).stdout
        rows = [line.split("|") for line in out.splitlines()]
        # sacct lags squeue by a few seconds: wait until it has every end.
        if len(rows) == tasks and all(state == "COMPLETED" for *_, state in rows):
            break
        assert time.monotonic() < deadline, out
        time.sleep(1)
    total, seen = 0.0, set()
    for _, tres, elapsed, _ in rows:
        billing = allocation.billing_units(tres)
        assert billing is not None, tres
        seen.add(billing)
        total += billing * int(elapsed) / 3600
    return total, seen


def test_billing_hours_of_a_run_match_sacct(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "3")  # 12 keys
    out = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "3", "--cpus", "2",
                             "--mem", "512M", "--wait")
    assert out["status"]["state"] == "done"
    expected, billings = _sacct_billing_hours(out["jobs"], tasks=3)
    assert billings == {2.0}  # the largest of 2 CPUs and 0.5 GiB x 0.2577
    status = project.djhpc_json("status", str(out["run_id"]))
    assert status["billing_hours"] == pytest.approx(round(expected, 4), abs=1e-4)
    assert status["billing_hours"] > 0 and status["core_hours"] > 0
    listing = project.djhpc_json("status")
    (run,) = [r for r in listing["runs"] if r["run_id"] == out["run_id"]]
    assert run["billing_hours"] == status["billing_hours"]
    table = listing["billing"]["by_table"]
    assert sum(table.values()) == pytest.approx(status["billing_hours"])
    text = project.djhpc("status", str(out["run_id"]))
    assert f"{status['billing_hours']:.2f} billing hours" in text.stdout


def _billed_by_slurm(cpus: int, mem: str) -> tuple[float, bool]:
    """What Slurm itself bills a job asking for this much (a held job, cancelled again),
    and whether the partition has billing weights at all."""
    job = subprocess.run(["sbatch", "--parsable", "--hold", "-c", str(cpus), f"--mem={mem}",
                          "-t", "30", "-J", "djhpc-billing-probe", "--wrap", "true"],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                               text=True, check=True).stdout
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    tres = next(t.split("=", 1)[1] for t in shown.split() if t.startswith("TRES="))
    billing = allocation.billing_units(tres)
    assert billing is not None, shown
    partition = subprocess.run(["scontrol", "show", "partition", "debug"], capture_output=True,
                               text=True, check=True).stdout
    return billing, "TRESBillingWeights=" in partition


def test_dry_run_estimates_billing_hours_as_slurm_bills(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")  # 8 keys
    args = ("submit", "MyTable", "-e", "slurm", "--tasks", "4", "--time", "0:30:00", "--cpus",
            "1", "--mem", "8000M", "--dry-run")
    out = project.djhpc_json(*args)
    billing = out["billing"]
    units, weighted = _billed_by_slurm(1, "8000M")
    # With scripts/local-slurm.sh's Saga-like weights, 7.8 GiB x 0.2577031 = 2.01
    # outweighs the one CPU: Slurm bills 2. Without weights it bills the CPU.
    assert units == (2.0 if weighted else 1.0)
    assert billing["source"] == ("partition" if weighted else "cpus")
    assert billing["units_per_task"] == units
    assert billing["billing_hours_at_most"] == pytest.approx(4 * units * 0.5)
    assert billing["billing_hours_expected"] is None
    assert out["quota"] == "unknown"  # no account, no quota to read
    text = project.djhpc(*args)
    assert text.returncode == 0, text.stderr
    assert f"billing: at most {4 * units * 0.5:.2f} billing hours" in text.stdout


def test_fram_is_retired(project: Project) -> None:
    result = project.djhpc("submit", "MyTable", "--profile", "fram", "--account", "nn0000k",
                           "--dry-run")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: Profile 'fram' is retired: Sigma2 decommissioned Fram")
    assert "saga, betzy or olivia" in line


def test_olivia_profile_plans(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")
    out = project.djhpc_json("submit", "MyTable", "--profile", "olivia", "--account", "nn0000k",
                             "--dry-run")
    assert out["run_id"] is None and out["keys"] == 8
    assert "partition small" in out["resources"] and "account nn0000k" in out["resources"]
    assert out["billing"] == "unknown"  # no partition "small" here to read weights from


def test_doctor_reports_a_profile_whose_partition_is_not_on_this_cluster(
        project: Project) -> None:
    env = project.env(DJHPC_PROFILE="saga", DJHPC_ACCOUNT="nn0000k", DJHPC_EXECUTOR="slurm")
    result = project.djhpc("doctor", "--json", env=env)
    assert result.returncode == 1, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["profile"]["ok"]
    cluster = checks["cluster"]
    assert not cluster["ok"]
    assert "partition 'normal' does not exist on this cluster" in cluster["detail"]
    assert "account 'nn0000k' is not one of yours" in cluster["detail"]


def test_doctor_finds_the_local_profile_matching(project: Project) -> None:
    env = project.env(DJHPC_PROFILE="local", DJHPC_EXECUTOR="slurm")
    result = project.djhpc("doctor", "--json", env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["cluster"]["ok"], checks["cluster"]
    assert "partition debug" in checks["cluster"]["detail"]


@contextmanager
def billing_limited_account(hours: int) -> Iterator[str]:
    """A throwaway Slurm account with a billing-hour quota (GrpTRESMins), for root."""
    name = f"djq{uuid.uuid4().hex[:8]}"
    subprocess.run(["sacctmgr", "-i", "add", "account", name,
                    f"GrpTRESMins=billing={hours * 60}"], check=True, capture_output=True)
    try:
        subprocess.run(["sacctmgr", "-i", "add", "user", "root", f"account={name}"],
                       check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["sacctmgr", "-i", "delete", "user", "root", f"account={name}"],
                       capture_output=True)
        subprocess.run(["sacctmgr", "-i", "delete", "account", name], capture_output=True)


def test_dry_run_and_doctor_show_the_quota_left_and_warn(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")  # 8 keys
    with billing_limited_account(10) as account:
        args = ("submit", "MyTable", "-e", "slurm", "--account", account, "--tasks", "4",
                "--time", "1:00:00", "--cpus", "2", "--dry-run")
        out = project.djhpc_json(*args)
        # Slurm's own count of usage (priority/basic) stays 0 here: all 10 hours are left.
        assert out["quota"] == {"account": account, "total": 10.0, "used": 0.0,
                                "reserved": 0.0, "remaining": 10.0, "source": "slurm"}
        assert out["billing"]["billing_hours_at_most"] == pytest.approx(8.0)  # 4 x 2 x 1 h
        text = project.djhpc(*args)
        assert f"quota:   10.0 billing hours left on {account}" in text.stdout
        assert "80% of the 10.0 left" in text.stdout  # above quota_warn (25 %)
        calm = project.djhpc(*args, env=project.env(DJHPC_QUOTA_WARN="2"))
        assert "of the 10.0 left" not in calm.stdout

        env = project.env(DJHPC_PROFILE="local", DJHPC_ACCOUNT=account, DJHPC_EXECUTOR="slurm")
        doctor = json.loads(project.djhpc("doctor", "--json", env=env).stdout)
        checks = {c["name"]: c for c in doctor["checks"]}
        assert checks["quota"]["detail"] == f"{account}: 10.0 of 10.0 billing hours left"
        assert checks["cluster"]["ok"], checks["cluster"]
