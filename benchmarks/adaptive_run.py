"""One `djhpc submit --wait` of the generated pipeline on the local Slurm, timed from the
tasks' own stamps (shared by P6 and P7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BATCH_STAMP, BIN, Pipeline, read_timings, run_process


def require_slurm() -> None:
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        raise RuntimeError("Slurm is not running: start it with `bash scripts/local-slurm.sh start`")


@dataclass
class Timed:
    """A run as its tasks saw it."""

    code: int
    result: dict[str, Any]
    stderr: str
    wall_s: float  # the whole command
    tasks: list[dict[str, Any]]  # read_timings: one per task process

    @property
    def make_s(self) -> float:
        """make() time of the keys that were made (their sleep and insert)."""
        return sum(e - s for t in self.tasks for s, e in t["makes"])

    @property
    def makespan_s(self) -> float:
        """From the first task's start to the last key's end."""
        first = min(t.get("batch", t["process"]) for t in self.tasks)
        return max(t["makes"][-1][1] for t in self.tasks) - first

    def made(self) -> list[float]:
        """Start stamps of the makes that ended (a key made twice shows twice)."""
        return [s for t in self.tasks for s, _ in t["makes"]]

    def cut_short(self) -> list[tuple[float, float]]:
        """make() calls that began and never ended (stopped by a signal or the time
        limit): (begin, the task's last stamp after it), a bound on the time lost."""
        cut = []
        for t in self.tasks:
            ended = {s for s, _ in t["makes"]}
            stamps = [t.get("exit", 0.0), *(e for _, e in t["makes"]),
                      *(e for _, e in t["reports"]), *t["begins"]]
            for begin in t["begins"]:
                if not any(abs(begin - s) < 1e-6 for s in ended):
                    cut.append((begin, max(stamps)))
        return cut


def submit(pipeline: Pipeline, folder: Path, label: str, flags: list[str],
           env: dict[str, str]) -> Timed:
    timing = folder / f"timing-{label}"
    timing.mkdir(parents=True)
    code, out, err, wall, _ = run_process(
        [str(BIN / "djhpc"), "submit", pipeline.target, "--executor", "slurm", "--profile",
         "local", *flags, "--wait", "--json", "--yes"],
        env={**env, "DJHPC_BENCH_TIMING": str(timing), "DJHPC_SETUP": BATCH_STAMP},
        cwd=folder, timeout=3600)
    time.sleep(1)  # the last tasks' exit stamps
    result = json.loads(out) if out.strip() else {}
    return Timed(code=code, result=result, stderr=err, wall_s=wall, tasks=read_timings(timing))
