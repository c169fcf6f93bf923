"""djhpc.executors.slurm_tools: parsers against pasted Slurm output, callers against fake binaries.

Two kinds of sample, and no test needs a running Slurm:
- data/slurm/*_22.05.8.txt were captured from the local Slurm 22.05.8
  (scripts/local-slurm.sh) with the module's own formats, for these jobs:
    25  sbatch --array=0-5%2 --time=5 --mem=100M   (Python holding 30 MB for 15 s)
    26  sbatch --time=5 --wrap 'srun sleep 2; exit 3'
    27  sbatch --hold ..., then scancel 27          (cancelled while pending)
    28  sbatch --time=1 -c 2 --wrap 'sleep 300'     (DefMemPerCPU=256)
  "running" was taken 4-7 s after submission, "final" ~100 s later; squeue's
  files are without and with -r.
- The inline SACCT_OUTPUT adds states a one-node test cluster cannot produce
  (OOM, NODE_FAIL, PREEMPTED, REQUEUED, srun and extern steps, het jobs) in the
  same row layout as the captures.
The fake binaries are tiny Python scripts put first on PATH that record their
argv, so a test can assert that a whole query is ONE call carrying every id.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from djhpc.executors import slurm_tools as slurm
from djhpc.executors.slurm_tools import SlurmError, TaskInfo
from djhpc.states import ChunkState, TaskState

DATA = Path(__file__).parent / "data" / "slurm"


def captured(name: str) -> str:
    return (DATA / f"{name}_22.05.8.txt").read_text()


# `sacct -P -n --format=<slurm.SACCT_FORMAT>`: two array jobs (one still
# splitting: "1235_[3-9%2]"), a pending task cancelled by root, a timed-out job
# whose batch step shows CANCELLED 0:15, OOM, node failure, preemption,
# requeue, a state this code has never heard of, and a heterogeneous job.
SACCT_OUTPUT = """\
1234_0|COMPLETED|0:0|node1|12|2|00:01.872|24||2000M|10|2026-11-24T14:20:01|2026-11-24T14:20:13
1234_0.batch|COMPLETED|0:0|node1|12|2|00:01.869|24|2048K|||2026-11-24T14:20:01|2026-11-24T14:20:13
1234_0.extern|COMPLETED|0:0|node1|12|2|00:00.002|24|912K|||2026-11-24T14:20:01|2026-11-24T14:20:13
1234_0.0|COMPLETED|0:0|node1|9|2|00:01.401|18|150000K|||2026-11-24T14:20:02|2026-11-24T14:20:11
1234_1|FAILED|1:0|node1|3|2|00:00.310|6||2000M|10|2026-11-24T14:20:01|2026-11-24T14:20:04
1234_1.batch|FAILED|1:0|node1|3|2|00:00.309|6|3072K|||2026-11-24T14:20:01|2026-11-24T14:20:04
1234_1.extern|COMPLETED|0:0|node1|3|2|00:00.001|6|0|||2026-11-24T14:20:01|2026-11-24T14:20:04
1235_0|COMPLETED|0:0|node1|31|1|00:29.114|31||1000M|5|2026-11-24T14:20:30|2026-11-24T14:21:01
1235_0.batch|COMPLETED|0:0|node1|31|1|00:29.114|31|1236K|||2026-11-24T14:20:30|2026-11-24T14:21:01
1235_1|RUNNING|0:0|node1|42|1|00:00:00|42||1000M|5|2026-11-24T14:21:02|Unknown
1235_1.batch|RUNNING|0:0|node1|42|1|00:00:00|42||||2026-11-24T14:21:02|Unknown
1235_2|RUNNING|0:0|node1|40|1|00:00:00|40||1000M|5|2026-11-24T14:21:04|Unknown
1235_[3-9%2]|PENDING|0:0|None assigned|0|1|00:00:00|0||1000M|5|Unknown|Unknown
1236_1|CANCELLED by 0|0:0|None assigned|0|1|00:00:00|0||1000M|5|None|2026-11-24T14:22:10
1237|TIMEOUT|0:0|node1|84|1|00:00.021|84||1000M|1|2026-11-24T14:23:00|2026-11-24T14:24:24
1237.batch|CANCELLED|0:15|node1|85|1|00:00.021|85|1100K|||2026-11-24T14:23:00|2026-11-24T14:24:25
1237.extern|COMPLETED|0:0|node1|84|1|00:00:00|84|0|||2026-11-24T14:23:00|2026-11-24T14:24:24
1238|OUT_OF_MEMORY|0:125|node1|7|1|00:03.512|7||1000M|10|2026-11-24T14:25:00|2026-11-24T14:25:07
1238.batch|OUT_OF_MEMORY|0:125|node1|7|1|00:03.512|7|1023988K|||2026-11-24T14:25:00|2026-11-24T14:25:07
1238.extern|COMPLETED|0:0|node1|7|1|00:00:00|7|0|||2026-11-24T14:25:00|2026-11-24T14:25:07
1239|NODE_FAIL|1:0|node1|600|4|00:00:00|2400||4G|60|2026-11-24T13:15:00|2026-11-24T13:25:00
1240|PREEMPTED|0:0|node1|1200|1|05:01.200|1200||1000M|60|2026-11-24T13:00:00|2026-11-24T13:20:00
1241|REQUEUED|0:0|node1|30|1|00:00.500|30||1000M|60|2026-11-24T14:00:00|2026-11-24T14:00:30
1242|FROBNICATED|0:0|node1|1|1|00:00:00|1||1000M|60|2026-11-24T14:00:00|2026-11-24T14:00:01
1243+0|COMPLETED|0:0|node1|5|1|00:00.100|5||1000M|10|2026-11-24T14:30:00|2026-11-24T14:30:05
1243+0.batch|COMPLETED|0:0|node1|5|1|00:00.100|5|1500K|||2026-11-24T14:30:00|2026-11-24T14:30:05
1243+1|COMPLETED|0:0|node1|5|2|00:00:00|10||2000M|10|2026-11-24T14:30:00|2026-11-24T14:30:05
1244|RUNNING|0:0|node1|3725|8|01:02:03|29800||16G|UNLIMITED|2026-11-24T13:28:00|Unknown
"""

# `squeue -h -o <slurm.SQUEUE_FORMAT>` (without -r, so pending arrays are grouped).
SQUEUE_OUTPUT = """\
1235_1|RUNNING|node1|0:42|5:00|1|1000M|2026-11-24T14:21:02
1235_2|COMPLETING|node1|0:40|5:00|1|1000M|2026-11-24T14:21:04
1235_[3-9%2]|PENDING||0:00|5:00|1|1000M|N/A
1250_[1,3,5-7]|PENDING||0:00|1-00:00:00|1|4G|2026-11-25T02:00:00
1251|RUNNING|node[1-2]|1-02:03:04|UNLIMITED|8|16G|2026-11-23T12:17:00
1252|CONFIGURING|node2|0:01|NOT_SET|1|1000M|2026-11-24T14:40:00
"""

# `scontrol show config`, shortened (22.05 prints ~200 keys in three sections).
SCONTROL_CONFIG = """\
Configuration data as of 2026-11-24T14:17:03
AccountingStorageBackupHost = (null)
AccountingStorageType   = accounting_storage/slurmdbd
ClusterName             = djhpc
MaxArraySize            = 10001
MaxJobCount             = 20000
SchedulerParameters     = batch_sched_delay=0,max_array_tasks=500
SLURM_VERSION           = 22.05.8

