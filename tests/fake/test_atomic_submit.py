"""A run is submitted whole or not at all."""

from __future__ import annotations

from tests.fake.conftest import FakeSlurm
from tests.real.conftest import Project


def test_second_array_rejected_cancels_the_first_and_records_nothing(
        project: Project, fake_slurm: FakeSlurm) -> None:
    project.make_data("--sessions", "1", "--units", "4")  # 16 keys
    env = fake_slurm.env(FAKE_SBATCH_ANSWERS="ok reject")  # arrays of 3: the second is refused
    result = project.djhpc("submit", "MyTable", "-e", "slurm", "--chunk-size", "2", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("Error: sbatch rejected the job (sbatch ")
    assert "Invalid account" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert len(fake_slurm.calls("sbatch")) == 2
    assert fake_slurm.calls("scancel") == ["-Q 9001"]
    assert project.ledger_runs() == 0
    assert not list(project.run_dir.glob("*-run-*"))
    # Nothing holds the keys: a new plan sees all of them.
    again = project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")
    assert again["keys"] == 16 and again["held_by_other_runs"] == 0
