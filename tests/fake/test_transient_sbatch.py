"""A busy controller does not lose a submission: sbatch is tried again."""

from __future__ import annotations

from pathlib import Path

from tests.real.conftest import BIN, Project

FAKES = {
    # The first two sbatch calls fail the way a busy controller makes them fail
    # (snakemake-executor-plugin-slurm #313); the third is accepted.
    "sbatch": """#!/bin/sh
echo "$@" >> "$FAKE_LOG/sbatch.calls"
n=$(wc -l < "$FAKE_LOG/sbatch.calls")
if [ "$n" -le 2 ]; then
  echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
  exit 1
fi
echo "Submitted batch job 9100"
""",
    "scancel": """#!/bin/sh
echo "$@" >> "$FAKE_LOG/scancel.calls"
""",
    "scontrol": """#!/bin/sh
echo "MaxArraySize            = 1001"
echo "ClusterName             = fake"
""",
}

REFUSING = {
    **FAKES,
    "sbatch": """#!/bin/sh
echo "$@" >> "$FAKE_LOG/sbatch.calls"
echo "sbatch: error: Batch job submission failed: Resource temporarily unavailable" >&2
exit 1
""",
}


def _fake_slurm(tmp: Path, fakes: dict[str, str]) -> Path:
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir()
    for name, text in fakes.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def test_sbatch_failing_twice_transiently_is_retried_and_the_run_recorded_once(
        project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")  # 8 keys
    fake = _fake_slurm(project.tmp, FAKES)
    env = project.env(PATH=f"{fake}:{BIN}:/usr/bin:/bin", FAKE_LOG=str(project.tmp),
                      DJHPC_SLURM_RETRY_DELAYS="0.2,0.2,0.2")
    result = project.djhpc("submit", "MyTable", "-e", "slurm", "--tasks", "2", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (project.tmp / "sbatch.calls").read_text().splitlines()
    assert len(calls) == 3
    assert "failed transiently" in result.stderr and "Socket timed out" in result.stderr
    assert project.ledger_runs() == 1
    assert not (project.tmp / "scancel.calls").exists()


def test_sbatch_giving_up_names_the_command_and_its_stderr(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")
    fake = _fake_slurm(project.tmp, REFUSING)
    env = project.env(PATH=f"{fake}:{BIN}:/usr/bin:/bin", FAKE_LOG=str(project.tmp),
                      DJHPC_SLURM_RETRY_DELAYS="0.1,0.1")
    result = project.djhpc("submit", "MyTable", "-e", "slurm", "--tasks", "2", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: sbatch rejected the job (sbatch ")
    assert "Resource temporarily unavailable" in last
    assert len((project.tmp / "sbatch.calls").read_text().splitlines()) == 3
    assert project.ledger_runs() == 0