Cgroup Support Configuration:
AllowedRAMSpace         = 100.0%
MaxArraySize            = 7

MPI Plugins Configuration:
PMIxCliTmpDirBase       = (null)

Slurmctld(primary) at node1 is UP
"""

# The JOB STATE CODES table of squeue(1)/sacct(1) in Slurm 22.05, short and long.
DOCUMENTED_STATES = [
    ("BF", "BOOT_FAIL"),
    ("CA", "CANCELLED"),
    ("CD", "COMPLETED"),
    ("CF", "CONFIGURING"),
    ("CG", "COMPLETING"),
    ("DL", "DEADLINE"),
    ("F", "FAILED"),
    ("NF", "NODE_FAIL"),
    ("OOM", "OUT_OF_MEMORY"),
    ("PD", "PENDING"),
    ("PR", "PREEMPTED"),
    ("R", "RUNNING"),
    ("RD", "RESV_DEL_HOLD"),
    ("RF", "REQUEUE_FED"),
    ("RH", "REQUEUE_HOLD"),
    ("RQ", "REQUEUED"),
    ("RS", "RESIZING"),
    ("RV", "REVOKED"),
    ("SI", "SIGNALING"),
    ("SE", "SPECIAL_EXIT"),
    ("SO", "STAGE_OUT"),
    ("ST", "STOPPED"),
    ("S", "SUSPENDED"),
    ("TO", "TIMEOUT"),
]


# --- states -----------------------------------------------------------------


@pytest.mark.parametrize(("short", "long"), DOCUMENTED_STATES)
def test_every_documented_state_is_mapped_in_both_forms(short: str, long: str) -> None:
    assert slurm.task_state(long) is not TaskState.UNKNOWN
    assert slurm.task_state(short) is slurm.task_state(long)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PENDING", TaskState.PENDING),
        ("CONFIGURING", TaskState.PENDING),
        ("RUNNING", TaskState.RUNNING),
        ("COMPLETING", TaskState.RUNNING),
        ("COMPLETED", TaskState.COMPLETED),
        ("FAILED", TaskState.FAILED),
        ("CANCELLED by 0", TaskState.CANCELLED),
        ("CANCELLED by 1000", TaskState.CANCELLED),
        ("CANCELLED+", TaskState.CANCELLED),
        ("TIMEOUT", TaskState.TIMEOUT),
        ("DEADLINE", TaskState.TIMEOUT),
        ("OUT_OF_MEMORY", TaskState.OUT_OF_MEMORY),
        ("NODE_FAIL", TaskState.NODE_FAIL),
        ("BOOT_FAIL", TaskState.NODE_FAIL),
        ("PREEMPTED", TaskState.PREEMPTED),
        ("REQUEUED", TaskState.REQUEUED),
        ("REQUEUE_HOLD", TaskState.REQUEUED),
        ("SUSPENDED", TaskState.SUSPENDED),
        ("STOPPED", TaskState.SUSPENDED),
        (" running \n", TaskState.RUNNING),
        ("FROBNICATED", TaskState.UNKNOWN),
        ("", TaskState.UNKNOWN),
    ],
)
def test_task_state(raw: str, expected: TaskState) -> None:
    assert slurm.task_state(raw) is expected


def test_unknown_state_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djhpc.executors.slurm_tools"):
        for _ in range(3):
            assert slurm.task_state("WIBBLED_ONCE") is TaskState.UNKNOWN
    assert [r.getMessage() for r in caplog.records].count(
        "unknown Slurm job state 'WIBBLED_ONCE', treated as unknown"
    ) == 1


# The codes squeue(1)/sacct(1) describe as a job's end: the job has terminated
# and will not run again unless someone acts (requeue, release).
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
         "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}


@pytest.mark.parametrize(("short", "long"), DOCUMENTED_STATES)
def test_a_task_is_final_exactly_when_slurm_says_it_ended(short: str, long: str) -> None:
    # Waiting on a task that has ended would never return; giving up on one that
    # still runs would call it lost: both follow from this one property.
    assert slurm.task_state(long).final is (long in ENDED)


def test_an_unknown_state_is_not_final() -> None:
    assert not slurm.task_state("FROBNICATED").final


def test_states_serialise_as_lowercase_strings() -> None:
    assert (
        json.dumps([TaskState.OUT_OF_MEMORY, TaskState.PENDING]) == '["out_of_memory", "pending"]'
    )
    assert all(s.value == s.name.lower() for s in TaskState)


def test_every_task_state_but_unknown_is_reachable_from_slurm() -> None:
    reachable = {slurm.task_state(long) for _, long in DOCUMENTED_STATES}
    assert reachable == set(TaskState) - {TaskState.UNKNOWN}


# --- array ids, durations, memory ---------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [
        ("123_[4-9%2]", [f"123_{i}" for i in range(4, 10)]),
        ("123_[1,3-4]", ["123_1", "123_3", "123_4"]),
        ("123_[1,3,5-7]", ["123_1", "123_3", "123_5", "123_6", "123_7"]),
        ("123_[0-6:3]", ["123_0", "123_3", "123_6"]),
        ("123_[5]", ["123_5"]),
        ("123_7", ["123_7"]),
        ("123", ["123"]),
        ("123+1", ["123+1"]),
    ],
)
def test_expand_array_ids(job_id: str, expected: list[str]) -> None:
    assert slurm.expand_array_ids(job_id) == expected


@pytest.mark.parametrize("bad", ["123_[4-", "123_[]", "123_[9-4]", "123_[1,,2]", "123_[a-b]"])
def test_expand_array_ids_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="123"):
        slurm.expand_array_ids(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300.0),  # a bare number is minutes, as in --time=5
        ("0:00", 0.0),
        ("0:42", 42.0),
        ("05:30", 330.0),
        ("1:00:00", 3600.0),
        ("01:02:03", 3723.0),
        ("2-0", 2 * 86400.0),
        ("1-02", 86400.0 + 2 * 3600),
        ("1-02:03", 86400.0 + 2 * 3600 + 3 * 60),
        ("1-02:03:04", 86400.0 + 2 * 3600 + 3 * 60 + 4),
        ("00:01.872", 1.872),  # sacct TotalCPU
        ("05:01.200", 301.2),
        ("01:02:03.5", 3723.5),
        (" 0:05 ", 5.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert slurm.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    ["", "UNLIMITED", "INVALID", "NOT_SET", "Partition_Limit", "N/A", "-5", "-0:05", "1-2-3",
     "1:2:3:4", "1.5", "1-02.5", "1.5:00", "a:b", "1-", ":30"],
)  # fmt: skip
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        slurm.parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("4000", 4000.0),
        ("4000M", 4000.0),
        ("4G", 4096.0),
        ("1.5T", 1.5 * 1024 * 1024),
        ("512K", 0.5),
        ("123456K", 123456 / 1024),
        ("0", 0.0),
        ("4000Mn", 4000.0),  # pre-21.08 ReqMem: per node
        ("4Gc", 4096.0),  # pre-21.08 ReqMem: per CPU (suffix only stripped here)
        ("2g", 2048.0),
    ],
)
def test_parse_memory_mb(text: str, mb: float) -> None:
    assert slurm.parse_memory_mb(text) == pytest.approx(mb)


@pytest.mark.parametrize("bad", ["", "G", "-4G", "4X", "4 G", "four", "4GB", "1.5.2M"])
def test_parse_memory_mb_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        slurm.parse_memory_mb(bad)


# --- sacct / squeue parsing --------------------------------------------------


def test_parse_sacct_tasks_and_states(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djhpc.executors.slurm_tools"):
        tasks = slurm.parse_sacct(SACCT_OUTPUT)
    # The only warning is the (first-seen) unknown state, never a skipped line.
    assert not [r for r in caplog.records if "skipping" in r.getMessage()]
    states = {task_id: info.state for task_id, info in tasks.items()}
    assert states == {
        "1234_0": TaskState.COMPLETED,
        "1234_1": TaskState.FAILED,
        "1235_0": TaskState.COMPLETED,
        "1235_1": TaskState.RUNNING,
        "1235_2": TaskState.RUNNING,
        **{f"1235_{i}": TaskState.PENDING for i in range(3, 10)},
        "1236_1": TaskState.CANCELLED,
        "1237": TaskState.TIMEOUT,
        "1238": TaskState.OUT_OF_MEMORY,
        "1239": TaskState.NODE_FAIL,
        "1240": TaskState.PREEMPTED,
        "1241": TaskState.REQUEUED,
        "1242": TaskState.UNKNOWN,
        "1243+0": TaskState.COMPLETED,
        "1243+1": TaskState.COMPLETED,
        "1244": TaskState.RUNNING,
    }
    assert tasks["1236_1"].raw_state == "CANCELLED by 0"
    assert tasks["1242"].raw_state == "FROBNICATED"


def test_parse_sacct_merges_steps_into_their_task() -> None:
    tasks = slurm.parse_sacct(SACCT_OUTPUT)
    assert tasks["1234_0"] == TaskInfo(
        job_id="1234_0",
        state=TaskState.COMPLETED,
        raw_state="COMPLETED",
        exit_code="0:0",
        node="node1",
        elapsed_s=12.0,
        cpus=2,
        total_cpu_s=1.872,
        cpu_time_s=24.0,
        max_rss_mb=150000 / 1024,  # the srun step .0, not .batch or .extern
        req_mem_mb=2000.0,
        timelimit_s=600.0,
        start="2026-11-24T14:20:01",
        end="2026-11-24T14:20:13",
    )
    # Timed out: the task says TIMEOUT 0:0, its batch step CANCELLED 0:15.
    timeout = tasks["1237"]
    assert (timeout.exit_code, timeout.timelimit_s, timeout.elapsed_s) == ("0:0", 60.0, 84.0)
    assert timeout.max_rss_mb == pytest.approx(1100 / 1024)
    assert tasks["1238"].max_rss_mb == pytest.approx(1023988 / 1024)
    assert tasks["1238"].exit_code == "0:125"
    assert tasks["1243+0"].max_rss_mb == pytest.approx(1500 / 1024)


def test_parse_sacct_running_and_pending_have_no_made_up_values() -> None:
    tasks = slurm.parse_sacct(SACCT_OUTPUT)
    running = tasks["1235_1"]
    assert (running.end, running.max_rss_mb, running.elapsed_s) == (None, None, 42.0)
    pending = tasks["1235_7"]
    assert pending.job_id == "1235_7"
    assert (pending.node, pending.start, pending.end) == (None, None, None)
    assert pending.raw_state == "PENDING"
    cancelled = tasks["1236_1"]
    assert (cancelled.start, cancelled.end) == (None, "2026-11-24T14:22:10")
    assert tasks["1244"].timelimit_s is None  # UNLIMITED
    assert tasks["1244"].req_mem_mb == 16384.0
    assert tasks["1244"].total_cpu_s == 3723.0


def test_parse_sacct_total_cpu_falls_back_to_batch_step() -> None:
    text = (
        "900|COMPLETED|0:0|node1|10|1||10||1000M|5|2026-11-24T14:00:00|2026-11-24T14:00:10\n"
        "900.batch|COMPLETED|0:0|node1|10|1|00:07.250|10|2000K|||"
        "2026-11-24T14:00:00|2026-11-24T14:00:10\n"
    )
    assert slurm.parse_sacct(text)["900"].total_cpu_s == pytest.approx(7.25)


def test_parse_sacct_a_step_killed_for_memory_makes_the_task_out_of_memory() -> None:
    # As cgroups leave it: the kernel killed step .0, the batch script then exited 1.
    text = (
        "902_0|FAILED|1:0|node1|3|1||3||300M|5|2026-11-24T14:00:00|2026-11-24T14:00:03\n"
        "902_0.batch|FAILED|1:0|node1|3|1|00:00.500|3|10516K|||"
        "2026-11-24T14:00:00|2026-11-24T14:00:03\n"
        "902_0.0|OUT_OF_MEMORY|0:125|node1|2|1|00:01.000|2|307200K|||"
        "2026-11-24T14:00:00|2026-11-24T14:00:02\n"
    )
    task = slurm.parse_sacct(text)["902_0"]
    assert task.state == TaskState.OUT_OF_MEMORY
    assert task.raw_state == "FAILED (step 0 OUT_OF_MEMORY)" and task.max_rss_mb == 300.0


def test_parse_sacct_steps_before_their_task_still_merge() -> None:
    lines = SACCT_OUTPUT.splitlines()
    assert slurm.parse_sacct("\n".join(reversed(lines))) == slurm.parse_sacct(SACCT_OUTPUT)


def test_parse_sacct_per_cpu_reqmem_is_reported_per_task() -> None:
    text = "901|COMPLETED|0:0|node1|10|4|00:01.000|40||2000Mc|5|2026-11-24T14:00:00|2026-11-24T14:00:10"
    assert slurm.parse_sacct(text)["901"].req_mem_mb == 8000.0


def test_parse_sacct_skips_malformed_lines(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "\n\ngarbage\n1245|COMPLETED\n"
        + SACCT_OUTPUT.splitlines()[0]
        + "\n1246_[3-|PENDING"
        + ("|x" * 11)
    )
    with caplog.at_level(logging.WARNING, logger="djhpc.executors.slurm_tools"):
        tasks = slurm.parse_sacct(text)
    assert list(tasks) == ["1234_0"]
    assert sum("skipping sacct" in r.getMessage() for r in caplog.records) == 3


def test_parse_sacct_empty() -> None:
    assert slurm.parse_sacct("") == {}
    assert slurm.parse_sacct("\n  \n") == {}


def test_parse_squeue_expands_grouped_arrays() -> None:
    tasks = slurm.parse_squeue(SQUEUE_OUTPUT)
    assert sorted(tasks) == sorted(
        [
            *(f"1235_{i}" for i in range(1, 10)),
            *(f"1250_{i}" for i in (1, 3, 5, 6, 7)),
            "1251",
            "1252",
        ]
    )
    assert tasks["1235_1"] == TaskInfo(
        job_id="1235_1",
        state=TaskState.RUNNING,
        raw_state="RUNNING",
        node="node1",
        elapsed_s=42.0,
        cpus=1,
        req_mem_mb=1000.0,
        timelimit_s=300.0,
        start="2026-11-24T14:21:02",
    )
    assert tasks["1235_2"].state is TaskState.RUNNING  # COMPLETING
    assert tasks["1235_9"].state is TaskState.PENDING
    assert (tasks["1235_9"].node, tasks["1235_9"].start) == (None, None)
    assert tasks["1250_6"].timelimit_s == 86400.0
    assert tasks["1250_6"].req_mem_mb == 4096.0
    assert tasks["1251"].elapsed_s == 93784.0
    assert tasks["1251"].timelimit_s is None  # UNLIMITED
    assert tasks["1251"].node == "node[1-2]"
    assert tasks["1252"].state is TaskState.PENDING  # CONFIGURING
    assert tasks["1252"].timelimit_s is None  # NOT_SET


def test_parse_sacct_captured_while_running() -> None:
    tasks = slurm.parse_sacct(captured("sacct_running"))
    assert {k: v.state for k, v in tasks.items()} == {
        "25_0": TaskState.RUNNING,
        "25_1": TaskState.RUNNING,
        **{f"25_{i}": TaskState.PENDING for i in range(2, 6)},  # from "25_[2-5%2]"
        "26": TaskState.FAILED,
        "27": TaskState.PENDING,
        "28": TaskState.RUNNING,
    }
    failed = tasks["26"]
    assert (failed.exit_code, failed.total_cpu_s) == ("3:0", 0.018)
    assert failed.max_rss_mb == 10896 / 1024  # .batch beats the srun step .0 (1668K)
    assert tasks["25_0"].max_rss_mb is None  # MaxRSS only appears once a step ends
    assert (tasks["25_4"].node, tasks["25_4"].start, tasks["25_4"].req_mem_mb) == (
        None,
        None,
        100.0,
    )
    assert (tasks["28"].cpus, tasks["28"].req_mem_mb, tasks["28"].timelimit_s) == (2, 512.0, 60.0)


def test_parse_sacct_captured_when_done() -> None:
    tasks = slurm.parse_sacct(captured("sacct_final"))
    assert {k: v.state for k, v in tasks.items()} == {
        **{f"25_{i}": TaskState.COMPLETED for i in range(6)},
        "26": TaskState.FAILED,
        "27": TaskState.CANCELLED,
        "28": TaskState.TIMEOUT,
    }
    assert all((tasks[f"25_{i}"].max_rss_mb or 0) > 30 for i in range(6))  # the 30 MB array
    cancelled = tasks["27"]
    assert (cancelled.raw_state, cancelled.start, cancelled.node) == ("CANCELLED by 0", None, None)
    timeout = tasks["28"]
    assert (timeout.exit_code, timeout.elapsed_s, timeout.cpu_time_s) == ("0:0", 87.0, 174.0)


def test_parse_squeue_captured_grouped_and_per_task_agree() -> None:
    grouped = slurm.parse_squeue(captured("squeue"))
    assert grouped == slurm.parse_squeue(captured("squeue_array"))
    assert sorted(grouped) == ["25_0", "25_1", "25_2", "25_3", "25_4", "25_5", "27", "28"]
    assert grouped["25_3"].state is TaskState.PENDING
    assert (grouped["28"].elapsed_s, grouped["28"].timelimit_s) == (4.0, 60.0)
    assert grouped["28"].req_mem_mb == 256.0  # squeue's %m is per CPU here


def test_query_on_captures_takes_total_memory_from_sacct(fake: FakeSlurm) -> None:
    fake.add("squeue", stdout=captured("squeue_array"))
    fake.add("sacct", stdout=captured("sacct_running"))
    tasks = slurm.query(["25", "26", "27", "28"])
    assert tasks["28"].state is TaskState.RUNNING
    assert tasks["28"].req_mem_mb == 512.0  # not squeue's per-CPU 256M
    assert tasks["26"].state is TaskState.FAILED  # gone from squeue, known to sacct
    assert tasks["25_5"].state is TaskState.PENDING


def test_parse_squeue_skips_malformed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="djhpc.executors.slurm_tools"):
        tasks = slurm.parse_squeue("1|RUNNING\n7_[1-|PENDING||0:00|5:00|1|1000M|N/A\n")
    assert tasks == {}
    assert len(caplog.records) == 2


# --- config -------------------------------------------------------------------


def test_parse_config() -> None:
    config = slurm.parse_config(SCONTROL_CONFIG)
    assert config["ClusterName"] == "djhpc"
    assert config["SchedulerParameters"] == "batch_sched_delay=0,max_array_tasks=500"
    assert config["AccountingStorageBackupHost"] == "(null)"
    assert config["MaxArraySize"] == "10001"  # slurm.conf's value, not a later section's
    assert config["SLURM_VERSION"] == "22.05.8"
    assert not any(" " in key for key in config)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"MaxArraySize": "1001"}, 1001),  # indexes 0..1000 -> 1001 tasks
        ({"MaxArraySize": "10001", "SchedulerParameters": "batch_sched_delay=0"}, 10001),
        ({"MaxArraySize": "10001", "SchedulerParameters": "bf_continue,max_array_tasks=500"}, 500),
        ({"MaxArraySize": "100", "SchedulerParameters": "max_array_tasks=500"}, 100),
        ({"SchedulerParameters": "max_array_tasks=64"}, 64),
        ({"MaxArraySize": "0"}, 0),  # arrays disabled
        ({"MaxArraySize": "(null)"}, None),
        ({}, None),
    ],
)
def test_max_array_size(config: dict[str, str], expected: int | None) -> None:
    assert slurm.max_array_size(config) == expected


def test_max_array_size_from_scontrol_output() -> None:
    assert slurm.max_array_size(slurm.parse_config(SCONTROL_CONFIG)) == 500


# --- fake binaries: run and the calls ----------------------------------------


class FakeSlurm:
    """Writes fake Slurm commands into a directory that is first on PATH."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir

    def add(
        self, name: str, stdout: str = "", stderr: str = "", code: int = 0, sleep: float = 0
    ) -> None:
        script = self.bin_dir / name
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys, time\n"
            f"with open({str(self.bin_dir / (name + '.calls'))!r}, 'a') as f:\n"
            "    f.write(json.dumps({'argv': sys.argv[1:],"
            " 'SLURM_BITSTR_LEN': os.environ.get('SLURM_BITSTR_LEN')}) + '\\n')\n"
            f"time.sleep({sleep})\n"
            f"sys.stdout.write({stdout!r})\n"
            f"sys.stderr.write({stderr!r})\n"
            f"sys.exit({code})\n"
        )
        script.chmod(0o755)

    def calls(self, name: str) -> list[dict[str, Any]]:
        log = self.bin_dir / f"{name}.calls"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("SLURM_BITSTR_LEN", raising=False)
    # Transient controller errors are retried once, without the pause.
    monkeypatch.setenv("DJHPC_SLURM_RETRY_DELAYS", "0")
    return FakeSlurm(bin_dir)


