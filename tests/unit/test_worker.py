"""The worker: signal handling (stop between keys, or interrupt the key in time), deadlines, windows."""

from __future__ import annotations

import os
import signal
import time

import pytest

from djhpc import worker
from djhpc.worker import Interrupted, StopSignal


def test_a_signal_between_keys_only_asks_to_stop() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    with StopSignal(usr2_grace=5) as stop:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)
        assert stop.requested == "SIGUSR2"
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGUSR2"  # the first reason is kept
    assert signal.getsignal(signal.SIGUSR2) is before  # handlers restored


def test_sigterm_inside_a_key_interrupts_at_once() -> None:
    with StopSignal(usr2_grace=5) as stop, pytest.raises(Interrupted, match="SIGTERM"):
        stop.in_key = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


def test_usr2_inside_a_key_leaves_the_grace_time_then_interrupts() -> None:
    start = time.monotonic()
    with StopSignal(usr2_grace=0.3) as stop, pytest.raises(Interrupted, match="no time left"):
        stop.in_key = True
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(5)
    assert 0.25 < time.monotonic() - start < 3


def test_a_key_that_ends_within_the_grace_time_is_not_interrupted() -> None:
    with StopSignal(usr2_grace=0.5) as stop:
        stop.in_key = True
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)
        stop.in_key = False  # the key finished; the worker cancels the timer
        signal.setitimer(signal.ITIMER_REAL, 0)
        time.sleep(0.6)
        assert stop.requested == "SIGUSR2"


def test_a_task_starts_no_key_that_would_end_within_the_signal_delay() -> None:
    from djhpc.worker import Deadline

    now = [0.0]
    deadline = Deadline(100.0, reserve_s=30.0, history_p95_s=None, clock=lambda: now[0])
    assert not deadline.too_late()  # nothing measured yet: 0 s + 30 s < 100 s
    deadline.measured(20.0)
    now[0] = 45.0
    assert not deadline.too_late()  # 45 + 24 + 30 = 99
    now[0] = 47.0
    assert deadline.too_late()
    assert not Deadline(None, reserve_s=30.0, history_p95_s=5.0).too_late()  # no limit
    assert Deadline(60.0, reserve_s=30.0, history_p95_s=30.0).too_late()  # history says no


def test_a_task_takes_keys_a_report_interval_at_a_time() -> None:
    assert worker._window(0.0) == 1  # nothing timed yet: one key, the rest stays splittable
    assert worker._window(600.0) == 1  # slow keys: one at a time
    assert worker._window(1.0) == int(worker.FLUSH_SECONDS)
    assert worker._window(0.0001) == worker.WINDOW_MAX_KEYS
