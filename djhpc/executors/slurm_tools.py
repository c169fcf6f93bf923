"""Every call to Slurm's client tools, and the pure parsers for what they print.

The parsers (`parse_*`, `task_state`, `expand_array_ids`) take text and never
start a process, so they are tested against pasted Slurm output. The callers
(`sacct`, `squeue`, `query`, `scancel`, `show_config`) make one `call` each.
Submission itself is submitit's job; this module only watches and cancels.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from djhpc import backoff
from djhpc.allocation import billing_units
from djhpc.states import TaskState

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class SlurmError(Exception):
    """A Slurm command could not run or failed; `str()` is one line ending in what to do."""

    def __init__(
        self,
        message: str,
        *,
        command: Iterable[str] = (),
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.command = list(command)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def detail(self) -> str:
        def block(text: str) -> str:
            return "\n".join("    " + line for line in text.rstrip().splitlines()) or "    (empty)"

        return (
            f"command: {shlex.join(self.command)}\n"
            f"exit code: {'none (did not finish)' if self.returncode is None else self.returncode}\n"
            f"stdout:\n{block(self.stdout)}\n"
            f"stderr:\n{block(self.stderr)}"
        )


def _short(cmd: list[str], limit: int = 120) -> str:
    # A status query may carry thousands of ids; the one-line message stays readable.
    text = shlex.join(cmd)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(out: str | bytes | None) -> str:
    # TimeoutExpired carries bytes (or None) even when the run was text=True.
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


class TransientSlurmError(SlurmError, backoff.Transient):
    """The controller was busy or unreachable: the same command may work later."""


def call(
    cmd: list[str], *, timeout: float = 60.0, check: bool = True,
    pauses: Sequence[float] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one Slurm client command, again after a pause while the controller is busy."""
    return backoff.retrying(lambda: _run_once(cmd, timeout=timeout, check=check), cmd[0],
                            lambda error: isinstance(error, TransientSlurmError), pauses)