def test_run_returns_output(fake: FakeSlurm) -> None:
    fake.add("sinfo", stdout="debug* up infinite 1 idle node1\n")
    proc = slurm.call(["sinfo", "-h"])
    assert proc.returncode == 0
    assert proc.stdout == "debug* up infinite 1 idle node1\n"
    # Long pending array ranges must not be cut at Slurm's default 64 bytes.
    assert fake.calls("sinfo") == [{"argv": ["-h"], "SLURM_BITSTR_LEN": "0"}]


def test_run_keeps_users_bitstr_len(fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add("sinfo")
    monkeypatch.setenv("SLURM_BITSTR_LEN", "256")
    slurm.call(["sinfo"])
    assert fake.calls("sinfo")[0]["SLURM_BITSTR_LEN"] == "256"


def test_run_missing_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError) as err:
        slurm.call(["sbatch", "--version"])
    assert str(err.value) == (
        "sbatch not found on PATH. Install Slurm's client tools or use --executor local"
    )
    assert err.value.command == ["sbatch", "--version"]
    assert err.value.returncode is None
    assert not slurm.available()


def test_available(fake: FakeSlurm) -> None:
    fake.add("sbatch")
    assert slurm.available()


def test_run_failure_shows_command_code_and_output(fake: FakeSlurm) -> None:
    stderr = (
        "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent "
        "connection to host:localhost:6819: Connection refused\n"
        "sacct: error: Sending PersistInit msg: Connection refused\n"
    )
    fake.add("sacct", stdout="partial\n", stderr=stderr, code=1)
    with pytest.raises(SlurmError) as err:
        slurm.call(["sacct", "-j", "1"])
    e = err.value
    assert (e.command, e.returncode, e.stdout, e.stderr) == (
        ["sacct", "-j", "1"],
        1,
        "partial\n",
        stderr,
    )
    message = str(e)
    assert "\n" not in message
    assert message.startswith("sacct -j 1 failed with exit code 1: sacct: error: slurm_persist")
    assert message.endswith("Check that Slurm is up (`sinfo`) and the job ids exist, then retry")
    detail = e.detail()
    assert "command: sacct -j 1" in detail
    assert "exit code: 1" in detail
    assert "stdout:\n    partial" in detail
    assert "    sacct: error: Sending PersistInit msg: Connection refused" in detail


