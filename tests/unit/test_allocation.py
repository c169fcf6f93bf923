"""Billing units, billing hours and quota, on pasted real output."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from djhpc import allocation
from djhpc.allocation import Quota, QuotaSource
from djhpc.executors import slurm_tools as slurm

DATA = Path(__file__).parent / "data" / "slurm"

# `cost -p nn9244k` as printed on a Norwegian national system (quoted in a
# lab's public notes); the same report format as Sigma2's `cost`.
COST = """\
Report for account nn9244k on abel.uio.no
Allocation period 2015.2 (start Thu Oct 01 00:00:01 2015)
\t\t\t (end Thu Mar 31 23:59:59 2016)
Last updated on Mon Nov 02 11:31:58 2015
==================================================
Account                                 Core hours
==================================================
nn9244k            avail                3909376.93
nn9244k            usage                 935087.07
nn9244k            reserved              155536.00
nn9244k            quota (pri)          5000000.00
nn9244k            quota (unpri)                NA
==================================================
"""

# sacctmgr -n -P show assoc where account=nn1234k format=Account,User,GrpTRESMins
# and sshare -n -P -A nn1234k -o Account,User,GrpTRESRaw: the local cluster's
# format (tests/unit/data), with a billing limit as a site sets one.
SACCTMGR_LIMITS = "nn1234k||billing=6000000\nnn1234k|alice|\n"
SSHARE_RAW = ("nn1234k||cpu=1200,mem=0,energy=0,node=40,billing=1800000,fs/disk=0,vmem=0,pages=0\n"
              " nn1234k|alice|cpu=1200,mem=0,energy=0,node=40,billing=1800000,fs/disk=0\n")


def test_weights_of_the_local_partition_like_saga_normal() -> None:
    text = (DATA / "scontrol_partition_22.05.8.txt").read_text()
    raw = next(line.split("=", 1)[1] for line in text.split() if line.startswith("TRESBillingWeights="))
    weights = allocation.parse_billing_weights(raw)
    assert weights["cpu"] == 1.0
    assert weights["mem"] == pytest.approx(0.2577031 / 1024)  # per MiB


def test_weights_with_gpus_and_units() -> None:
    weights = allocation.parse_billing_weights("CPU=1.0,Mem=0.06593407G,GRES/gpu=6")
    assert weights["gres/gpu"] == 6.0
    # Saga accel: all 377 GiB of a node or all 4 GPUs cost about the node's 24 CPUs.
    assert allocation.billing_rate(weights, 1, 377 * 1024, 0) == pytest.approx(24.86, abs=0.01)
    assert allocation.billing_rate(weights, 1, 1024, 4) == 24.0
    assert allocation.parse_billing_weights("(null)") == {}
    assert allocation.parse_billing_weights("") == {}
    with pytest.raises(ValueError):
        allocation.parse_billing_weights("CPU")


def test_billing_is_the_largest_weighted_tres_with_max_tres_else_the_sum() -> None:
    weights = allocation.parse_billing_weights("CPU=1.0,Mem=0.2577031G")
    assert allocation.billing_rate(weights, 1, 6 * 1024) == pytest.approx(1.546, abs=1e-3)
    assert allocation.billing_rate(weights, 1, 6 * 1024, max_tres=False) == pytest.approx(2.546,
                                                                                         abs=1e-3)
    # What Slurm records: the local cluster billed CPU=1, 6 GiB as billing=1.
    assert allocation.slurm_billing(allocation.billing_rate(weights, 1, 6 * 1024)) == 1
    # No weights: Slurm bills the CPUs.
    assert allocation.billing_rate({}, 3, 1e6) == 3.0


def test_billing_of_tasks_from_real_sacct_output() -> None:
    tasks = slurm.parse_sacct((DATA / "sacct_billing_22.05.8.txt").read_text())
    assert (tasks["1"].billing, tasks["1"].elapsed_s) == (1.0, 3.0)
    assert (tasks["2"].billing, tasks["2"].cpus) == (3.0, 3)
    assert allocation.billing_units("cpu=1,mem=6G,node=1") is None  # a step row


def test_sacct_output_in_the_older_format_still_parses() -> None:
    tasks = slurm.parse_sacct((DATA / "sacct_final_22.05.8.txt").read_text())
    assert tasks and all(t.billing is None for t in tasks.values())


def test_squeue_reason_from_real_output() -> None:
    text = ("30_0|PENDING||0:00|1:00|1|256M|N/A|JobHeldUser\n"
            "30_1|PENDING||0:00|1:00|1|256M|N/A|JobHeldUser\n")
    tasks = slurm.parse_squeue(text)
    assert tasks["30_1"].reason == "JobHeldUser"


def test_estimate_reserves_the_requested_walltime_and_uses_history_when_known() -> None:
    weights = allocation.parse_billing_weights("CPU=1.0,Mem=0.2577031G")
    est = allocation.estimate(weights, True, tasks=10, cpus=1, mem_mb=8 * 1024, gpus=0,
                              time_s=2 * 3600, task_seconds=1800)
    assert est.rate == 2.0  # 8 GiB x 0.2577 = 2.06 units, recorded as 2
    assert est.at_most == pytest.approx(40.0)
    assert est.expected == pytest.approx(10.0)
    assert allocation.estimate({}, True, 4, 2, 1024, 0, 3600).to_json()["source"] == "cpus"


def test_cost_report_parsed() -> None:
    quota = allocation.parse_cost(COST, "nn9244k")
    assert quota is not None
    assert (quota.total, quota.used, quota.reserved) == (5000000.0, 935087.07, 155536.0)
    assert quota.remaining == pytest.approx(3909376.93)
    assert allocation.parse_cost(COST, "nn0000k") is None


def test_grp_billing_minutes_from_sacctmgr_and_sshare() -> None:
    quota = allocation.parse_grp_billing_minutes(SACCTMGR_LIMITS, SSHARE_RAW, "nn1234k")
    assert quota is not None and quota.source is QuotaSource.SLURM
    assert (quota.total, quota.used, quota.remaining) == (100000.0, 30000.0, 70000.0)
    # The local cluster's own association: no billing limit.
    assert allocation.parse_grp_billing_minutes("root|||\nroot|root||\n", "", "root") is None


def test_quota_warning_above_the_threshold() -> None:
    quota = Quota("nn1234k", 1000.0, 500.0, 100.0, QuotaSource.COST)
    assert allocation.quota_warning(quota, 100.0, 0.25) is None  # 25 % of 400 left
    text = allocation.quota_warning(quota, 120.0, 0.25)
    assert text is not None and "30%" in text and "400.0 left" in text
    spent = Quota("nn1234k", 1000.0, 1000.0, 0.0, QuotaSource.COST)
    assert spent.share(1.0) == math.inf
    assert "AssocGrpBillingMinutes" in (allocation.quota_warning(spent, 1.0, 0.25) or "")


def test_quota_reason_explained_in_words() -> None:
    text = allocation.explain_reason("AssocGrpBillingMinutes", "nn1234k")
    assert text is not None and "quota is spent" in text and "cost -p nn1234k" in text
    assert allocation.explain_reason("Priority") is None
    assert allocation.explain_reason(None) is None
