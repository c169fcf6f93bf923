"""A busy controller does not lose a submission: sbatch is tried again."""

from __future__ import annotations

from tests.fake.conftest import FakeSlurm
from tests.real.conftest import Project


def test_sbatch_failing_twice_transiently_is_retried_and_the_run_recorded_once(
        project: Project, fake_slurm: FakeSlurm) -> None:
    project.make_data("--sessions", "1", "--units", "2")  # 8 keys
    # Twice the way a busy controller fails (snakemake-executor-plugin-slurm #313), then taken.
    env = fake_slurm.env(FAKE_SBATCH_ANSWERS="busy busy ok",
                         DJHPC_SLURM_RETRY_DELAYS="0.2,0.2,0.2")
    result = project.djhpc("submit", "MyTable", "-e", "slurm", "--tasks", "2", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake_slurm.calls("sbatch")) == 4  # the array three times, then its follow-up
    assert "failed transiently" in result.stderr and "Socket timed out" in result.stderr
    assert project.ledger_runs() == 1
    assert fake_slurm.calls("scancel") == []


def test_sbatch_giving_up_names_the_command_and_its_stderr(
        project: Project, fake_slurm: FakeSlurm) -> None:
    project.make_data("--sessions", "1", "--units", "2")
    env = fake_slurm.env(FAKE_SBATCH_ANSWERS="busy", DJHPC_SLURM_RETRY_DELAYS="0.1,0.1")
    result = project.djhpc("submit", "MyTable", "-e", "slurm", "--tasks", "2", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: sbatch rejected the job (sbatch ")
    assert "Socket timed out" in last
    assert len(fake_slurm.calls("sbatch")) == 3  # gave up: no follow-up for a run not made
    assert project.ledger_runs() == 0