def test_run_failure_message_stays_short_for_many_ids(fake: FakeSlurm) -> None:
    fake.add("scancel", code=1)
    with pytest.raises(SlurmError) as err:
        slurm.call(["scancel", *(str(i) for i in range(1000, 3000))])
    assert len(str(err.value)) < 300
    assert "no error output" in str(err.value)
    assert "2999" in err.value.detail()


def test_run_check_false_returns_failure(fake: FakeSlurm) -> None:
    fake.add("squeue", stderr="boom\n", code=2)
    proc = slurm.call(["squeue"], check=False)
    assert (proc.returncode, proc.stderr) == (2, "boom\n")


def test_run_timeout(fake: FakeSlurm) -> None:
    fake.add("squeue", sleep=10)
    with pytest.raises(SlurmError) as err:
        slurm.call(["squeue"], timeout=0.5)
    assert str(err.value).startswith("squeue gave no answer within 0.5 s.")
    assert "sinfo" in str(err.value)
    assert err.value.returncode is None
    assert isinstance(err.value.__cause__, subprocess.TimeoutExpired)


def test_sacct_is_one_call_with_every_id(fake: FakeSlurm) -> None:
    fake.add("sacct", stdout=SACCT_OUTPUT)
    tasks = slurm.sacct(["1234", "1235", "1237", "1234", " 1238 "])
    assert tasks == slurm.parse_sacct(SACCT_OUTPUT)
    assert [c["argv"] for c in fake.calls("sacct")] == [
        ["--jobs=1234,1235,1237,1238", "-P", "-n", f"--format={slurm.SACCT_FORMAT}"]
    ]


