"""Retries on a busy controller, and how often Slurm is asked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from djhpc import backoff
from djhpc.executors import slurm_tools as slurm


class Flaky(Exception):
    pass


def test_retrying_until_success_sleeps_between_attempts() -> None:
    outcomes: list[object] = [Flaky("Socket timed out"), Flaky("Socket timed out"), "ok"]
    slept: list[float] = []

    def call() -> object:
        result = outcomes.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    assert backoff.retrying(call, "x", lambda e: True, pauses=[1, 2, 3], sleep=slept.append) == "ok"
    assert slept == [1, 2]


def test_retrying_gives_up_with_the_last_error_and_never_retries_a_final_one() -> None:
    slept: list[float] = []

    def failing() -> None:
        raise Flaky("Resource temporarily unavailable")

    with pytest.raises(Flaky):
        backoff.retrying(failing, "x", lambda e: True, pauses=[1, 1], sleep=slept.append)
    assert slept == [1, 1]
    slept.clear()
    with pytest.raises(Flaky):
        backoff.retrying(failing, "x", lambda e: False, pauses=[1, 1], sleep=slept.append)
    assert slept == []


def test_transient_messages() -> None:
    assert backoff.is_transient("sbatch: error: Batch job submission failed: Socket timed out "
                                "on send/recv operation")
    assert backoff.is_transient("slurm_load_jobs error: Unable to contact slurm controller "
                                "(connect failure)")
    assert backoff.is_transient("sbatch: error: Resource temporarily unavailable")
    assert not backoff.is_transient("sbatch: error: Batch job submission failed: Invalid account "
                                    "or account/partition combination specified")


def test_delays_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJHPC_SLURM_RETRY_DELAYS", "0.5, 1")
    assert backoff.delays() == (0.5, 1.0)
    monkeypatch.setenv("DJHPC_SLURM_RETRY_DELAYS", "soon")
    assert backoff.delays() == backoff.DEFAULT_DELAYS


def test_slurm_asked_at_most_every_30_s_and_less_on_long_runs() -> None:
    assert backoff.slurm_interval(0) == 30.0
    assert backoff.slurm_interval(3600) == 180.0
    assert backoff.slurm_interval(10 * 86400) == backoff.MAX_SLURM_INTERVAL
    assert backoff.slurm_interval(0, floor=2.0) == 2.0


def test_a_slurm_command_failing_twice_transiently_is_run_three_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = tmp_path / "count"
    script = tmp_path / "squeue"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"p = {str(counter)!r}\n"
        "n = int(open(p).read()) + 1 if __import__('os').path.exists(p) else 1\n"
        "open(p, 'w').write(str(n))\n"
        "if n <= 2:\n"
        "    sys.stderr.write('squeue: error: slurm_receive_msg: Socket timed out on send/recv "
        "operation\\n'); sys.exit(1)\n"
        "print('30_0|PENDING||0:00|1:00|1|256M|N/A|JobHeldUser')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("DJHPC_SLURM_RETRY_DELAYS", "0,0,0")
    assert slurm.squeue(["30"])["30_0"].reason == "JobHeldUser"
    assert counter.read_text() == "3"
    counter.write_text("-5")  # now it keeps failing: the error names the command and stderr
    monkeypatch.setenv("DJHPC_SLURM_RETRY_DELAYS", "0")
    with pytest.raises(slurm.SlurmError) as err:
        slurm.squeue(["30"])
    assert err.value.command[0] == "squeue" and "Socket timed out" in err.value.stderr
    assert "Socket timed out" in str(err.value)


def test_watch_asks_slurm_at_most_every_30_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from djhpc import executors, status
    from djhpc.executors import FOLLOW_UP, RUN_TASKS, TaskView
    from djhpc.executors.slurm_tools import TaskInfo
    from djhpc.ledger import RunRecord, now
    from djhpc.states import RunPhase, TaskState

    asked: list[int] = []
    info = TaskInfo(job_id="1_0", state=TaskState.RUNNING, raw_state="RUNNING")

    def fake_observe(chunks: object, ask_scheduler: bool = True) -> dict[object, TaskView]:
        if ask_scheduler:
            asked.append(1)
            return {(1, 0): TaskView(state=TaskState.RUNNING, alive=True, accounting=info),
                    (1, FOLLOW_UP): TaskView(state=TaskState.PENDING, alive=True,
                                             accounting=info),
                    (1, RUN_TASKS): TaskView(state=TaskState.RUNNING, tasks=(info,))}
        return {(1, 0): TaskView(state=TaskState.RUNNING)}  # the ledger's word only

    monkeypatch.setattr(executors, "observe", fake_observe)
    clock = [0.0]
    poll = status.SlurmPoll(clock=lambda: clock[0])
    run = RunRecord(run_id=1, target="t", paths=[], workdir="", table_name="", keys_table="",
                    key_attrs=[], executor="slurm", n_keys=1, attempts=1,
                    state=RunPhase.ACTIVE, created=now() - timedelta(seconds=60),
                    finished=None, settings={}, run_dir="", db_user="", host="")
    for t in (0.0, 10.0, 29.0):
        clock[0] = t
        views = poll.observe([], [run])
        assert views[(1, 0)].accounting is info  # Slurm's last answer stands
        assert views[(1, FOLLOW_UP)].alive and views[(1, RUN_TASKS)].tasks == (info,)
    assert len(asked) == 1  # the answer at 0 s stands until 30 s have passed
    clock[0] = 30.0
    poll.observe([], [run])
    assert len(asked) == 2
    # A run of two hours is asked about every 6 minutes.
    old = replace(run, created=now() - timedelta(hours=2))
    clock[0] = 200.0
    poll.observe([], [old])
    assert len(asked) == 2
    clock[0] = 30.0 + 360.0
    poll.observe([], [old])
    assert len(asked) == 3