def _run_once(
    cmd: list[str], *, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run one Slurm client command; the only place this package starts one."""
    name = cmd[0]
    env = dict(os.environ)
    # Pending array ranges ("123_[4-900%2]") are cut at 64 bytes by default and
    # could not be expanded; 0 means "print all". A user's own value wins.
    env.setdefault("SLURM_BITSTR_LEN", "0")
    log.debug("running %s", shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise SlurmError(
            f"{name} not found on PATH. Install Slurm's client tools or use --executor local",
            command=cmd,
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(
            f"{name} gave no answer within {timeout:g} s. Slurm's controller may be down or "
            "overloaded: check it with `sinfo` and retry",
            command=cmd,
            stdout=_text(exc.stdout),
            stderr=_text(exc.stderr),
        ) from exc
    except OSError as exc:
        raise SlurmError(
            f"could not start {name}: {exc}. Check the Slurm client installation", command=cmd
        ) from exc
    if proc.returncode != 0 and backoff.is_transient(proc.stderr):
        error = _failed(proc)
        raise TransientSlurmError(str(error), command=error.command, returncode=proc.returncode,
                                  stdout=proc.stdout, stderr=proc.stderr)
    if check and proc.returncode != 0:
        raise _failed(proc)
    return proc


def _failed(proc: subprocess.CompletedProcess[str]) -> SlurmError:
    cmd = [str(a) for a in proc.args]
    first = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), "no error output")
    return SlurmError(
        f"{_short(cmd)} failed with exit code {proc.returncode}: {first.rstrip('.')}. "
        "Check that Slurm is up (`sinfo`) and the job ids exist, then retry",
        command=cmd,
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
    )


def available() -> bool:
    return shutil.which("sbatch") is not None


# The one map from Slurm's job states to ours, long and short forms: squeue(1)
# and sacct(1), section "JOB STATE CODES" (https://slurm.schedmd.com/squeue.html).
# Where Slurm's state has no exact twin, the row says which way we lean and why.
_S = TaskState
_SLURM_STATES: dict[str, TaskState] = {
    **dict.fromkeys(["PENDING", "PD"], _S.PENDING),
    # Allocated but nodes still booting: the task's code has not started.
    **dict.fromkeys(["CONFIGURING", "CF"], _S.PENDING),
    # Held after its reservation was deleted: never started.
    **dict.fromkeys(["RESV_DEL_HOLD", "RD"], _S.PENDING),
    **dict.fromkeys(["RUNNING", "R"], _S.RUNNING),
    # Transient phases of a job that still holds its allocation.
    **dict.fromkeys(["COMPLETING", "CG", "SIGNALING", "SI", "STAGE_OUT", "SO"], _S.RUNNING),
    **dict.fromkeys(["RESIZING", "RS"], _S.RUNNING),
    **dict.fromkeys(["REQUEUED", "RQ", "REQUEUE_HOLD", "RH", "REQUEUE_FED", "RF"], _S.REQUEUED),
    # STOPPED (SIGSTOP, CPUs kept) is a suspension for our purposes.
    **dict.fromkeys(["SUSPENDED", "S", "STOPPED", "ST"], _S.SUSPENDED),
    **dict.fromkeys(["COMPLETED", "CD"], _S.COMPLETED),
    # SPECIAL_EXIT: an epilog flagged the exit value and held the job; nothing
    # runs again unless someone releases it, so waiting on it would never end.
    **dict.fromkeys(["FAILED", "F", "SPECIAL_EXIT", "SE"], _S.FAILED),
    # "CANCELLED by <uid>" is normalised to CANCELLED by task_state. REVOKED: a
    # federated sibling dropped because another cluster runs the job.
    **dict.fromkeys(["CANCELLED", "CA", "REVOKED", "RV"], _S.CANCELLED),
    # DEADLINE: killed (or never started) because --deadline passed; like a timeout.
    **dict.fromkeys(["TIMEOUT", "TO", "DEADLINE", "DL"], _S.TIMEOUT),
    **dict.fromkeys(["OUT_OF_MEMORY", "OOM"], _S.OUT_OF_MEMORY),
    # BOOT_FAIL is the node failing before the job started: same remedy as NODE_FAIL.
    **dict.fromkeys(["NODE_FAIL", "NF", "BOOT_FAIL", "BF"], _S.NODE_FAIL),
    **dict.fromkeys(["PREEMPTED", "PR"], _S.PREEMPTED),
}
_unknown_seen: set[str] = set()


def task_state(slurm_state: str) -> TaskState:
    """Map a Slurm state ("RUNNING", "R", "CANCELLED by 0", "TIMEOUT+") to a TaskState."""
    words = slurm_state.strip().split()
    # sacct appends "by <uid>" to CANCELLED, and "+" when a column is truncated.
    code = words[0].rstrip("+").upper() if words else ""
    state = _SLURM_STATES.get(code, TaskState.UNKNOWN)
    if state is TaskState.UNKNOWN and code not in _unknown_seen:
        _unknown_seen.add(code)  # warn once per code: status polls repeat every few seconds
        log.warning("unknown Slurm job state %r, treated as unknown", slurm_state)
    return state


@dataclass(frozen=True)
class TaskInfo:
    job_id: str  # "123_4" for array tasks, "123" otherwise
    state: TaskState
    raw_state: str
    exit_code: str | None = None  # "exit:signal", e.g. "0:15"
    node: str | None = None
    elapsed_s: float | None = None
    cpus: int | None = None
    total_cpu_s: float | None = None  # user+system CPU actually used
    cpu_time_s: float | None = None  # elapsed x allocated CPUs (what was reserved)
    max_rss_mb: float | None = None  # max over the task's steps
    req_mem_mb: float | None = None
    timelimit_s: float | None = None
    start: str | None = None
    end: str | None = None
    billing: float | None = None  # billing units (sacct AllocTRES billing=)
    reason: str | None = None  # why a pending task waits (squeue %r)


_ARRAY = re.compile(r"(?P<base>\d+)_\[(?P<spec>[^\]]*)\]")
_RANGE = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


def expand_array_ids(job_id: str) -> list[str]:
    """Expand a not-yet-split array row ("123_[1,3-5%2]") to task ids; other ids pass through."""
    m = _ARRAY.fullmatch(job_id.strip())
    if m is None:
        if "[" in job_id or "]" in job_id:
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        return [job_id.strip()]
    spec = m["spec"].split("%", 1)[0]  # "%2" is the concurrency limit, not an index
    ids: list[str] = []
    for part in spec.split(","):
        r = _RANGE.fullmatch(part.strip())
        if r is None:
            raise ValueError(f"bad array index list in {job_id!r}")
        first, last, step = int(r[1]), int(r[2] or r[1]), int(r[3] or 1)
        if last < first or step < 1:
            raise ValueError(f"bad array index range {part!r} in {job_id!r}")
        ids.extend(f"{m['base']}_{i}" for i in range(first, last + 1, step))
    return ids


_DURATION_PART = re.compile(r"\d+")
_SECONDS_PART = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str) -> float:
    """Seconds in a Slurm time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (S may have a fraction)."""
    s = text.strip()
    days_text, dash, clock = s.rpartition("-")
    if dash and not _DURATION_PART.fullmatch(days_text):
        raise ValueError(f"not a Slurm duration: {text!r}")
    parts = clock.split(":")
    if not 1 <= len(parts) <= 3 or not all(_SECONDS_PART.fullmatch(p) for p in parts):
        raise ValueError(f"not a Slurm duration: {text!r}")
    # Only the seconds field may carry a fraction (sacct's TotalCPU "MM:SS.mmm").
    seconds_last = len(parts) == 3 or (len(parts) == 2 and not dash)
    if any("." in p for p in (parts if not seconds_last else parts[:-1])):
        raise ValueError(f"not a Slurm duration: {text!r}")
    if dash:  # D-H, D-H:M, D-H:M:S
        h, mi, sec = (float(p) for p in [*parts, "0", "0"][:3])
    elif len(parts) == 1:  # a bare number is minutes, as in --time=90
        h, mi, sec = 0.0, float(parts[0]), 0.0
    else:
        h, mi, sec = (float(p) for p in ["0", *parts][-3:])
    return (int(days_text or 0) * 24 + h) * 3600 + mi * 60 + sec


_MEMORY = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)([NC]?)", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1.0, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_memory_mb(text: str) -> float:
    """MiB in a Slurm memory size: "4000", "4G", "512K", ReqMem's "4Gn"/"4Gc" (suffix dropped)."""
    # Slurm's units are binary and a bare number means megabytes (as in --mem).
    m = _MEMORY.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a Slurm memory size: {text!r}")
    return float(m[1]) * _MB_PER_UNIT[m[2].upper()]


def _maybe(parse: Callable[[str], _T], text: str) -> _T | None:
    # Slurm fills unknown values with "", "Unknown", "UNLIMITED", "INVALID"...:
    # a value we cannot read is simply absent, never an error.
    try:
        return parse(text)
    except ValueError:
        return None


def _field(text: str) -> str | None:
    text = text.strip()
    return None if text in {"", "Unknown", "None", "None assigned", "N/A", "(null)"} else text


# Raw (seconds / minutes) columns where sacct has them: no time format to guess.
SACCT_FORMAT = (
    "JobID,State,ExitCode,NodeList,ElapsedRaw,AllocCPUS,TotalCPU,CPUTimeRAW,MaxRSS,ReqMem,"
    "TimelimitRaw,Start,End,AllocTRES"
)
SACCT_FIELDS = tuple(SACCT_FORMAT.split(","))


def _rows(text: str, fields: tuple[str, ...], source: str,
          optional: int = 0) -> Iterable[dict[str, str]]:
    # `optional`: trailing fields added later (AllocTRES, Reason) that output
    # captured with the older format lacks; they read as empty.
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        values = line.split("|")
        if len(fields) - optional <= len(values) < len(fields):
            values += [""] * (len(fields) - len(values))
        if len(values) != len(fields):
            log.warning(
                "skipping %s line %d: %d fields, expected %d: %r",
                source,
                number,
                len(values),
                len(fields),
                line,
            )
            continue
        yield dict(zip(fields, values, strict=True))


def _expanded(job_id: str, info: TaskInfo, source: str) -> dict[str, TaskInfo]:
    try:
        ids = expand_array_ids(job_id)
    except ValueError as exc:
        log.warning("skipping %s row: %s", source, exc)
        return {}
    return {task_id: dataclasses.replace(info, job_id=task_id) for task_id in ids}


def _sacct_task(row: dict[str, str]) -> TaskInfo:
    cpus = _maybe(int, row["AllocCPUS"])
    req_mem = _maybe(parse_memory_mb, row["ReqMem"])
    # Before Slurm 21.08 ReqMem could be per CPU ("2000Mc"); report the task's total.
    if req_mem is not None and cpus and row["ReqMem"].strip().lower().endswith("c"):
        req_mem *= cpus
    elapsed, cpu_time = _maybe(int, row["ElapsedRaw"]), _maybe(int, row["CPUTimeRAW"])
    limit_min = _maybe(int, row["TimelimitRaw"])  # minutes; "UNLIMITED" etc. -> None
    return TaskInfo(
        job_id=row["JobID"],
        state=task_state(row["State"]),
        raw_state=row["State"].strip(),
        exit_code=_field(row["ExitCode"]),
        node=_field(row["NodeList"]),
        elapsed_s=None if elapsed is None else float(elapsed),
        cpus=cpus,
        total_cpu_s=_maybe(parse_duration, row["TotalCPU"]),
        cpu_time_s=None if cpu_time is None else float(cpu_time),
        max_rss_mb=_maybe(parse_memory_mb, row["MaxRSS"]),
        req_mem_mb=req_mem,
        timelimit_s=None if limit_min is None else limit_min * 60.0,
        start=_field(row["Start"]),
        end=_field(row["End"]),
        billing=billing_units(row["AllocTRES"]),
    )


def parse_sacct(text: str) -> dict[str, TaskInfo]:
    """Tasks in `sacct -P -n --format=SACCT_FORMAT` output, step rows merged into their task."""
    tasks: dict[str, TaskInfo] = {}
    steps: list[tuple[str, str, dict[str, str]]] = []
    for row in _rows(text, SACCT_FIELDS, "sacct", optional=1):
        task_id, _, step = row["JobID"].strip().partition(".")
        if step:
            steps.append((task_id, step, row))  # merged below: steps may precede their task
        else:
            tasks.update(_expanded(task_id, _sacct_task(row), "sacct"))
    for task_id, step, row in steps:
        info = tasks.get(task_id)
        if info is None:
            continue
        # MaxRSS is only measured per step (.batch, .extern, .0 ...); the task's
        # peak is the largest of them.
        rss = _maybe(parse_memory_mb, row["MaxRSS"])
        if rss is not None and (info.max_rss_mb is None or rss > info.max_rss_mb):
            info = dataclasses.replace(info, max_rss_mb=rss)
        if step == "batch" and info.total_cpu_s is None:
            info = dataclasses.replace(info, total_cpu_s=_maybe(parse_duration, row["TotalCPU"]))
        # The kernel killed a step for memory (cgroups): the task ran out of memory,
        # even when sacct calls the task itself FAILED (its batch script exited non-zero).
        if (info.state in (TaskState.FAILED, TaskState.CANCELLED)
                and task_state(row["State"]) == TaskState.OUT_OF_MEMORY):
            info = dataclasses.replace(info, state=TaskState.OUT_OF_MEMORY,
                                       raw_state=f"{info.raw_state} (step {step} OUT_OF_MEMORY)")
        tasks[task_id] = info
    return tasks


SQUEUE_FIELDS = ("JobID", "State", "NodeList", "Time", "TimeLimit", "CPUs", "MinMemory", "Start",
                 "Reason")
SQUEUE_FORMAT = "%i|%T|%N|%M|%l|%C|%m|%S|%r"


def parse_squeue(text: str) -> dict[str, TaskInfo]:
    """Tasks in `squeue -h -o SQUEUE_FORMAT` output; grouped pending arrays are expanded.

    `req_mem_mb` is what squeue's %m prints: MinMemoryCPU (per CPU) for jobs that
    asked for memory per CPU, per node otherwise. `query` replaces it with sacct's total.
    """
    tasks: dict[str, TaskInfo] = {}
    for row in _rows(text, SQUEUE_FIELDS, "squeue", optional=1):
        info = TaskInfo(
            job_id=row["JobID"].strip(),
            state=task_state(row["State"]),
            raw_state=row["State"].strip(),
            node=_field(row["NodeList"]),
            elapsed_s=_maybe(parse_duration, row["Time"]),
            cpus=_maybe(int, row["CPUs"]),
            req_mem_mb=_maybe(parse_memory_mb, row["MinMemory"]),
            timelimit_s=_maybe(parse_duration, row["TimeLimit"]),
            start=_field(row["Start"]),
            reason=_field(row["Reason"]),
        )
        tasks.update(_expanded(info.job_id, info, "squeue"))
    return tasks


def _id_list(job_ids: Iterable[str]) -> str:
    # A bare "123" is an Iterable[str] too; iterating it would query jobs 1, 2 and 3.
    ids = [job_ids] if isinstance(job_ids, str) else job_ids
    return ",".join(dict.fromkeys(i.strip() for i in ids if i.strip()))


def sacct(job_ids: Iterable[str]) -> dict[str, TaskInfo]:
    """Accounting records of these jobs (all their array tasks), in one sacct call."""
    ids = _id_list(job_ids)
    if not ids:
        return {}
    # With --jobs sacct searches from the epoch, not just today (sacct(1) DEFAULT TIME WINDOW).
    proc = call(["sacct", f"--jobs={ids}", "-P", "-n", f"--format={SACCT_FORMAT}"], check=False,
               pauses=backoff.query_delays())
    if proc.returncode != 0:
        if "accounting storage is disabled" in proc.stderr.lower():
            log.warning("Slurm accounting is disabled: finished tasks are only seen via squeue")
            return {}
        raise _failed(proc)
    return parse_sacct(proc.stdout)


def squeue(job_ids: Iterable[str]) -> dict[str, TaskInfo]:
    """Live queue entries of these jobs, one line per array task, in one squeue call."""
    ids = _id_list(job_ids)
    if not ids:
        return {}
    # --jobs=, not "-j 1,2": squeue's -j takes an optional argument (squeue(1)).
    proc = call(["squeue", "-h", "-r", f"--jobs={ids}", "-o", SQUEUE_FORMAT], check=False,
               pauses=backoff.query_delays())
    if proc.returncode != 0:
        # Exit 1 with this message when none of the ids is in the queue any more.
        if "invalid job id" in proc.stderr.lower():
            return {}
        raise _failed(proc)
    return parse_squeue(proc.stdout)


def query(job_ids: Iterable[str]) -> dict[str, TaskInfo]:
    """Current state of every task of these jobs: squeue while live, sacct once final."""
    ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
    live, accounted = squeue(ids), sacct(ids)
    merged = dict(accounted)
    for task_id, info in live.items():
        # squeue lists only pending and running tasks, and sacct lags: for a
        # requeued task it still shows the old run's final state. So squeue wins
        # whenever it lists a task, except a running one sacct already saw end
        # (it is completing). squeue alone also covers clusters without accounting.
        done = accounted.get(task_id)
        if done is None:
            merged[task_id] = info
        elif not (done.state.final and info.state is TaskState.RUNNING):
            # squeue's %m is per CPU for --mem-per-cpu jobs; sacct's ReqMem is the total.
            merged[task_id] = dataclasses.replace(info, req_mem_mb=done.req_mem_mb,
                                                  billing=done.billing)
    return merged


def scancel(job_ids: Iterable[str]) -> None:
    """Cancel these jobs or array tasks in one scancel call."""
    ids = _id_list(job_ids).split(",")
    if ids == [""]:
        return
    # -Q: a task that already ended is not an error for "cancel everything left".
    call(["scancel", "-Q", *ids])


def cancel_pending(job_ids: Iterable[str]) -> None:
    """Cancel the tasks of these jobs (arrays) that have not started, in one scancel call."""
    ids = _id_list(job_ids).split(",")
    if ids != [""]:
        call(["scancel", "-Q", "--state=PENDING", *ids])


def parse_config(text: str) -> dict[str, str]:
    """The `Key = Value` lines of `scontrol show config`; the first occurrence of a key wins."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        key = key.strip()
        # Headers ("Configuration data as of ...") and status lines have no "=";
        # later plugin sections repeat a few keys, the main slurm.conf comes first.
        if eq and key and " " not in key:
            config.setdefault(key, value.strip())
    return config


def show_config() -> dict[str, str]:
    return parse_config(call(["scontrol", "show", "config"]).stdout)


def max_array_size(config: Mapping[str, str]) -> int | None:
    """Most tasks one array may hold when indexes start at 0; None if the config doesn't say.

    Slurm requires every index to be < MaxArraySize, so indexes 0..n-1 allow
    n = MaxArraySize tasks (0 disables arrays). SchedulerParameters'
    max_array_tasks=N caps the task count further; the smaller limit applies.
    """
    limits = [_maybe(int, config.get("MaxArraySize", ""))]
    for item in config.get("SchedulerParameters", "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "max_array_tasks":
            limits.append(_maybe(int, value))
    known = [n for n in limits if n is not None]
    return min(known) if known else None


# --- inside a task ----------------------------------------------------------------


def current_task_id() -> str | None:
    """This task's id as djhpc records it: "123_4" for an array task, else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def current_time_left() -> float | None:
    """Seconds this task has left before its time limit; None outside Slurm or unlimited.

    Slurm 23.02 and later put the end in the task's environment; older ones are asked
    once with squeue.
    """
    job = current_task_id()
    if not job:
        return None
    end = os.environ.get("SLURM_JOB_END_TIME", "")
    if end.isdigit():
        return float(end) - time.time()
    left = call(["squeue", "-h", "-j", job, "-o", "%L"]).stdout.strip()
    try:
        return parse_duration(left)
    except ValueError:  # "UNLIMITED", "NOT_SET", or the task is not listed
        return None


def requeue_current_task() -> bool:
    """Ask Slurm to run this task again; False outside a Slurm job.

    By the task's own id ("123_4"): in an array, one task's raw job id equals
    the array's id, and `scontrol requeue 123` would requeue every task of it.
    """
    job = current_task_id()
    if not job:
        return False
    call(["scontrol", "requeue", job])
    return True
# --- why a task waits ---------------------------------------------------------------

# squeue(1) "JOB REASON CODES" (https://slurm.schedmd.com/job_reason_codes.html), in
# words, with what to do. A reason that can never clear says so.
_NEVER = "it will never start: cancel the run and submit it with "
PENDING_REASONS: dict[str, str] = {
    "Resources": "waiting for free CPUs, memory or nodes; it starts when running jobs end",
    "Priority": "jobs of higher priority come first; it starts in its turn",
    "PartitionConfig": _NEVER + "resources the partition allows (--cpus, --mem, --gpus, "
                       "--time; see scontrol show partition)",
    "PartitionTimeLimit": _NEVER + "a --time within the partition's MaxTime",
    "PartitionNodeLimit": _NEVER + "fewer nodes or another --partition",
    "PartitionDown": "the partition is down; it starts when the admins bring it back",
    "PartitionInactive": "the partition is inactive; ask the admins or use another --partition",
    "AssocGrpBillingMinutes": "the account's quota (billing minutes) is spent: ask for more "
                              "(on Sigma2 the cost command shows it) or use another --account",
    "AssocGrpCPUMinutesLimit": "the account's CPU-minutes quota is spent: ask for more or use "
                               "another --account",
    "AssocGrpBilling": "the account uses all the billing units it may run at once; it starts "
                       "when its other jobs end",
    "AssocGrpCpuLimit": "the account uses all the CPUs it may run at once; it starts when its "
                        "other jobs end",
    "AssocMaxJobsLimit": "you run as many jobs as your account allows; it starts when one ends",
    "AssocGrpJobsLimit": "the account runs as many jobs as it may; it starts when one ends",
    "AssocMaxWallDurationPerJobLimit": _NEVER + "a shorter --time (the account's limit)",
    "QOSMaxJobsPerUserLimit": "you run as many jobs as the QOS allows; it starts when one of "
                              "yours ends (--max-parallel keeps a run below it)",
    "QOSMaxSubmitJobPerUserLimit": "you have as many jobs queued as the QOS allows",
    "QOSMaxWallDurationPerJobLimit": _NEVER + "a shorter --time (the QOS's limit)",
    "QOSMaxCpuPerUserLimit": "you use all the CPUs the QOS allows; it starts when your other "
                             "jobs end",
    "QOSGrpCpuLimit": "the QOS's CPUs are all in use; it starts when others' jobs end",
    "QOSMaxMemoryPerJob": _NEVER + "less --mem (the QOS's limit)",
    "QOSMaxCpuPerJobLimit": _NEVER + "fewer --cpus (the QOS's limit)",
    "JobArrayTaskLimit": "the run's --max-parallel limit: it starts when its own tasks end",
    "Dependency": "waits for the run's previous array (arrays are chained under "
                  "--max-parallel)",
    "DependencyNeverSatisfied": _NEVER + "nothing to wait for: djhpc retry starts it afresh",
    "BeginTime": "its start time has not come yet",
    "JobHeldUser": "held by you: scontrol release <job> lets it start",
    "JobHeldAdmin": "held by an administrator: ask them",
    "ReqNodeNotAvail": "a node it needs is down, drained or reserved (maintenance?); it starts "
                       "when the node returns",
    "Reservation": "waits for its advanced reservation",
    "InvalidAccount": _NEVER + "a valid --account",
    "InvalidQOS": _NEVER + "a valid --qos",
    "BadConstraints": _NEVER + "constraints that some node meets",
    "NodeDown": "a node it needs is down; it starts when the node returns",
    "launch failed requeued held": "its launch failed and Slurm held it: scontrol release "
                                   "<job>, or cancel the run and djhpc retry",
}
_REASON_FAMILIES = (
    ("AssocGrp", "a group limit of your account is reached; it starts when its other jobs end "
                 "or the quota grows"),
    ("AssocMax", "a limit of your account is reached; check sacctmgr show assoc"),
    ("QOSGrp", "a group limit of the QOS is reached; it starts when others' jobs end"),
    ("QOSMax", "a limit of the QOS is reached; check sacctmgr show qos"),
)


def pending_reason_text(reason: str | None) -> str | None:
    """squeue's reason code in words, with what to do; None for no reason or an unknown one."""
    if reason is None:
        return None
    code = reason.strip().strip("()")
    if code in ("", "None"):
        return None
    if code in PENDING_REASONS:
        return PENDING_REASONS[code]
    for prefix, text in _REASON_FAMILIES:
        if code.startswith(prefix):
            return text
    return None


# --- partitions --------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """One partition's limits, as `scontrol show partition` prints them (None: no limit)."""

    name: str
    default: bool = False
    state: str | None = None
    max_time_s: float | None = None
    max_cpus_per_node: int | None = None
    max_mem_per_node_mb: float | None = None
    max_mem_per_cpu_mb: float | None = None
    total_cpus: int | None = None
    total_nodes: int | None = None
    nodes: str | None = None
    tres: str | None = None
    billing_weights: str | None = None  # TRESBillingWeights, raw ("CPU=1.0,Mem=0.2577G")
    # The largest node's, from `scontrol show node` (None when not known).
    node_cpus: int | None = None
    node_mem_mb: float | None = None
    node_gpus: int | None = None

    @property
    def gpus(self) -> int | None:
        """GPUs in the whole partition, from its TRES (gres/gpu=N); None if it names none."""
        for item in (self.tres or "").split(","):
            key, _, value = item.partition("=")
            if key.strip().lower() == "gres/gpu":
                return _maybe(int, value)
        return None


_LIMITLESS = {"UNLIMITED", "INFINITE", "NONE", "N/A", "(null)", ""}


def _limit(parse: Callable[[str], _T], text: str | None) -> _T | None:
    if text is None or text.strip().upper() in _LIMITLESS:
        return None
    return _maybe(parse, text)


def _records(text: str, first: str) -> Iterable[dict[str, str]]:
    """`Key=Value` records of `scontrol show ... [-o]`, each starting at `first`=."""
    record: dict[str, str] | None = None
    for token in text.split():
        key, eq, value = token.partition("=")
        if not eq:
            continue  # a value's continuation after a space (e.g. OS=Linux 6.1 #1 SMP)
        if key == first:
            if record is not None:
                yield record
            record = {}
        if record is not None:
            record.setdefault(key, value)
    if record is not None:
        yield record


def parse_partitions(text: str) -> dict[str, Partition]:
    """Partitions in `scontrol show partition [-o]` output, by name."""
    found: dict[str, Partition] = {}
    for r in _records(text, "PartitionName"):
        name = r["PartitionName"]
        found[name] = Partition(
            name=name,
            default=r.get("Default", "NO").upper() == "YES",
            state=_field(r.get("State", "")),
            max_time_s=_limit(parse_duration, r.get("MaxTime")),
            max_cpus_per_node=_limit(int, r.get("MaxCPUsPerNode")),
            max_mem_per_node_mb=_limit(parse_memory_mb, r.get("MaxMemPerNode")),
            max_mem_per_cpu_mb=_limit(parse_memory_mb, r.get("MaxMemPerCPU")),
            total_cpus=_limit(int, r.get("TotalCPUs")),
            total_nodes=_limit(int, r.get("TotalNodes")),
            nodes=_field(r.get("Nodes", "")),
            tres=_field(r.get("TRES", "")),
            billing_weights=_field(r.get("TRESBillingWeights", "")),
        )
    return found


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int | None
    mem_mb: float | None
    gpus: int
    partitions: tuple[str, ...]


def _gres_gpus(gres: str | None) -> int:
    """GPUs in a node's Gres ("gpu:a100:4(S:0-1),gpu:v100:2", "gpu:2")."""
    total = 0
    for item in (gres or "").split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) > 1:
            total += _maybe(int, parts[-1]) or 0
    return total