def test_sacct_single_string_is_one_id(fake: FakeSlurm) -> None:
    fake.add("sacct")
    slurm.sacct("1234")
    assert fake.calls("sacct")[0]["argv"][0] == "--jobs=1234"


def test_sacct_without_ids_makes_no_call(fake: FakeSlurm) -> None:
    fake.add("sacct", stdout=SACCT_OUTPUT)
    assert slurm.sacct([]) == {}
    assert slurm.sacct(["", " "]) == {}
    assert fake.calls("sacct") == []


def test_sacct_accounting_disabled(fake: FakeSlurm, caplog: pytest.LogCaptureFixture) -> None:
    fake.add("sacct", stderr="sacct: error: Slurm accounting storage is disabled\n", code=1)
    with caplog.at_level(logging.WARNING, logger="djhpc.executors.slurm_tools"):
        assert slurm.sacct(["1"]) == {}
    assert "accounting is disabled" in caplog.text


def test_sacct_other_failure_raises(fake: FakeSlurm) -> None:
    fake.add("sacct", stderr="sacct: error: Problem talking to the database\n", code=1)
    with pytest.raises(SlurmError, match="Problem talking to the database"):
        slurm.sacct(["1"])


def test_squeue_is_one_call_with_every_id(fake: FakeSlurm) -> None:
    fake.add("squeue", stdout=SQUEUE_OUTPUT)
    assert slurm.squeue(["1235", "1250_3", "1251"]) == slurm.parse_squeue(SQUEUE_OUTPUT)
    # --jobs=, because squeue's -j takes an optional argument and "-j 1,2" misparses.
    assert [c["argv"] for c in fake.calls("squeue")] == [
        ["-h", "-r", "--jobs=1235,1250_3,1251", "-o", slurm.SQUEUE_FORMAT]
    ]


