"""Sizing from experience: what a table's earlier runs say its tasks need.

Pure. `History` is what the ledger measured of a table's runs (each key's
make() time, each task's peak memory); `size()` turns it into the memory, time
and chunk size of the next run, leaving alone what the user gave; `escalate()`
is the next try's resources for a task Slurm stopped for memory or time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from djhpc.resources import Resources, format_mb

MIN_KEYS = 20  # measured make() calls before history is trusted
MEM_HEADROOM = 1.3  # x the largest peak memory seen
MEM_FLOOR_MB = 512.0  # the interpreter, DataJoint and a database driver alone need ~200M
TIME_MARGIN = 1.5  # x the time the chunk's keys take at the p95 per-key duration
TASK_OVERHEAD_S = 120.0  # start-up, connecting, the last report, on a busy node
MAX_CHUNK = 1000  # keys; as the plan's own default
MAX_ESCALATION_FACTOR = 2.0  # memory or time, per escalation
KEY_MARGIN = 1.2  # a task starts a key only if this x the longest key seen still fits


@dataclass(frozen=True, kw_only=True)
class TaskUsage:
    """One task's resource use, as Slurm accounted it or the task measured itself."""

    run_id: int
    chunk: int
    attempt: int
    job_id: str | None
    state: str
    elapsed_s: float | None = None
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    req_mem_mb: float | None = None
    source: str = "slurm"  # "slurm" (sacct) or "task" (the worker's own getrusage)


@dataclass(frozen=True, kw_only=True)
class KeySeconds:
    p50: float
    p95: float
    max: float

    def to_json(self) -> dict[str, float]:
        return {"p50": round(self.p50, 3), "p95": round(self.p95, 3), "max": round(self.max, 3)}


@dataclass(frozen=True, kw_only=True)
class History:
    """What earlier runs of one table measured (the table is the unit, not a restriction)."""

    table: str
    runs: tuple[int, ...] = ()
    key_seconds: tuple[float, ...] = ()  # successful make() calls, newest first
    failed_keys: int = 0
    tasks: tuple[TaskUsage, ...] = ()

    @property
    def measured(self) -> int:
        return len(self.key_seconds)

    @property
    def enough(self) -> bool:
        return self.measured >= MIN_KEYS

    @property
    def seconds(self) -> KeySeconds | None:
        return percentiles(self.key_seconds)

    @property
    def max_rss_mb(self) -> float | None:
        return max((t.max_rss_mb for t in self.tasks if t.max_rss_mb), default=None)

    def to_json(self) -> dict[str, Any]:
        seconds = self.seconds
        peaks = [t for t in self.tasks if t.max_rss_mb]
        return {
            "table": self.table, "runs": list(self.runs), "keys_measured": self.measured,
            "keys_failed": self.failed_keys,
            "key_seconds": seconds.to_json() if seconds else None,
            "max_rss_mb": _round(self.max_rss_mb), "tasks": len(self.tasks),
            "task_rss_mb": _spread([t.max_rss_mb for t in peaks]),
            "task_elapsed_s": _spread([t.elapsed_s for t in self.tasks if t.elapsed_s]),
            "task_cpu_s": _spread([t.cpu_s for t in self.tasks if t.cpu_s is not None]),
            "enough": self.enough,
        }


def percentiles(values: Sequence[float]) -> KeySeconds | None:
    """p50, p95 and max, interpolated between the measured values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return KeySeconds(p50=ordered[0], p95=ordered[0], max=ordered[0])
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return KeySeconds(p50=cuts[49], p95=cuts[94], max=ordered[-1])


def _spread(values: Sequence[float | None]) -> dict[str, float] | None:
    known = [v for v in values if v is not None]
    seconds = percentiles(known)
    return {k: round(v, 1) for k, v in seconds.to_json().items()} if seconds else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True, kw_only=True)
class Sizing:
    """Where a run's memory, time and chunk size came from (the dry run and --json say)."""

    source: str  # "history" | "profile" | "flags"
    runs: tuple[int, ...] = ()
    key_seconds: KeySeconds | None = None
    max_rss_mb: float | None = None
    origin: dict[str, str] = field(default_factory=dict)  # mem/time/chunk_size -> source
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "runs": list(self.runs),
                "key_seconds": self.key_seconds.to_json() if self.key_seconds else None,
                "max_rss_mb": _round(self.max_rss_mb), "from": self.origin,
                "note": self.note or None}

    def describe(self) -> str:
        if self.source != "history":
            return self.note or f"sized from the {self.source}"
        parts = [f"{n} from history" for n, s in self.origin.items() if s == "history"]
        seconds = self.key_seconds
        runs = ", ".join(map(str, self.runs[:5])) + ("…" if len(self.runs) > 5 else "")
        measured = (f"p95 {seconds.p95:.3g}s per key" if seconds else "")
        if self.max_rss_mb:
            measured += f", peak {format_mb(math.ceil(self.max_rss_mb))}"
        return f"{', '.join(parts)} (runs {runs}: {measured.strip(', ')})"


