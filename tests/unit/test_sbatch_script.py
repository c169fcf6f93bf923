"""The sbatch script djhpc submits, pinned: a submitit upgrade that changes it is noticed.

The script is rendered through submitit's own (private) renderer, the one its
`submit` uses. If this test fails after an upgrade, read the diff: when the new
script is right, refresh the golden file with

    DJHPC_REFRESH_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_sbatch_script.py
"""

from __future__ import annotations

import os
from pathlib import Path

from djhpc.executors import Launch
from djhpc.executors.slurm import SlurmExecutor
from djhpc.resources import Resources
from tests.unit.records import chunk

GOLDEN = Path(__file__).parent / "data" / "sbatch" / "saga_array.sh"


def test_sbatch_script_matches_the_golden_file() -> None:
    res = Resources(partition="normal", account="nn1234k", time_s=7200, mem_mb=4096, cpus=2,
                    setup=("module load Python/3.11.3-GCCcore-12.3.0",
                           "source ~/venvs/lab/bin/activate"))
    run_dir = "/cluster/home/me/.djhpc/runs/user_me_djhpc-run-12"
    launch = Launch(run_id=12, run_dir=run_dir, workdir="/cluster/home/me/pipeline",
                    chunks=[chunk(i) for i in range(5)], ledger_schema="user_me_djhpc",
                    resources=res, max_parallel=2, max_array_size=4,
                    python="/cluster/home/me/venvs/lab/bin/python")
    script = SlurmExecutor().preview(launch)
    if os.environ.get("DJHPC_REFRESH_GOLDEN"):
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text(), (
        "The sbatch script changed (see this file's docstring to refresh the golden file)")