def test_squeue_unknown_ids_mean_nothing_queued(fake: FakeSlurm) -> None:
    fake.add("squeue", stderr="slurm_load_jobs error: Invalid job id specified\n", code=1)
    assert slurm.squeue(["99999"]) == {}


def test_squeue_controller_down_raises(fake: FakeSlurm) -> None:
    stderr = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    fake.add("squeue", stderr=stderr, code=1)
    with pytest.raises(SlurmError, match="Unable to contact slurm controller") as err:
        slurm.squeue(["1"])
    assert err.value.returncode == 1


def test_squeue_without_ids_makes_no_call(fake: FakeSlurm) -> None:
    fake.add("squeue")
    assert slurm.squeue([]) == {}
    assert fake.calls("squeue") == []


def test_query_prefers_squeue_while_live_and_sacct_once_final(fake: FakeSlurm) -> None:
    fake.add(
        "squeue",
        stdout=(
            "1235_1|RUNNING|node1|0:42|5:00|1|1000M|2026-11-24T14:21:02\n"
            "1235_2|COMPLETING|node1|0:40|5:00|1|1000M|2026-11-24T14:21:04\n"
            "1235_[3-9%2]|PENDING||0:00|5:00|1|1000M|N/A\n"
        ),
    )
    fake.add(
        "sacct",
        stdout=(
            # sacct lags: 1235_1 still PENDING there, but 1235_2 already COMPLETED.
            "1235_0|COMPLETED|0:0|node1|31|1|00:29.114|31||1000M|5|2026-11-24T14:20:30|2026-11-24T14:21:01\n"
            "1235_1|PENDING|0:0|None assigned|0|1|00:00:00|0||1000M|5|Unknown|Unknown\n"
            "1235_2|COMPLETED|0:0|node1|41|1|00:39.000|41||1000M|5|2026-11-24T14:21:04|2026-11-24T14:21:45\n"
            "1235_[3-9%2]|PENDING|0:0|None assigned|0|1|00:00:00|0||1000M|5|Unknown|Unknown\n"
        ),
    )
    tasks = slurm.query(["1235"])
    assert {k: v.state for k, v in tasks.items()} == {
        "1235_0": TaskState.COMPLETED,  # only sacct still knows it
        "1235_1": TaskState.RUNNING,  # squeue wins over sacct's lagging PENDING
        "1235_2": TaskState.COMPLETED,  # sacct's final state wins over COMPLETING
        **{f"1235_{i}": TaskState.PENDING for i in range(3, 10)},
    }
    assert tasks["1235_2"].end == "2026-11-24T14:21:45"
    assert len(fake.calls("squeue")) == len(fake.calls("sacct")) == 1