def learned_mem_mb(max_rss_mb: float, cap_mb: float | None = None) -> float:
    """Peak memory x headroom, rounded up to 256M (1G above 4G), never below the floor."""
    want = max(MEM_FLOOR_MB, max_rss_mb * MEM_HEADROOM)
    unit = 256.0 if want <= 4096 else 1024.0
    mem = math.ceil(want / unit) * unit
    return min(mem, cap_mb) if cap_mb else mem


def learned_time_s(chunk_keys: int, p95_s: float, cap_s: float | None) -> float:
    """The walltime for `chunk_keys` keys at the p95 duration, with margin, in whole minutes."""
    seconds = math.ceil((chunk_keys * p95_s * TIME_MARGIN + TASK_OVERHEAD_S) / 60) * 60
    return min(seconds, cap_s) if cap_s else seconds


def keys_per_task(target_s: float, p95_s: float, time_s: float | None = None) -> int:
    """Keys in a chunk so that a task runs about `target_s` (or fits `time_s`) at the p95."""
    budget = target_s if time_s is None else (time_s - TASK_OVERHEAD_S) / TIME_MARGIN
    if p95_s <= 0:
        return MAX_CHUNK
    return max(1, min(MAX_CHUNK, int(budget // p95_s)))


def size(history: History | None, res: Resources, *, given: Sequence[str], n_keys: int,
         target_task_s: float, max_time_s: float | None, max_mem_mb: float | None,
         chunk_size: int | None, tasks: int | None) -> tuple[Resources, int | None, Sizing]:
    """The resources and chunk size of a run, from history where the user gave nothing.

    `given`: the settings the user set for this run (flags, environment, project
    file); those are kept. Returns the resources, the keys per chunk (None: the
    plan's default) and where each came from.
    """
    flags = {"mem", "time"} & set(given)
    chunking_given = bool(chunk_size or tasks)
    if history is None or not history.enough:
        source = "flags" if flags == {"mem", "time"} and chunking_given else "profile"
        note = ("" if history is None or not history.measured else
                f"history has {history.measured} measured keys of the {MIN_KEYS} it needs; "
                "sized from the settings")
        return res, None, Sizing(source=source, runs=history.runs if history else (),
                                 key_seconds=history.seconds if history else None,
                                 max_rss_mb=history.max_rss_mb if history else None, note=note)
    seconds = history.seconds
    assert seconds is not None  # enough keys were measured
    origin: dict[str, str] = {}
    mem = res.mem_mb
    if "mem" in flags:
        origin["mem"] = "flags"
    elif history.max_rss_mb:
        mem, origin["mem"] = learned_mem_mb(history.max_rss_mb, max_mem_mb), "history"
    else:
        origin["mem"] = "profile"
    if chunking_given:
        per_task = chunk_size or math.ceil(n_keys / max(1, tasks or 1))
        origin["chunk_size"] = "flags"
    else:
        given_time = res.time_s if "time" in flags else None
        per_task = keys_per_task(target_task_s, seconds.p95, given_time)
        origin["chunk_size"] = "history"
    time_s = res.time_s
    if "time" in flags:
        origin["time"] = "flags"
    else:
        time_s, origin["time"] = learned_time_s(per_task, seconds.p95, max_time_s), "history"
    learned = "history" in origin.values()
    sizing = Sizing(source="history" if learned else "flags", runs=history.runs,
                    key_seconds=seconds, max_rss_mb=history.max_rss_mb, origin=origin)
    chunk = None if origin["chunk_size"] == "flags" else per_task
    return replace(res, mem_mb=mem, time_s=time_s), chunk, sizing


CONTINUED = "continued"  # an attempt for keys handed back, with the same resources


@dataclass(frozen=True, kw_only=True)
class Escalation:
    """One attempt a run added by itself: more memory or time after Slurm stopped its
    tasks, or a continuation of keys its tasks handed back."""

    attempt: int  # the attempt that ran with more
    reason: str  # "out_of_memory" | "timeout" | CONTINUED
    chunks: tuple[int, ...]
    before: str
    after: str

    def describe(self) -> str:
        chunks = ", ".join(map(str, self.chunks[:6])) + ("…" if len(self.chunks) > 6 else "")
        label = "chunk" if len(self.chunks) == 1 else "chunks"
        if self.reason == CONTINUED:
            return f"{label} {chunks}: keys handed back, continued (attempt {self.attempt})"
        what = "out of memory" if self.reason == "out_of_memory" else "out of time"
        return f"{label} {chunks}: {what} at {self.before} → {self.after} (attempt {self.attempt})"

    def to_json(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "reason": self.reason, "chunks": list(self.chunks),
                "before": self.before, "after": self.after}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Escalation:
        return cls(**{**data, "chunks": tuple(data["chunks"])})


def escalate(res: Resources, reason: str, *, max_mem_mb: float | None,
             max_time_s: float | None) -> Resources | None:
    """Twice the memory (out of memory) or the time (time-out), up to the caps; None at a cap."""
    if reason == "out_of_memory":
        mem = res.mem_mb * MAX_ESCALATION_FACTOR
        mem = min(mem, max_mem_mb) if max_mem_mb else mem
        return replace(res, mem_mb=mem) if mem > res.mem_mb else None
    time_s = res.time_s * MAX_ESCALATION_FACTOR
    time_s = min(time_s, max_time_s) if max_time_s else time_s
    return replace(res, time_s=time_s) if time_s > res.time_s else None
