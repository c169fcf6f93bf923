"""Being gentle with a busy Slurm controller: retry transient failures, poll sparingly.

A controller under load answers client commands with time-outs or "Resource
temporarily unavailable" (users of other workflow tools report it for sbatch:
snakemake-executor-plugin-slurm #313; for polling: webknossos-libs #1143). Such
a failure is worth another try after a pause; any other failure is final.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# What Slurm's clients print when the controller (or slurmdbd) is busy or
# restarting, lowercase. The command itself was fine: trying again later works.
TRANSIENT = (
    "socket timed out",
    "resource temporarily unavailable",
    "unable to contact slurm controller",
    "slurm_persist_conn_open_without_init",
    "connection refused",
    "slurm controller not responding",
    "slurmdbd: connection",
    "try again",
)

# Pauses between attempts, seconds; DJHPC_SLURM_RETRY_DELAYS ("1,4,15") overrides.
DEFAULT_DELAYS = (2.0, 8.0, 30.0)
# Status queries (squeue, sacct) give up sooner: `status` then shows the ledger's view.
QUERY_DELAYS = (1.0, 4.0)

# `status --watch` and `--wait` ask Slurm no more often than this, seconds.
MIN_SLURM_INTERVAL = 30.0
MAX_SLURM_INTERVAL = 300.0


class Transient(Exception):
    """A failure that may go away if the same command is tried again."""


def is_transient(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in TRANSIENT)


def delays() -> tuple[float, ...]:
    raw = os.environ.get("DJHPC_SLURM_RETRY_DELAYS", "")
    if raw.strip():
        try:
            return tuple(max(0.0, float(p)) for p in raw.split(",") if p.strip())
        except ValueError:
            log.warning("ignoring DJHPC_SLURM_RETRY_DELAYS=%r: not comma-separated seconds", raw)
    return DEFAULT_DELAYS


def query_delays() -> tuple[float, ...]:
    return delays() if os.environ.get("DJHPC_SLURM_RETRY_DELAYS", "").strip() else QUERY_DELAYS


def retrying(call: Callable[[], _T], what: str, transient: Callable[[BaseException], bool],
             pauses: Sequence[float] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> _T:
    """`call()`, tried again after each pause while it fails transiently.

    The last failure is raised as it was, so the caller's error (with the
    command and its stderr) is what the user sees when the retries give up.
    """
    waits = list(delays() if pauses is None else pauses)
    attempt = 0
    while True:
        try:
            return call()
        except Exception as error:
            if attempt >= len(waits) or not transient(error):
                raise
            log.warning("%s failed transiently (%s); trying again in %g s (retry %d of %d)",
                        what, " ".join(str(error).split()), waits[attempt], attempt + 1,
                        len(waits))
            sleep(waits[attempt])
            attempt += 1


def slurm_interval(run_age_s: float, floor: float = MIN_SLURM_INTERVAL) -> float:
    """Seconds between two questions to Slurm about a run that started `run_age_s` ago.

    At least `floor` (30 s); a run of hours is asked about every few minutes
    (a twentieth of its age, at most MAX_SLURM_INTERVAL): its tasks change state
    rarely, and the ledger, read on every refresh, already shows its progress.
    """
    return max(floor, min(MAX_SLURM_INTERVAL, run_age_s / 20))
