"""Sizing arithmetic: percentiles, rounding, caps, and what the user gave."""

from __future__ import annotations

import pytest

from djhpc import sizing
from djhpc.resources import Resources
from djhpc.sizing import History, TaskUsage

PROFILE = Resources(time_s=3600, mem_mb=4096)


def history(seconds: list[float], rss: list[float] | None = None) -> History:
    tasks = tuple(TaskUsage(run_id=1, chunk=i, attempt=1, job_id=f"1_{i}", state="completed",
                            max_rss_mb=mb) for i, mb in enumerate(rss or []))
    return History(table="`s`.`t`", runs=(1, 2), key_seconds=tuple(seconds), tasks=tasks)


def size(past: History | None, given: tuple[str, ...] = (), res: Resources = PROFILE,
         **kw: object) -> tuple[Resources, int | None, sizing.Sizing]:
    options: dict[str, object] = {"n_keys": 1000, "target_task_s": 3600.0, "max_time_s": None,
                                  "max_mem_mb": None, "chunk_size": None, "tasks": None}
    options.update(kw)
    return sizing.size(past, res, given=given, **options)  # type: ignore[arg-type]


def test_percentiles_interpolate_and_keep_the_maximum() -> None:
    p = sizing.percentiles([float(n) for n in range(1, 101)])
    assert p is not None
    assert (p.p50, round(p.p95, 2), p.max) == (50.5, 95.05, 100.0)
    one = sizing.percentiles([3.0])
    assert one is not None and (one.p50, one.p95, one.max) == (3.0, 3.0, 3.0)
    assert sizing.percentiles([]) is None


@pytest.mark.parametrize(("peak", "expected"), [
    (100.0, 512.0),  # the floor
    (1000.0, 1536.0),  # 1300 rounded up to 256M
    (3500.0, 5120.0),  # 4550: above 4G, whole gigabytes
])
def test_learned_memory_has_headroom_a_unit_and_a_floor(peak: float, expected: float) -> None:
    assert sizing.learned_mem_mb(peak) == expected
    assert sizing.learned_mem_mb(peak, cap_mb=1024) == min(expected, 1024)


