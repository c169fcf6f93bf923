"""Ledger records for unit tests, with the defaults a fresh run has."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from djhpc.ledger import ChunkRecord, RunRecord
from djhpc.states import ChunkState, RunPhase

T0 = datetime(2026, 11, 1, 12, 0, 0)


def run(**changes: Any) -> RunRecord:
    base = RunRecord(run_id=7, target="pipeline:MyTable", paths=[], workdir="/work",
                     table_name="`lab`.`my_table`", keys_table="keys_x", key_attrs=["k"],
                     executor="slurm", n_keys=10, attempts=1, state=RunPhase.ACTIVE, created=T0,
                     finished=None, settings={}, run_dir="/runs/7", db_user="me", host="login1")
    return replace(base, **changes)


def chunk(number: int = 0, state: ChunkState = ChunkState.QUEUED, **changes: Any) -> ChunkRecord:
    base = ChunkRecord(run_id=7, chunk=number, attempt=1, lo=number * 5, hi=number * 5 + 5,
                       state=state)
    return replace(base, **changes)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)