def parse_nodes(text: str) -> dict[str, Node]:
    """Nodes in `scontrol show node [-o]` output, by name."""
    found: dict[str, Node] = {}
    for r in _records(text, "NodeName"):
        cpus = _limit(int, r.get("CPUEfctv")) or _limit(int, r.get("CPUTot"))
        found[r["NodeName"]] = Node(
            name=r["NodeName"], cpus=cpus, mem_mb=_limit(parse_memory_mb, r.get("RealMemory")),
            gpus=_gres_gpus(_field(r.get("Gres", ""))),
            partitions=tuple(p for p in r.get("Partitions", "").split(",") if p))
    return found


def with_nodes(partitions: Mapping[str, Partition],
               nodes: Mapping[str, Node]) -> dict[str, Partition]:
    """Each partition with its largest node's CPUs, memory and GPUs."""
    result = {}
    for name, part in partitions.items():
        members = [n for n in nodes.values() if name in n.partitions]
        if not members:
            result[name] = part
            continue
        result[name] = dataclasses.replace(
            part,
            node_cpus=max((n.cpus for n in members if n.cpus is not None), default=None),
            node_mem_mb=max((n.mem_mb for n in members if n.mem_mb is not None), default=None),
            node_gpus=max(n.gpus for n in members))
    return result