def test_query_without_accounting_uses_squeue(fake: FakeSlurm) -> None:
    fake.add("squeue", stdout="1251|RUNNING|node1|1:00|UNLIMITED|8|16G|2026-11-23T12:17:00\n")
    fake.add("sacct", stderr="sacct: error: Slurm accounting storage is disabled\n", code=1)
    assert slurm.query(["1251"])["1251"].state is TaskState.RUNNING


def test_query_without_ids_makes_no_call(fake: FakeSlurm) -> None:
    fake.add("squeue")
    fake.add("sacct")
    assert slurm.query([]) == {}
    assert fake.calls("squeue") == fake.calls("sacct") == []


def test_scancel_is_one_quiet_call(fake: FakeSlurm) -> None:
    fake.add("scancel")
    slurm.scancel(["1235", "1236_1", "1235"])
    assert [c["argv"] for c in fake.calls("scancel")] == [["-Q", "1235", "1236_1"]]


def test_scancel_without_ids_makes_no_call(fake: FakeSlurm) -> None:
    fake.add("scancel")
    slurm.scancel([])
    assert fake.calls("scancel") == []


def test_scancel_failure_raises(fake: FakeSlurm) -> None:
    stderr = "scancel: error: Kill job error on job id 1235: Access/permission denied\n"
    fake.add("scancel", stderr=stderr, code=1)
    with pytest.raises(SlurmError, match="permission denied"):
        slurm.scancel(["1235"])


