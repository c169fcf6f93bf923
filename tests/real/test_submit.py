"""`djhpc submit` end to end: real database, real Slurm, the CLI as a user runs it."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import BIN, Project, q

ANALYSED = 640  # units of the 4 analysed animals (5 animals x 4 sessions x 40 units)
OUTSIDE = 160  # units of the fifth animal: never in the key_source


def _keys_outside(project: Project) -> int:
    return int(project.python(
        "import json, my_analysis as m\n"
        "from lab import animal\n"
        "print(len(m.MyTable & (animal.Animal & 'animal_name = 26148')))"))


def test_local_executor_populates_every_key_and_records_failures(project: Project) -> None:
    project.make_data("--empty-units", "3")
    result = project.djhpc("submit", "MyTable", "--executor", "local", "--wait", "--json")
    assert result.returncode == 1, result.stderr  # three keys failed
    out = json.loads(result.stdout)
    assert out["keys"] == ANALYSED and out["executor"] == "local" and out["jobs"] == []
    assert out["chunks"] == 13  # chunk_size 50 from examples/djhpc.yaml
    status = out["status"]
    assert status["state"] == "failed"
    assert status["keys"] == {"total": ANALYSED, "done": ANALYSED - 3, "error": 3,
                              "reserved": 0, "remaining": 3}
    assert project.table_rows() == ANALYSED - 3
    assert _keys_outside(project) == 0

    errors = project.djhpc_json("errors", str(out["run_id"]))
    (group,) = errors["groups"]
    assert group["count"] == 3 and "empty spike train" in group["message"]
    assert len(group["keys"]) == 3 and "ValueError" in group["traceback"]
    assert group["log"].endswith(".err")


@pytest.mark.usefixtures("slurm")
def test_slurm_executor_splits_into_several_arrays(project: Project) -> None:
    project.make_data("--empty-units", "2")
    env = project.env(DJHPC_MAX_ARRAY_SIZE="4")
    result = project.djhpc("submit", "MyTable", "--executor", "slurm", "--chunk-size", "60",
                           "--max-parallel", "8", "--wait", "--json", env=env)
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["chunks"] == 11 and out["arrays"] == 3
    assert len(out["jobs"]) == 3  # three Slurm arrays: 4 + 4 + 3 tasks
    status = out["status"]
    assert status["keys"]["done"] == ANALYSED - 2 and status["keys"]["error"] == 2
    assert sum(status["tasks"].values()) == 11
    # Tasks pull the chunks no task has started: any array's task may have made any chunk.
    assert {c["job"].split("_")[0] for c in status["chunks"]} <= set(out["jobs"])
    assert all(c["host"] for c in status["chunks"])
    assert project.table_rows() == ANALYSED - 2
    assert _keys_outside(project) == 0
    assert status["core_hours"] > 0


@pytest.mark.usefixtures("slurm")
def test_wait_exits_0_when_every_key_is_done(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "10")  # 40 analysed keys
    out = project.djhpc_json("submit", "MyTable", "-e", "slurm", "--tasks", "3", "--wait")
    assert out["status"]["state"] == "done" and out["status"]["finished"]
    assert out["status"]["keys"]["done"] == out["keys"] == 40

    again = project.djhpc("submit", "MyTable", "-e", "slurm", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["run_id"] is None  # nothing to do, nothing recorded
    assert project.ledger_runs() == 1
    listing = project.djhpc_json("status")
    assert [r["state"] for r in listing["runs"]] == ["done"]
    assert "chunks" not in listing["runs"][0]


def test_dry_run_writes_nothing(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "10")
    out = project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")
    assert out["run_id"] is None and out["keys"] == 40 and out["chunks"] == 1
    assert project.ledger_runs() == 0
    assert project.table_rows() == 0
    text = project.djhpc("submit", "MyTable", "-e", "slurm", "--dry-run", "-r", "unit_id < 5")  # units 1-4
    assert text.returncode == 0, text.stderr
    assert "16 pending keys" in text.stdout and "#SBATCH" in text.stdout
    assert project.ledger_runs() == 0


def test_restrictions_and_the_four_target_forms(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "10")
    for target in ("MyTable", "my_analysis.MyTable", "my_analysis:MyTable",
                   "./my_analysis.py:MyTable"):
        out = project.djhpc_json("submit", target, "-e", "local", "--dry-run",
                                 "-r", "unit_id < 4", "-r", "animal_name = 26230")
        assert out["keys"] == 3, target  # units 1-3 of one animal
    out = project.djhpc_json("submit", "MyTable", "-e", "debug", "-r", "unit_id < 4", "--wait")
    assert out["status"]["keys"]["done"] == 12
    assert project.table_rows() == 12


def test_keys_held_by_an_active_run_are_left_out(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "10")
    env = project.env(EXAMPLE_MAKE_SECONDS="3")
    first = project.djhpc_json("submit", "MyTable", "-e", "local", "-r", "unit_id < 5",
                               "--max-parallel", "1", env=env)
    second = project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")
    # 16 keys are held, less the few the first run (one key in 3 s) made meanwhile:
    # those are no longer pending at all.
    held = second["held_by_other_runs"]
    assert second["keys"] == 24 and 8 <= held <= 16
    assert held + project.table_rows() >= 16
    project.djhpc("cancel", str(first["run_id"]))


def test_rejected_restriction_is_exit_2_and_records_nothing(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "2")
    result = project.djhpc("submit", "MyTable", "-e", "local", "-r", "unit_idd < 3")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and "unit_idd" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert project.ledger_runs() == 0


def test_two_submits_at_once_split_the_keys(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "6")  # 24 keys
    # As in the test below: DataJoint 2.x can race on the fresh schemas' lineage when
    # two processes import them first at once; a dry run (it writes nothing) settles it.
    project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")
    env = project.env(EXAMPLE_MAKE_SECONDS="0.2")
    command = [str(BIN / "djhpc"), "submit", "MyTable", "-e", "local", "--wait", "--json"]
    both = [subprocess.Popen(command, cwd=project.workdir, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0] or "null") for p in both]
    runs = [o for o in outs if o and o["run_id"] is not None]
    assert sum(o["keys"] for o in runs) == 24  # every key planned once, by one of them
    assert all(o["status"]["keys"]["error"] == 0 for o in runs)
    assert project.table_rows() == 24


def test_four_first_submits_at_once_on_a_fresh_ledger(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "6")  # 24 keys; no ledger yet
    # A dry run writes nothing: the ledger stays fresh. It lets DataJoint 2.x settle
    # the new schemas' lineage first, which concurrent first imports can race on.
    assert project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")["keys"] == 24
    assert project.ledger_runs() == 0
    command = [str(BIN / "djhpc"), "submit", "MyTable", "-e", "local", "--json"]
    four = [subprocess.Popen(command, cwd=project.workdir, env=project.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    results = [(p.communicate(timeout=300), p.returncode) for p in four]
    for (_, err), code in results:
        assert code == 0, err  # creating the ledger and the keys table raced before
    planned = [json.loads(out) for (out, _), _ in results]
    assert sum(o["keys"] for o in planned) == 24
    for o in planned:
        if o["run_id"] is not None:
            project.djhpc("cancel", str(o["run_id"]))


def test_held_keys_are_released_when_their_chunks_end(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "4")  # 16 keys
    env = project.env(EXAMPLE_MAKE_SECONDS="30")
    first = project.djhpc_json("submit", "MyTable", "-e", "local", "-r", "unit_id < 4",
                               "--max-parallel", "1", env=env)  # 12 keys, held
    assert project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")[
        "held_by_other_runs"] == 12
    # A keys table of an older djhpc has no held flag: planning falls back to the
    # chunks, and the next submit adds the flag with the right values.
    (keys_table,) = project.sql(f"SELECT keys_table FROM {q(project.ledger)}.{q('run')}")[0]
    project.sql(f"ALTER TABLE {q(project.ledger)}.{q(keys_table)} DROP COLUMN djhpc_held")
    assert project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")[
        "held_by_other_runs"] == 12
    second = project.djhpc_json("submit", "MyTable", "-e", "local", "--max-parallel", "1",
                                env=env)
    assert (second["keys"], second["held_by_other_runs"]) == (4, 12)
    for run in (first, second):
        project.djhpc("cancel", str(run["run_id"]))
    # Cancelled: nothing is held any more, every key can be planned again.
    after = project.djhpc_json("submit", "MyTable", "-e", "local", "--dry-run")
    assert after["held_by_other_runs"] == 0 and after["keys"] == 16 - project.table_rows()
