"""A run is submitted whole or not at all."""

from __future__ import annotations

from pathlib import Path

from tests.real.conftest import BIN, Project

FAKES = {
    # The first sbatch call succeeds, every later one is rejected.
    "sbatch": """#!/bin/sh
echo "$@" >> "$FAKE_LOG/sbatch.calls"
n=$(wc -l < "$FAKE_LOG/sbatch.calls")
if [ "$n" -eq 1 ]; then echo "Submitted batch job 9001"; exit 0; fi
echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified" >&2
exit 1
""",
    "scancel": """#!/bin/sh
echo "$@" >> "$FAKE_LOG/scancel.calls"
""",
    "scontrol": """#!/bin/sh
echo "MaxArraySize            = 3"
echo "ClusterName             = fake"
""",
}


def _fake_slurm(tmp: Path) -> Path:
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def test_second_array_rejected_cancels_the_first_and_records_nothing(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "4")  # 16 keys
    fake = _fake_slurm(project.tmp)
    env = project.env(PATH=f"{fake}:{BIN}:/usr/bin:/bin", FAKE_LOG=str(project.tmp))
    result = project.djhpc("submit", "MyTable", "-e", "slurm", "--chunk-size", "2", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("Error: sbatch rejected the job (sbatch ")
    assert "Invalid account" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert len((project.tmp / "sbatch.calls").read_text().splitlines()) == 2
    assert (project.tmp / "scancel.calls").read_text().split() == ["-Q", "9001"]
    assert project.ledger_runs() == 0
    assert not list(project.run_dir.glob("*-run-*"))
    # Nothing holds the keys: a new plan sees all of them.
    again = project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")
    assert again["keys"] == 16 and again["held_by_other_runs"] == 0