def test_show_config(fake: FakeSlurm) -> None:
    fake.add("scontrol", stdout=SCONTROL_CONFIG)
    config = slurm.show_config()
    assert config == slurm.parse_config(SCONTROL_CONFIG)
    assert fake.calls("scontrol")[0]["argv"] == ["show", "config"]


def test_observe_sees_every_task_of_a_runs_arrays_once(fake: FakeSlurm) -> None:
    from djhpc.executors import RUN_TASKS
    from djhpc.executors.slurm import SlurmExecutor
    from tests.unit.records import chunk, run

    fake.add("sbatch")
    fake.add("squeue", stdout="")
    fake.add("sacct", stdout=(
        "40_0|COMPLETED|0:0|node1|100|2|00:50.000|200||1G|5|T0|T1|billing=2,cpu=2,mem=1G,node=1\n"
        "40_1|COMPLETED|0:0|node1|3|2|00:01.000|6||1G|5|T0|T1|billing=2,cpu=2,mem=1G,node=1\n"
        "40_2|CANCELLED by 0|0:0|None assigned|0|2|00:00:00|0||1G|5|None|T1|billing=2\n"))
    # Task 40_0 pulled both chunks; 40_1 started, found none left; 40_2 never started.
    r = run(settings={"jobs": ["40"]})
    views = SlurmExecutor().observe([(r, chunk(0, ChunkState.DONE, job_id="40_0")),
                                     (r, chunk(1, ChunkState.DONE, job_id="40_0"))])
    assert sorted(t.job_id for t in views[(7, RUN_TASKS)].tasks) == ["40_0", "40_1"]
    assert views[(7, 1)].accounting is not None and views[(7, 1)].accounting.job_id == "40_0"