def test_chunks_fill_the_target_task_time_at_the_p95() -> None:
    past = history([10.0] * 19 + [20.0])  # p95 ~10.5 s
    res, chunk, info = size(past)
    p95 = info.key_seconds.p95 if info.key_seconds else 0
    assert chunk == int(3600 // p95)
    assert res.time_s == sizing.learned_time_s(chunk, p95, None)
    assert res.time_s >= chunk * p95 * sizing.TIME_MARGIN  # margin over the p95
    assert res.mem_mb == PROFILE.mem_mb  # no memory measured: the profile's stays
    assert info.source == "history"
    assert info.origin == {"mem": "profile", "chunk_size": "history", "time": "history"}


def test_the_partitions_limit_caps_the_time() -> None:
    res, chunk, _ = size(history([600.0] * 30), target_task_s=36000.0, max_time_s=7200.0)
    assert res.time_s == 7200.0
    assert chunk == 60


def test_a_key_longer_than_the_target_gets_a_chunk_of_its_own() -> None:
    res, chunk, _ = size(history([7200.0] * 30))
    assert chunk == 1
    assert res.time_s == sizing.learned_time_s(1, 7200.0, None) > 7200.0 * 1.5


def test_what_the_user_gave_is_kept() -> None:
    past = history([1.0] * 40, rss=[300.0, 900.0])
    res, chunk, info = size(past, given=("mem", "time"), res=Resources(time_s=600, mem_mb=2048))
    assert (res.mem_mb, res.time_s) == (2048, 600)
    assert chunk == sizing.keys_per_task(3600, 1.0, 600)  # chunks fit the given time
    assert info.origin == {"mem": "flags", "time": "flags", "chunk_size": "history"}
    res, chunk, info = size(past, chunk_size=50)
    assert chunk is None and info.origin["chunk_size"] == "flags"
    assert res.time_s == sizing.learned_time_s(50, 1.0, None)
    assert res.mem_mb == sizing.learned_mem_mb(900.0)
    res, _, info = size(past, given=("mem", "time"), chunk_size=5)
    assert info.source == "flags" and res == PROFILE


def test_too_little_history_sizes_from_the_profile() -> None:
    res, chunk, info = size(history([1.0] * (sizing.MIN_KEYS - 1)))
    assert (res, chunk, info.source) == (PROFILE, None, "profile")
    assert "19 measured keys" in info.note
    res, chunk, info = size(None)
    assert (res, chunk, info.source, info.runs) == (PROFILE, None, "profile", ())


def test_sizing_json_names_its_sources() -> None:
    _, _, info = size(history([2.0] * 30, rss=[700.0]))
    data = info.to_json()
    assert data["source"] == "history" and data["runs"] == [1, 2]
    assert data["key_seconds"] == {"p50": 2.0, "p95": 2.0, "max": 2.0}
    assert data["max_rss_mb"] == 700.0


def test_escalation_doubles_up_to_the_cap_and_stops_there() -> None:
    res = Resources(time_s=600, mem_mb=1024)
    more = sizing.escalate(res, "out_of_memory", max_mem_mb=3000, max_time_s=None)
    assert more is not None and more.mem_mb == 2048
    capped = sizing.escalate(more, "out_of_memory", max_mem_mb=3000, max_time_s=None)
    assert capped is not None and capped.mem_mb == 3000
    assert sizing.escalate(capped, "out_of_memory", max_mem_mb=3000, max_time_s=None) is None
    longer = sizing.escalate(res, "timeout", max_mem_mb=None, max_time_s=900)
    assert longer is not None and (longer.time_s, longer.mem_mb) == (900, 1024)


def test_a_follow_up_doubles_memory_for_the_keys_not_yet_made() -> None:
    from djhpc.escalation import Stopped, decide

    res = Resources(time_s=600, mem_mb=1024)
    stopped = [Stopped(chunk=3, reason="out_of_memory", hi=40, first_unmade=35),
               Stopped(chunk=4, reason="out_of_memory", hi=50, first_unmade=None)]
    d = decide(res, stopped, attempt=1, escalated=0, max_escalations=2, max_mem_mb=None,
               max_time_s=None)
    assert d.resources.mem_mb == 2048 and d.ranges == [(35, 40)] and not d.culprits
    (raised,) = d.escalations
    assert raised.describe() == "chunks 3, 4: out of memory at 1G → 2G (attempt 2)"


def test_at_the_cap_the_key_at_fault_is_its_error() -> None:
    from djhpc.escalation import Stopped, decide

    res = Resources(time_s=600, mem_mb=2048)
    stopped = [Stopped(chunk=7, reason="out_of_memory", hi=12, first_unmade=10)]
    capped = decide(res, stopped, attempt=2, escalated=1, max_escalations=2, max_mem_mb=2048,
                    max_time_s=None)
    assert not capped.ranges and not capped.escalations
    ((chunk, seq, why),) = capped.culprits
    assert (chunk, seq) == (7, 10) and "more than 2G" in why and "max-mem" in why
    spent = decide(res, stopped, attempt=3, escalated=2, max_escalations=2, max_mem_mb=None,
                   max_time_s=None)
    assert "after 2 escalations" in spent.culprits[0][2]
    both = decide(res, [*stopped, Stopped(chunk=8, reason="timeout", hi=20, first_unmade=15)],
                  attempt=1, escalated=0, max_escalations=2, max_mem_mb=None, max_time_s=None)
    assert (both.resources.mem_mb, both.resources.time_s) == (4096, 1200)
    assert both.ranges == [(10, 12), (15, 20)]



def test_what_a_follow_up_does_with_each_chunk() -> None:
    from djhpc.escalation import HANDED_BACK, _reason
    from djhpc.executors import TaskView
    from djhpc.ledger import ChunkRecord
    from djhpc.states import ChunkState, TaskState

    def chunk(state: ChunkState, done: int = 0) -> ChunkRecord:
        return ChunkRecord(run_id=1, chunk=0, attempt=1, lo=0, hi=10, state=state, n_done=done)

    def seen(state: TaskState) -> TaskView:
        return TaskView(state=state)

    assert _reason(chunk(ChunkState.LOST), seen(TaskState.OUT_OF_MEMORY)) == "out_of_memory"
    assert _reason(chunk(ChunkState.LOST), seen(TaskState.TIMEOUT)) == "timeout"
    assert _reason(chunk(ChunkState.INTERRUPTED, done=3), seen(TaskState.COMPLETED)) == HANDED_BACK
    assert _reason(chunk(ChunkState.INTERRUPTED), seen(TaskState.COMPLETED)) == "timeout"
    assert _reason(chunk(ChunkState.LOST, done=2), seen(TaskState.CANCELLED)) == HANDED_BACK
    assert _reason(chunk(ChunkState.LOST, done=2), seen(TaskState.FAILED)) is None  # its make()
    assert _reason(chunk(ChunkState.DONE, done=10), seen(TaskState.TIMEOUT)) is None
    assert _reason(chunk(ChunkState.FAILED, done=9), None) is None


def test_keys_handed_back_go_on_with_the_same_resources_while_continuations_last() -> None:
    from djhpc.escalation import HANDED_BACK, Stopped, decide

    res = Resources(time_s=600, mem_mb=1024)
    back = [Stopped(chunk=2, reason=HANDED_BACK, hi=30, first_unmade=25)]
    go_on = decide(res, back, attempt=1, escalated=0, max_escalations=2, max_mem_mb=None,
                   max_time_s=None, continuations_left=1)
    assert go_on.resources == res and go_on.ranges == [(25, 30)] and not go_on.culprits
    assert go_on.escalations[0].describe() == (
        "chunk 2: keys handed back, continued (attempt 2)")
    spent = decide(res, back, attempt=11, escalated=0, max_escalations=2, max_mem_mb=None,
                   max_time_s=None, continuations_left=0)
    assert not spent.ranges and not spent.escalations