def partition(name: str | None) -> Partition | None:
    """One partition's limits (the default one for None); None if the cluster has no such."""
    proc = call(["scontrol", "show", "partition", "-o", *([name] if name else [])], check=False)
    if proc.returncode != 0:
        if "not found" in (proc.stderr + proc.stdout).lower():
            return None
        raise _failed(proc)
    found = parse_partitions(proc.stdout)
    if name:
        return found.get(name)
    return next((p for p in found.values() if p.default), None)


def partitions() -> dict[str, Partition]:
    """The cluster's partitions with their limits and largest nodes (two scontrol calls)."""
    parts = parse_partitions(call(["scontrol", "show", "partition", "-o"]).stdout)
    return with_nodes(parts, parse_nodes(call(["scontrol", "show", "node", "-o"]).stdout))


def resource_problems(part: Partition, *, cpus: int, mem_mb: float, gpus: int,
                      time_s: float) -> list[str]:
    """What a one-node task asks beyond `part`'s limits, each naming the limit."""
    problems = []
    cpu_limit = min((n for n in (part.max_cpus_per_node, part.node_cpus) if n is not None),
                    default=None)
    if cpu_limit is not None and cpus > cpu_limit:
        problems.append(f"{cpus} CPUs per task, but partition {part.name!r} has at most "
                        f"{cpu_limit} per node")
    mem_limit = min((n for n in (part.max_mem_per_node_mb, part.node_mem_mb) if n is not None),
                    default=None)
    if part.max_mem_per_cpu_mb is not None and cpu_limit is not None:
        # Slurm raises a task's CPUs to fit MaxMemPerCPU, up to the node's CPUs.
        per_cpu = part.max_mem_per_cpu_mb * cpu_limit
        mem_limit = per_cpu if mem_limit is None else min(mem_limit, per_cpu)
    if mem_limit is not None and mem_mb > mem_limit:
        problems.append(f"{mem_mb:g} MB of memory per task, but partition {part.name!r} "
                        f"allows at most {mem_limit:g} MB per node")
    if gpus:
        gpu_limit = part.node_gpus if part.node_gpus is not None else part.gpus
        if gpu_limit is not None and gpus > gpu_limit:
            problems.append(f"{gpus} GPUs per task, but partition {part.name!r} has "
                            f"{gpu_limit or 'no'} GPUs per node")
    if part.max_time_s is not None and time_s > part.max_time_s:
        problems.append(f"a time limit of {_clock(time_s)}, but partition {part.name!r}'s "
                        f"MaxTime is {_clock(part.max_time_s)}")
    return problems


def _clock(seconds: float) -> str:
    """D-HH:MM:SS, as Slurm writes a time limit."""
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}-" if days else "") + f"{hours:02d}:{minutes:02d}:{sec:02d}"


def parse_walltime(text: str) -> float:
    """Seconds in a time limit a user gives (--time): parse_duration, with each field in range.

    Slurm itself reads "99:99" as 99 minutes 99 seconds; a user who typed it
    meant something else, so minutes and seconds above 59 (and hours above 23
    after a day count) are refused.
    """
    seconds = parse_duration(text)
    _, dash, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if len(parts) > 1 or dash:
        if any(float(p) >= 60 for p in parts[1:]):
            raise ValueError(f"minutes and seconds above 59 in {text!r}")
        if dash and float(parts[0]) >= 24:
            raise ValueError(f"hours above 23 after a day count in {text!r}")
    return seconds
